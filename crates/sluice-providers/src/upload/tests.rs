use super::*;
use http_body_util::BodyExt;
use sluice_types::multipart::{self, Event, Multipart};

fn spool(name: &str, bytes: &[u8]) -> SpooledFile {
    let path = std::env::temp_dir().join(format!(
        "sluice-upload-test-{}-{name}",
        sluice_core::rng::next_u64()
    ));
    std::fs::write(&path, bytes).unwrap();
    SpooledFile {
        field: "file".into(),
        filename: format!("{name}\"x.wav"),
        content_type: Some("audio/wav".into()),
        path,
        len: bytes.len() as u64,
    }
}

#[tokio::test]
async fn the_upstream_body_is_a_multipart_form_of_the_fields_and_the_spooled_file() {
    let audio: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let upload = Upload {
        model: "alias".into(),
        fields: vec![("response_format".into(), "srt".into())],
        files: vec![spool("a", &audio)],
        live: None,
    };
    let (content_type, body) = upload.body("whisper-1").unwrap();
    let announced = body.size_hint().exact().unwrap();
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(bytes.len() as u64, announced);
    let boundary = multipart::boundary(&content_type).unwrap();
    let mut m = Multipart::new(&boundary, 8);
    m.push(&bytes);
    let mut parts: Vec<(String, Option<String>, Vec<u8>)> = Vec::new();
    while let Some(e) = m.next_event().unwrap() {
        match e {
            Event::Part(h) => parts.push((h.name, h.filename, Vec::new())),
            Event::Data(d) => parts.last_mut().unwrap().2.extend_from_slice(&d),
            Event::PartEnd | Event::End => {}
        }
    }
    m.finish().unwrap();
    assert_eq!(parts[0], ("model".into(), None, b"whisper-1".to_vec()));
    assert_eq!(parts[1], ("response_format".into(), None, b"srt".to_vec()));
    assert_eq!(parts[2].1.as_deref(), Some("a%22x.wav"));
    assert_eq!(parts[2].2, audio);
    // The spool goes with the upload.
    let path = upload.files[0].path.clone();
    drop(upload);
    assert!(!path.exists());
}

#[tokio::test]
async fn a_spool_cut_short_is_an_error_not_a_short_body() {
    let upload = Upload {
        model: "m".into(),
        fields: vec![],
        files: vec![spool("b", b"0123456789")],
        live: None,
    };
    let (_, body) = upload.body("m").unwrap();
    std::fs::write(&upload.files[0].path, b"0123").unwrap();
    assert!(body.collect().await.is_err());
}

/// The parts of a multipart body: name, file name and bytes.
fn parts_of(content_type: &str, bytes: &[u8]) -> Vec<(String, Option<String>, Vec<u8>)> {
    let boundary = multipart::boundary(content_type).unwrap();
    let mut m = Multipart::new(&boundary, 8);
    m.push(bytes);
    let mut parts: Vec<(String, Option<String>, Vec<u8>)> = Vec::new();
    while let Some(e) = m.next_event().unwrap() {
        match e {
            Event::Part(h) => parts.push((h.name, h.filename, Vec::new())),
            Event::Data(d) => parts.last_mut().unwrap().2.extend_from_slice(&d),
            Event::PartEnd | Event::End => {}
        }
    }
    m.finish().unwrap();
    parts
}

/// Appends `bytes` to a spool and tells the feed, as the server's reader does.
fn append(feed: &Feed, path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    feed.grew(bytes.len() as u64);
}

#[tokio::test]
async fn a_body_made_before_the_upload_ends_follows_the_spool_to_its_end() {
    let audio: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let first = spool("c", &audio[..1000]);
    let path = first.path.clone();
    let (feed, growing) = Feed::start(vec![("language".into(), "en".into())], first);
    let upload = Upload {
        model: "alias".into(),
        fields: vec![("language".into(), "en".into())],
        live: Some(growing),
        ..Upload::default()
    };
    let (content_type, body) = upload.body("whisper-1").unwrap();
    assert_eq!(
        body.size_hint().exact(),
        None,
        "sent chunked: its length is not known yet"
    );
    let collecting = tokio::spawn(body.collect());
    for piece in audio[1000..].chunks(70_000) {
        tokio::task::yield_now().await;
        append(&feed, &path, piece);
    }
    assert_eq!(feed.end_file(), audio.len() as u64);
    feed.field("prompt".into(), "after the file".into());
    feed.whole();
    let bytes = collecting.await.unwrap().unwrap().to_bytes();
    let parts = parts_of(&content_type, &bytes);
    assert_eq!(parts[0], ("model".into(), None, b"whisper-1".to_vec()));
    assert_eq!(parts[1], ("language".into(), None, b"en".to_vec()));
    assert_eq!(parts[2].1.as_deref(), Some("c%22x.wav"));
    assert_eq!(parts[2].2, audio);
    assert_eq!(
        parts[3],
        ("prompt".into(), None, b"after the file".to_vec())
    );
    // A body made once it has ended has its length, and the same parts.
    let (content_type, body) = upload.body("whisper-1").unwrap();
    let announced = body.size_hint().exact().unwrap();
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(bytes.len() as u64, announced);
    assert_eq!(parts_of(&content_type, &bytes)[2].2, audio);
    drop(upload);
    assert!(!path.exists(), "the spool goes with the upload");
}

#[tokio::test]
async fn a_body_following_an_upload_that_fails_or_is_dropped_errors() {
    for fail in [true, false] {
        let first = spool("d", b"0123");
        let (feed, growing) = Feed::start(vec![], first);
        let upload = Upload {
            model: "m".into(),
            live: Some(growing),
            ..Upload::default()
        };
        let (_, body) = upload.body("m").unwrap();
        let collecting = tokio::spawn(body.collect());
        tokio::task::yield_now().await;
        match fail {
            true => feed.fail("the client went away".into()),
            false => drop(feed),
        }
        let result = collecting.await.unwrap();
        assert!(result.is_err(), "never a body that ends short");
        assert!(upload.body("m").is_err(), "no new try of a failed upload");
    }
}
