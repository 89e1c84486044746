use super::*;

const B: &str = "----sluiceBoundary7MA4YWxk";

fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, data) in parts {
        out.extend_from_slice(format!("--{B}\r\n").as_bytes());
        match filename {
            Some(f) => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
            ),
            None => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
    out
}

/// Reads `bytes` fed in chunks of `chunk`: each part's head and whole body.
fn read(bytes: &[u8], chunk: usize) -> Result<Vec<(PartHead, Vec<u8>)>, MultipartError> {
    let mut m = Multipart::new(B, 16);
    let mut parts: Vec<(PartHead, Vec<u8>)> = Vec::new();
    let mut ended = false;
    for piece in bytes.chunks(chunk.max(1)) {
        m.push(piece);
        while let Some(e) = m.next_event()? {
            match e {
                Event::Part(h) => parts.push((h, Vec::new())),
                Event::Data(d) => parts.last_mut().expect("a part").1.extend_from_slice(&d),
                Event::PartEnd => {}
                Event::End => ended = true,
            }
        }
    }
    m.finish()?;
    assert!(ended);
    Ok(parts)
}

#[test]
fn reads_fields_and_a_file_split_anywhere() {
    // Bytes that look like the start of a boundary inside the file.
    let mut file = b"RIFF\r\n--\r\n----sluice\r\r\n-".to_vec();
    file.extend((0..3000u32).map(|i| (i * 7 % 251) as u8));
    file.extend_from_slice(b"\r\n--");
    let bytes = body(&[
        ("model", None, b"whisper-1"),
        ("file", Some("speech.wav"), &file),
        ("response_format", None, b"verbose_json"),
    ]);
    for chunk in [1, 2, 3, 5, 17, 64, 1000, bytes.len()] {
        let parts = read(&bytes, chunk).unwrap();
        assert_eq!(parts.len(), 3, "chunk {chunk}");
        assert_eq!(parts[0].0.name, "model");
        assert_eq!(parts[0].1, b"whisper-1");
        assert_eq!(parts[1].0.filename.as_deref(), Some("speech.wav"));
        assert_eq!(parts[1].0.content_type.as_deref(), Some("audio/wav"));
        assert_eq!(parts[1].1, file, "chunk {chunk}");
        assert_eq!(parts[2].1, b"verbose_json");
    }
}

#[test]
fn memory_stays_one_frame_plus_the_boundary() {
    let mut m = Multipart::new(B, 4);
    m.push(
        format!("--{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n")
            .as_bytes(),
    );
    assert!(matches!(m.next_event().unwrap(), Some(Event::Part(_))));
    let frame = vec![b'x'; 64 * 1024];
    for _ in 0..100 {
        m.push(&frame);
        while let Some(Event::Data(_)) = m.next_event().unwrap() {}
        assert!(m.buf.len() < B.len() + 8, "held {}", m.buf.len());
    }
}

#[test]
fn preamble_epilogue_padding_and_empty_parts() {
    let mut bytes = b"a preamble to ignore\r\n".to_vec();
    bytes.extend(body(&[("purpose", None, b""), ("n", None, b"2")]));
    bytes.extend_from_slice(b"an epilogue");
    let parts = read(&bytes, 7).unwrap();
    assert_eq!(parts[0].1, b"");
    assert_eq!(parts[1].1, b"2");
    let padded = format!("--{B}  \r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--{B}--");
    let parts = read(padded.as_bytes(), 3).unwrap();
    assert_eq!(parts[0].0.name, "x");
}

#[test]
fn quoted_and_extended_file_names() {
    let raw = format!(
        "--{B}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\";c.mp3\"\r\n\r\nx\r\n--{B}\r\nContent-Disposition: form-data; name=\"f2\"; filename=\"plain.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt\r\n\r\ny\r\n--{B}--"
    );
    let parts = read(raw.as_bytes(), 5).unwrap();
    assert_eq!(parts[0].0.filename.as_deref(), Some("a \"b\";c.mp3"));
    assert_eq!(parts[1].0.filename.as_deref(), Some("été.txt"));
}

#[test]
fn boundary_from_the_content_type() {
    assert_eq!(
        boundary("multipart/form-data; boundary=abc").unwrap(),
        "abc"
    );
    assert_eq!(
        boundary("Multipart/Form-Data; charset=utf-8; boundary=\"a b\"").unwrap(),
        "a b"
    );
    assert!(boundary("application/json").is_err());
    assert!(boundary("multipart/form-data").is_err());
    assert!(boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))).is_err());
}

#[test]
fn bad_bodies_are_errors_never_panics() {
    let good = body(&[("model", None, b"m"), ("file", Some("a"), b"data")]);
    // Cut anywhere: an error at finish (or earlier), never a panic.
    for cut in 0..good.len() - 2 {
        assert!(read(&good[..cut], 3).is_err(), "cut at {cut}");
    }
    let no_disposition = format!("--{B}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{B}--");
    assert!(read(no_disposition.as_bytes(), 4).is_err());
    let no_name = format!("--{B}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{B}--");
    assert!(read(no_name.as_bytes(), 4).is_err());
    let no_headers = format!("--{B}\r\n\r\nx\r\n--{B}--");
    assert!(read(no_headers.as_bytes(), 4).is_err());
    let junk = vec![b'z'; MAX_HEADER_BYTES * 2];
    assert!(read(&junk, 1024).is_err());
    let huge_head = format!("--{B}\r\nX: {}\r\n", "h".repeat(MAX_HEADER_BYTES));
    assert!(read(huge_head.as_bytes(), 999).is_err());
    // Arbitrary bytes, deterministic pseudo-random.
    let mut x = 0x9e37_79b9_u32;
    for len in 0..400 {
        let mut bytes = good.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % bytes.len();
            bytes[i] = (x >> 8) as u8;
        }
        bytes.truncate(bytes.len().min(len + 10));
        let _ = read(&bytes, 1 + len % 9);
    }
}

#[test]
fn too_many_parts() {
    let many: Vec<(&str, Option<&str>, &[u8])> = (0..17).map(|_| ("f", None, &b"1"[..])).collect();
    let err = read(&body(&many), 50).unwrap_err();
    assert!(err.0.contains("more than 16 parts"), "{err}");
}
