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
    };
    let (_, body) = upload.body("m").unwrap();
    std::fs::write(&upload.files[0].path, b"0123").unwrap();
    assert!(body.collect().await.is_err());
}
