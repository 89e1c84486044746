//! Minimal files of each format, built here from the formats' specifications, and their
//! lengths read back.

use super::{audio_ms, last_cue_end_ms};
use std::io::Cursor;

fn ms(bytes: Vec<u8>) -> Option<u64> {
    audio_ms(&mut Cursor::new(bytes))
}

fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut c = id.to_vec();
    c.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    c.extend_from_slice(body);
    if body.len() % 2 == 1 {
        c.push(0);
    }
    c
}

/// A PCM WAV: `rate` Hz, mono, 16-bit, `seconds` long; an odd-sized chunk before `fmt `.
fn wav(rate: u32, seconds: u32, data_size: Option<u32>) -> Vec<u8> {
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&1u16.to_le_bytes()); // PCM
    fmt.extend_from_slice(&1u16.to_le_bytes()); // channels
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate * 2).to_le_bytes()); // byte rate
    fmt.extend_from_slice(&2u16.to_le_bytes()); // block align
    fmt.extend_from_slice(&16u16.to_le_bytes()); // bits
    let mut body = b"WAVE".to_vec();
    body.extend(chunk(b"LIST", b"INFOx"));
    body.extend(chunk(b"fmt ", &fmt));
    let samples = vec![0u8; (rate * 2 * seconds) as usize];
    let mut data = chunk(b"data", &samples);
    if let Some(size) = data_size {
        data[4..8].copy_from_slice(&size.to_le_bytes());
    }
    body.extend(data);
    let mut f = b"RIFF".to_vec();
    f.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    f.extend(body);
    f
}

#[test]
fn wav_reads_its_data_size_over_its_byte_rate() {
    assert_eq!(ms(wav(8_000, 2, None)), Some(2_000));
    // A streaming recorder's sizes: the bytes to the end count.
    assert_eq!(ms(wav(8_000, 3, Some(u32::MAX))), Some(3_000));
    assert_eq!(ms(wav(16_000, 1, Some(0))), Some(1_000));
    // A forged byte-rate field does not shorten it: the rate comes from rate × block size.
    let mut forged = wav(8_000, 2, None);
    let at = forged.windows(4).position(|w| w == b"fmt ").unwrap() + 16;
    forged[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(ms(forged), Some(2_000));
}

/// A FLAC stream: `fLaC` and its STREAMINFO block (no frames needed).
fn flac(rate: u64, total_samples: u64) -> Vec<u8> {
    let mut f = b"fLaC".to_vec();
    f.extend_from_slice(&[0x80, 0, 0, 34]); // last block, STREAMINFO, 34 bytes
    f.extend_from_slice(&4096u16.to_be_bytes());
    f.extend_from_slice(&4096u16.to_be_bytes());
    f.extend_from_slice(&[0; 6]); // frame sizes unknown
    let packed = (rate << 44) | (1 << 41) | (15 << 36) | total_samples; // stereo, 16-bit
    f.extend_from_slice(&packed.to_be_bytes());
    f.extend_from_slice(&[0; 16]); // MD5
    f
}

#[test]
fn flac_reads_streaminfo() {
    assert_eq!(ms(flac(44_100, 44_100 * 3)), Some(3_000));
    assert_eq!(ms(flac(48_000, 24_000)), Some(500));
    // Total samples unknown.
    assert_eq!(ms(flac(44_100, 0)), None);
}

/// MPEG-1 layer III, 128 kb/s, 44.1 kHz, stereo, no padding: 417 bytes a frame.
const MPEG1_L3: [u8; 4] = [0xFF, 0xFB, 0x90, 0x00];
/// MPEG-2 layer III, 64 kb/s, 22.05 kHz, stereo: 208 bytes a frame, 576 samples.
const MPEG2_L3: [u8; 4] = [0xFF, 0xF3, 0x80, 0x00];

fn frames(header: [u8; 4], len: usize, n: usize) -> Vec<u8> {
    let mut frame = header.to_vec();
    frame.resize(len, 0);
    frame.repeat(n)
}

fn id3v2(body_len: usize) -> Vec<u8> {
    let mut t = b"ID3\x04\x00\x00".to_vec();
    let n = u32::try_from(body_len).unwrap();
    t.extend([
        (n >> 21) as u8 & 0x7F,
        (n >> 14) as u8 & 0x7F,
        (n >> 7) as u8 & 0x7F,
        n as u8 & 0x7F,
    ]);
    t.extend(vec![0u8; body_len]);
    t
}

#[test]
fn mp3_without_a_header_has_its_frames_counted() {
    let mut f = id3v2(300);
    f.extend(frames(MPEG1_L3, 417, 100));
    f.extend_from_slice(b"TAG"); // an ID3v1 tag ends the frames
    f.extend(vec![0u8; 125]);
    // 100 frames of 1,152 samples at 44.1 kHz.
    assert_eq!(ms(f), Some(100 * 1152 * 1000 / 44_100));
    assert_eq!(
        ms(frames(MPEG2_L3, 208, 50)),
        Some(50 * 576 * 1000 / 22_050)
    );
}

#[test]
fn mp3_reads_the_frame_count_of_its_xing_or_vbri_header() {
    let mut xing = frames(MPEG1_L3, 417, 3);
    // After the header and 32 bytes of side information (MPEG-1 stereo).
    xing[36..40].copy_from_slice(b"Xing");
    xing[40..44].copy_from_slice(&1u32.to_be_bytes()); // frames field present
    xing[44..48].copy_from_slice(&1000u32.to_be_bytes());
    assert_eq!(ms(xing.clone()), Some(1000 * 1152 * 1000 / 44_100));
    xing[36..40].copy_from_slice(b"Info");
    assert_eq!(ms(xing), Some(1000 * 1152 * 1000 / 44_100));
    let mut vbri = frames(MPEG1_L3, 417, 3);
    vbri[36..40].copy_from_slice(b"VBRI");
    vbri[50..54].copy_from_slice(&500u32.to_be_bytes());
    assert_eq!(ms(vbri), Some(500 * 1152 * 1000 / 44_100));
}

/// An Ogg page of stream `serial` holding one packet.
fn ogg_page(serial: u32, granule: u64, kind: u8, packet: &[u8]) -> Vec<u8> {
    let mut p = b"OggS\x00".to_vec();
    p.push(kind);
    p.extend_from_slice(&granule.to_le_bytes());
    p.extend_from_slice(&serial.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes()); // sequence
    p.extend_from_slice(&0u32.to_le_bytes()); // CRC (not checked)
    p.push(1);
    p.push(u8::try_from(packet.len()).unwrap());
    p.extend_from_slice(packet);
    p
}

#[test]
fn ogg_vorbis_reads_its_last_granule_over_its_rate() {
    let mut id = b"\x01vorbis".to_vec();
    id.extend_from_slice(&0u32.to_le_bytes());
    id.push(1);
    id.extend_from_slice(&44_100u32.to_le_bytes());
    id.extend_from_slice(&[0; 12]); // bit rates
    id.extend_from_slice(&[0xB8, 0x01]); // block sizes, framing
    let mut f = ogg_page(7, 0, 2, &id);
    f.extend(ogg_page(7, 44_100, 0, &[1; 200]));
    f.extend(ogg_page(7, 88_200, 4, &[1; 200]));
    // Another stream's later page, and a page that ends no packet: neither counts.
    f.extend(ogg_page(9, 999_999, 4, &[1; 10]));
    f.extend(ogg_page(7, u64::MAX, 0, &[1; 10]));
    assert_eq!(ms(f), Some(2_000));
}

#[test]
fn ogg_opus_counts_at_48_khz_less_its_pre_skip() {
    let mut head = b"OpusHead\x01\x02".to_vec();
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&16_000u32.to_le_bytes()); // the input's rate, not the granule's
    head.extend_from_slice(&[0, 0, 0]);
    let mut f = ogg_page(3, 0, 2, &head);
    f.extend(ogg_page(3, 48_000 * 3 + 312, 4, &[1; 100]));
    assert_eq!(ms(f), Some(3_000));
}

fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = u32::try_from(body.len() + 8)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

#[test]
fn mp4_reads_mvhd_after_the_media_data() {
    let mut mvhd = vec![0u8; 4 + 8]; // version 0, flags, creation and modification times
    mvhd.extend_from_slice(&1000u32.to_be_bytes());
    mvhd.extend_from_slice(&4500u32.to_be_bytes());
    mvhd.resize(100, 0);
    let mut f = mp4_box(b"ftyp", b"M4A \0\0\0\0");
    f.extend(mp4_box(b"mdat", &[7; 300]));
    f.extend(mp4_box(
        b"moov",
        &[mp4_box(b"free", &[0; 5]), mp4_box(b"mvhd", &mvhd)].concat(),
    ));
    assert_eq!(ms(f), Some(4_500));
}

#[test]
fn mp4_reads_64_bit_sizes_and_a_version_1_mvhd() {
    let mut mvhd = vec![1u8, 0, 0, 0];
    mvhd.extend_from_slice(&[0; 16]); // 64-bit creation and modification times
    mvhd.extend_from_slice(&44_100u32.to_be_bytes());
    mvhd.extend_from_slice(&(44_100u64 * 5).to_be_bytes());
    mvhd.resize(112, 0);
    let mut f = mp4_box(b"ftyp", b"isom\0\0\0\0");
    let mut mdat = 1u32.to_be_bytes().to_vec(); // size in the 64 bits after the type
    mdat.extend_from_slice(b"mdat");
    mdat.extend_from_slice(&(16u64 + 50).to_be_bytes());
    mdat.extend_from_slice(&[0; 50]);
    f.extend(mdat);
    f.extend(mp4_box(b"moov", &mp4_box(b"mvhd", &mvhd)));
    assert_eq!(ms(f), Some(5_000));
}

/// An EBML element with a one-byte size.
fn ebml(id: &[u8], body: &[u8]) -> Vec<u8> {
    let mut e = id.to_vec();
    e.push(0x80 | u8::try_from(body.len()).unwrap());
    e.extend_from_slice(body);
    e
}

fn webm(info: &[u8]) -> Vec<u8> {
    let mut f = ebml(&[0x1A, 0x45, 0xDF, 0xA3], &ebml(&[0x42, 0x82], b"webm"));
    // A Segment of unknown size (a live recording's), a SeekHead, then Info, then a Cluster.
    f.extend_from_slice(&[
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    f.extend(ebml(&[0x11, 0x4D, 0x9B, 0x74], &[0; 6]));
    f.extend(ebml(&[0x15, 0x49, 0xA9, 0x66], info));
    f.extend(ebml(&[0x1F, 0x43, 0xB6, 0x75], &[0; 20]));
    f
}

#[test]
fn webm_reads_info_duration_times_its_timecode_scale() {
    let info = [
        ebml(&[0x2A, 0xD7, 0xB1], &[0x0F, 0x42, 0x40]), // 1 ms a tick
        ebml(&[0x44, 0x89], &6500.0f64.to_bits().to_be_bytes()),
    ]
    .concat();
    assert_eq!(ms(webm(&info)), Some(6_500));
    // A 4-byte float, and 10 ms a tick.
    let info = [
        ebml(&[0x2A, 0xD7, 0xB1], &[0x98, 0x96, 0x80]),
        ebml(&[0x44, 0x89], &250.5f32.to_bits().to_be_bytes()),
    ]
    .concat();
    assert_eq!(ms(webm(&info)), Some(2_505));
    // No Duration (a live recording never finished): unknown.
    assert_eq!(
        ms(webm(&ebml(&[0x2A, 0xD7, 0xB1], &[0x0F, 0x42, 0x40]))),
        None
    );
}

#[test]
fn what_is_not_audio_or_is_cut_short_has_no_length() {
    assert_eq!(ms(b"hello, not audio at all".to_vec()), None);
    assert_eq!(ms(Vec::new()), None);
    for whole in [
        wav(8_000, 1, None),
        flac(44_100, 44_100),
        frames(MPEG1_L3, 417, 2),
        webm(&ebml(&[0x44, 0x89], &1.0f64.to_bits().to_be_bytes())),
    ] {
        for cut in [4, 11, 20, 40] {
            // Never a panic; a length or none.
            let _ = ms(whole[..cut.min(whole.len())].to_vec());
        }
    }
}

#[test]
fn cues_end_where_the_last_one_does() {
    let srt =
        "1\n00:00:00,000 --> 00:00:02,500\nHello.\n\n2\n00:00:02,500 --> 00:01:03,040\nBye.\n";
    assert_eq!(last_cue_end_ms(srt.as_bytes()), Some(63_040));
    let vtt = "WEBVTT\n\n00:00.000 --> 00:04.250 align:start\nHi.\n\n01:00:00.000 --> 01:00:01.001\nLate.\n";
    assert_eq!(last_cue_end_ms(vtt.as_bytes()), Some(3_601_001));
    assert_eq!(last_cue_end_ms(b"just text, no cues"), None);
    assert_eq!(last_cue_end_ms(b"00:00:00,000 --> 99:99"), None);
}

#[test]
fn hostile_sizes_and_counts_neither_overflow_nor_mislead() {
    // MP4: a 64-bit box size that runs past u64::MAX, as the box sought and as one skipped.
    let mut huge = 1u32.to_be_bytes().to_vec();
    huge.extend_from_slice(b"moov");
    huge.extend_from_slice(&(u64::MAX - 4).to_be_bytes());
    let mut f = mp4_box(b"ftyp", b"M4A \0\0\0\0");
    f.extend_from_slice(&huge);
    assert_eq!(ms(f.clone()), None);
    f[20..24].copy_from_slice(b"mdat");
    assert_eq!(ms(f), None);
    // A version 1 mvhd with the largest duration reads as such (the gateway caps it).
    let mut mvhd = vec![1u8, 0, 0, 0];
    mvhd.extend_from_slice(&[0; 16]);
    mvhd.extend_from_slice(&1000u32.to_be_bytes());
    mvhd.extend_from_slice(&u64::MAX.to_be_bytes());
    mvhd.resize(112, 0);
    let mut f = mp4_box(b"ftyp", b"M4A \0\0\0\0");
    f.extend(mp4_box(b"moov", &mp4_box(b"mvhd", &mvhd)));
    assert_eq!(ms(f), Some(u64::MAX));
    // WebM: a Duration past what a u64 holds is no length, not u64::MAX.
    let info = ebml(&[0x44, 0x89], &1e30f64.to_bits().to_be_bytes());
    assert_eq!(ms(webm(&info)), None);
    // A cue hour whose milliseconds overflow is no cue.
    let cue = format!("00:00:00,000 --> {}:00:00,000\n", u64::MAX / 1000);
    assert_eq!(last_cue_end_ms(cue.as_bytes()), None);
    assert_eq!(
        last_cue_end_ms(b"00:00:00,000 --> 5:00:00,000\n"),
        Some(18_000_000)
    );
}

#[test]
fn mp3_with_a_zero_frame_count_has_its_frames_counted() {
    let mut f = frames(MPEG1_L3, 417, 10);
    // A Xing header after the side info (32 bytes), its frame count flagged but 0.
    f[36..40].copy_from_slice(b"Xing");
    f[40..44].copy_from_slice(&1u32.to_be_bytes());
    f[44..48].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(ms(f), Some(10 * 1152 * 1000 / 44_100));
}

#[test]
fn mp3_frames_after_junk_padding_or_a_tag_between_them_are_counted() {
    let mut f = frames(MPEG1_L3, 417, 40);
    // Zero padding, then junk holding a lone frame header (its next frame is not where its
    // length says, so it is not one).
    f.extend(vec![0u8; 37]);
    f.extend_from_slice(&MPEG1_L3);
    f.extend(vec![0x55u8; 90]);
    f.extend(frames(MPEG1_L3, 417, 30));
    // An ID3v2 tag in the middle (a stream's metadata repeated), its body holding bytes
    // that read as a header.
    let mut tag = id3v2(600);
    tag[50..54].copy_from_slice(&MPEG1_L3);
    f.extend(tag);
    f.extend(frames(MPEG1_L3, 417, 30));
    // Junk, then the last frame, which ends the file.
    f.extend_from_slice(b"junk");
    f.extend(frames(MPEG1_L3, 417, 1));
    assert_eq!(ms(f.clone()), Some(101 * 1152 * 1000 / 44_100));
    // An ID3v1 tag at the end is not a frame either.
    f.extend_from_slice(b"TAG");
    f.extend(vec![0u8; 125]);
    assert_eq!(ms(f), Some(101 * 1152 * 1000 / 44_100));
}

#[test]
fn fewer_than_three_frames_in_a_row_is_not_mp3() {
    // One or two frames, or a header-looking pair of bytes in a file of another kind: no
    // length (the gateway then prices what it cannot measure as it does for any unknown
    // file), not the length of a frame or two.
    assert_eq!(ms(frames(MPEG1_L3, 417, 1)), None);
    assert_eq!(ms(frames(MPEG1_L3, 417, 2)), None);
    let mut text = b"plain text, then bytes that read as a header: ".to_vec();
    text.extend(frames(MPEG1_L3, 417, 2));
    text.extend_from_slice(b" and more text");
    assert_eq!(ms(text), None);
    // Frames of two streams (the sample rates differ) are not three in a row: the file
    // counts from where three of one stream start.
    let mut mixed = frames(MPEG1_L3, 417, 2);
    mixed.extend(frames(MPEG2_L3, 208, 5));
    assert_eq!(ms(mixed), Some(5 * 576 * 1000 / 22_050));
    assert_eq!(ms(frames(MPEG1_L3, 417, 3)), Some(3 * 1152 * 1000 / 44_100));
}

/// Counts the seeks of a reader.
struct Seeks {
    inner: Cursor<Vec<u8>>,
    seeks: usize,
}

impl std::io::Read for Seeks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl std::io::Seek for Seeks {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.seeks += 1;
        self.inner.seek(pos)
    }
}

#[test]
fn a_file_full_of_false_frame_headers_costs_no_seek_per_header() {
    // Three frames, then 2 MB of a header whose frame length (417) puts the next header
    // off the 4-byte pattern: every position is a candidate, none is a frame.
    let mut f = frames(MPEG1_L3, 417, 3);
    f.extend(MPEG1_L3.repeat(512 * 1024));
    let mut r = Seeks {
        inner: Cursor::new(f),
        seeks: 0,
    };
    let _ = audio_ms(&mut r);
    // A few per 64 KiB window (the candidates whose next header lies past the window's
    // end), not one per candidate: 524,225 before.
    assert!(r.seeks < 10_000, "{} seeks", r.seeks);
}
