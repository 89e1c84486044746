//! The media endpoints (issue 16) over real loopback HTTP, against the fake upstream's
//! documented wire formats: speech piped as it arrives, multipart uploads spooled and
//! streamed upstream, images, rerank and moderation passed through; priced by character,
//! audio second and image; routes falling back past providers without the endpoint.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use sluice_testkit::client::post_json;
use sluice_testkit::media::{checksum, fake_audio};
use sluice_testkit::{Behavior, FakeUpstream};

const BOUNDARY: &str = "test-boundary-b6f1";

/// A multipart body: text fields, then a file part.
fn form(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    if let Some((field, filename, data)) = file {
        out.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

async fn post_form(gw: &Gateway, path: &str, body: Vec<u8>) -> sluice_testkit::TestResponse {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    post_json(&gw.url(path), body, &[("content-type", ct.as_str())])
        .await
        .unwrap()
}

/// Models on the fake: `tts` at $15 per million characters, `stt` at $0.006 a minute,
/// `img` by size and quality, `rr` and `mod` per request.
const MEDIA_MODELS: &str = r#"
[[models]]
name = "tts"
provider = "fake"
upstream = "tts-1"
price = { character = 15.0 }
[[models]]
name = "stt"
provider = "fake"
upstream = "whisper-1"
price = { audio_minute = 0.006 }
[[models]]
name = "img"
provider = "fake"
price = { image = { "1024x1024" = 0.04, "1024x1024/hd" = 0.08 } }
[[models]]
name = "rr"
provider = "fake"
price = { request = 0.002 }
[[models]]
name = "mod"
provider = "fake"
"#;

async fn media_gateway() -> (FakeUpstream, Gateway) {
    let fake = FakeUpstream::start().await;
    let config = config_for(&fake.base_url(), "") + MEDIA_MODELS;
    (fake, start_with(&config).await)
}

#[tokio::test]
async fn speech_is_piped_in_the_upstreams_format_and_priced_by_character() {
    let (fake, gw) = media_gateway().await;
    let input = "Read this lesson aloud, please.";
    let body = json!({"model": "tts", "input": input, "voice": "alloy"}).to_string();
    let r = post_json(&gw.url("/v1/audio/speech"), body, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("content-type"), Some("audio/mpeg"));
    assert_eq!(&r.body[..], &fake_audio(input)[..]);
    // 31 characters at $15 per million.
    assert_eq!(
        r.header("x-sluice-cost-usd"),
        None,
        "a stream's cost is known at its end"
    );
    let seen = fake.last_request().unwrap();
    assert_eq!(seen.path, "/v1/audio/speech");
    assert_eq!(seen.json().unwrap()["model"], "tts-1");
}

#[tokio::test]
async fn speech_as_sse_events_passes_through_to_its_done_event() {
    let (_fake, gw) = media_gateway().await;
    let body =
        json!({"model": "tts", "input": "hi there", "voice": "alloy", "stream_format": "sse"})
            .to_string();
    let r = post_json(&gw.url("/v1/audio/speech"), body, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.contains("speech.audio.delta"), "{text}");
    assert!(text.contains("speech.audio.done"), "{text}");
    assert!(!text.contains("error"), "{text}");
}

#[tokio::test]
async fn a_transcription_upload_reaches_the_upstream_whole_in_every_format() {
    let (fake, gw) = media_gateway().await;
    let audio: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 253) as u8).collect();
    for (format, needle) in [
        ("json", "\"text\""),
        ("text", "heard"),
        ("srt", "00:00:00,000 -->"),
        ("vtt", "WEBVTT"),
        ("verbose_json", "\"duration\""),
    ] {
        let body = form(
            &[("model", "stt"), ("response_format", format)],
            Some(("file", "lesson.wav", &audio)),
        );
        let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
        assert_eq!(r.status, 200, "{format}: {:?}", r.body);
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert!(text.contains(needle), "{format}: {text}");
        assert!(
            text.contains(&format!(
                "model whisper-1 heard 200000 bytes of lesson.wav checksum {:016x}",
                checksum(&audio)
            )),
            "{format}: {text}"
        );
        assert_eq!(r.header("x-sluice-model"), Some("stt"));
    }
    // Priced by the upstream's seconds: 200,000 bytes is 12.5 s, reported as 13 s (json).
    let body = form(&[("model", "stt")], Some(("file", "a.mp3", &audio)));
    let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
    assert_eq!(r.header("x-sluice-cost-usd"), Some("0.0013"));
    assert_eq!(
        fake.last_request().unwrap().path,
        "/v1/audio/transcriptions"
    );
    // Translations take the same upload.
    let body = form(&[("model", "stt")], Some(("file", "a.mp3", b"RIFF....")));
    let r = post_form(&gw, "/v1/audio/translations", body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(fake.last_request().unwrap().path, "/v1/audio/translations");
}

#[tokio::test]
async fn a_streamed_transcription_relays_its_events() {
    let (_fake, gw) = media_gateway().await;
    let body = form(
        &[("model", "stt"), ("stream", "true")],
        Some(("file", "a.wav", b"RIFFdata")),
    );
    let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.contains("transcript.text.delta"), "{text}");
    assert!(text.contains("transcript.text.done"), "{text}");
    assert!(!text.contains("stream_interrupted"), "{text}");
}

#[tokio::test]
async fn bad_uploads_are_clear_400s_and_413s() {
    let fake = FakeUpstream::start().await;
    let config = config_for(&fake.base_url(), "")
        .replace("[storage]", "max_upload_bytes = 100000\n[storage]")
        + MEDIA_MODELS;
    let gw = start_with(&config).await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (form(&[("model", "stt")], None), 400, "no `file` file part"),
        (
            form(&[("model", "stt")], Some(("file", "notes.exe", b"MZ"))),
            400,
            "unsupported file type",
        ),
        (form(&[], Some(("file", "a.wav", b"x"))), 400, "model"),
        (
            form(
                &[("model", "stt")],
                Some(("file", "a.wav", &vec![0u8; 200_000])),
            ),
            413,
            "server.max_upload_bytes",
        ),
        (b"not multipart at all".to_vec(), 400, "boundary"),
    ];
    for (body, status, needle) in cases {
        let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
        assert_eq!(r.status, status, "{needle}: {:?}", r.body);
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let r = post_json(
        &gw.url("/v1/audio/transcriptions"),
        r#"{"model":"stt"}"#,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "JSON is not an upload");
    assert_eq!(fake.request_count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn images_rerank_and_moderation_pass_through_priced() {
    let (fake, gw) = media_gateway().await;
    let body = json!({"model": "img", "prompt": "a lighthouse", "n": 2, "size": "1024x1024", "quality": "hd"});
    let r = post_json(&gw.url("/v1/images/generations"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    assert_eq!(r.header("x-sluice-cost-usd"), Some("0.16"));

    let body = form(
        &[("model", "img"), ("prompt", "add a boat"), ("n", "3")],
        Some(("image", "base.png", b"\x89PNG....")),
    );
    let r = post_form(&gw, "/v1/images/edits", body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 3);
    assert_eq!(fake.last_request().unwrap().path, "/v1/images/edits");

    let body = json!({"model": "rr", "query": "capital of france", "documents": ["Berlin is in Germany", {"text": "Paris is the capital of France"}], "top_n": 1, "return_documents": true});
    let r = post_json(&gw.url("/v1/rerank"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["results"][0]["index"], 1);
    assert_eq!(
        v["results"][0]["document"]["text"],
        "Paris is the capital of France"
    );
    assert_eq!(r.header("x-sluice-cost-usd"), Some("0.002"));
    assert_eq!(fake.last_request().unwrap().path, "/v1/rerank");

    let r = post_json(
        &gw.url("/v1/rerank"),
        json!({"model": "rr", "query": "q", "documents": [1, 2]}).to_string(),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "documents");

    let body = json!({"model": "mod", "input": ["hello", "I will kill the process"]});
    let r = post_json(&gw.url("/v1/moderations"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["results"][1]["flagged"], true);
}

#[tokio::test]
async fn a_route_falls_back_past_a_provider_without_the_endpoint() {
    let fake = FakeUpstream::start().await;
    let other = FakeUpstream::start().await;
    let extra = format!(
        r#"
[[providers]]
name = "chat-only"
type = "openai"
base_url = "{}"
endpoints = ["chat"]
[[models]]
name = "tts-a"
provider = "chat-only"
[[models]]
name = "tts-b"
provider = "fake"
[[routes]]
name = "voice"
targets = ["tts-a", "tts-b"]
"#,
        other.base_url()
    );
    let gw = start_with(&(config_for(&fake.base_url(), "") + &extra)).await;
    let body = json!({"model": "voice", "input": "hello", "voice": "alloy"}).to_string();
    let r = post_json(&gw.url("/v1/audio/speech"), body.clone(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-sluice-provider"), Some("fake"));
    assert_eq!(other.request_count(), 0);
    // Alone, the provider's lack is a 404 naming it.
    let body = json!({"model": "tts-a", "input": "hello", "voice": "alloy"}).to_string();
    let r = post_json(&gw.url("/v1/audio/speech"), body, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["code"], "endpoint_not_supported");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("provider `chat-only`"));
}

#[tokio::test]
async fn an_image_variation_upload_reaches_the_upstream_priced_per_image() {
    let (fake, gw) = media_gateway().await;
    let png: Vec<u8> = b"\x89PNG\r\n\x1a\n"
        .iter()
        .copied()
        .chain((0..50_000u32).map(|i| (i * 7 % 251) as u8))
        .collect();
    let body = form(
        &[("model", "img"), ("n", "2"), ("size", "1024x1024")],
        Some(("image", "base.png", &png)),
    );
    let r = post_form(&gw, "/v1/images/variations", body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    assert_eq!(r.header("x-sluice-cost-usd"), Some("0.08"));
    let seen = fake.last_request().unwrap();
    assert_eq!(seen.path, "/v1/images/variations");
    let sent = &seen.body[..];
    assert!(
        sent.windows(png.len()).any(|w| w == &png[..]),
        "the image reached the upstream whole"
    );

    // Without its image: a 400 before any upstream call.
    let before = fake.request_count();
    let body = form(&[("model", "img"), ("n", "1")], None);
    let r = post_form(&gw, "/v1/images/variations", body).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(fake.request_count(), before);
}

#[tokio::test]
async fn the_jina_and_cohere_presets_serve_rerank_only_where_they_have_it() {
    let fake = FakeUpstream::start().await;
    let extra = format!(
        r#"
[[providers]]
name = "jina"
type = "openai"
preset = "jina"
base_url = "{0}"
[[providers]]
name = "cohere"
type = "openai"
preset = "cohere"
base_url = "{0}"
[[models]]
name = "jina-rr"
provider = "jina"
upstream = "jina-reranker-v2-base-multilingual"
[[models]]
name = "cohere-rr"
provider = "cohere"
upstream = "rerank-english-v3.0"
"#,
        fake.base_url()
    );
    let gw = start_with(&(config_for(&fake.base_url(), "") + &extra)).await;
    for (model, upstream) in [
        ("jina-rr", "jina-reranker-v2-base-multilingual"),
        ("cohere-rr", "rerank-english-v3.0"),
    ] {
        let body = json!({"model": model, "query": "capital of france", "documents": ["Berlin", {"text": "Paris is the capital of France"}], "top_n": 1, "return_documents": true});
        let r = post_json(&gw.url("/v1/rerank"), body.to_string(), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        assert_eq!(r.json()["results"][0]["index"], 1, "{model}");
        let seen = fake.last_request().unwrap();
        assert_eq!(seen.path, "/v1/rerank", "{model}: {{base_url}}/rerank");
        let sent = seen.json().unwrap();
        assert_eq!(sent["model"], upstream);
        assert_eq!(
            sent["documents"][1]["text"],
            "Paris is the capital of France"
        );
        assert_eq!(sent["return_documents"], true);
    }
    // Neither serves chat; Cohere's preset serves no embeddings either.
    for (path, model, body) in [
        (
            "/v1/chat/completions",
            "jina-rr",
            json!({"model": "jina-rr", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/embeddings",
            "cohere-rr",
            json!({"model": "cohere-rr", "input": "hi"}),
        ),
    ] {
        let r = post_json(&gw.url(path), body.to_string(), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 404, "{model}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "endpoint_not_supported");
    }
    let body = json!({"model": "jina-rr", "input": "hi"});
    let r = post_json(&gw.url("/v1/embeddings"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "Jina serves embeddings: {}", r.text());
}

/// A gateway whose uploads spool in a directory of their own, with route `stt-routed`
/// (targets `stt-down`, a provider that refuses connections, then `stt`).
async fn upload_gateway() -> (FakeUpstream, Gateway, SpoolDir) {
    let fake = FakeUpstream::start().await;
    let spool = SpoolDir::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    let extra = format!(
        r#"
[[providers]]
name = "down"
type = "openai"
base_url = "http://{down}/v1"
[[models]]
name = "stt-down"
provider = "down"
upstream = "whisper-1"
[[routes]]
name = "stt-routed"
targets = ["stt-down", "stt"]
"#
    );
    let config = config_for(&fake.base_url(), "").replace(
        "[storage]",
        &format!("upload_dir = \"{}\"\n[storage]", spool.path().display()),
    ) + MEDIA_MODELS
        + &extra;
    (fake, start_with(&config).await, spool)
}

/// A directory of its own for a test's spooled uploads, removed at the end.
struct SpoolDir(std::path::PathBuf);

impl SpoolDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sluice-media-spool-{}-{:016x}",
            std::process::id(),
            sluice_core::rng::next_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts a raw HTTP/1.1 upload of `body` to the transcriptions endpoint and sends its
/// first `first` bytes; the rest is the caller's to send (or not).
async fn start_upload(gw: &Gateway, body: &[u8], first: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nhost: sluice\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..first]).await.unwrap();
    conn
}

/// Sends the rest of an upload begun by [`start_upload`] and reads the answer: its status
/// line and body.
async fn end_upload(mut conn: tokio::net::TcpStream, rest: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(rest).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        conn.read_to_end(&mut out),
    )
    .await
    .expect("the gateway answers")
    .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.lines().next().unwrap_or_default().to_string();
    (status, text)
}

/// Waits until `dir` holds no spooled upload; whether it came to that.
async fn spool_empties(dir: &std::path::Path) -> bool {
    for _ in 0..500 {
        if std::fs::read_dir(dir).unwrap().next().is_none() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// The upload's first try starts while the client is still sending: the upstream has the
/// request's head (and its model) before the client has sent half the file, and gets the
/// whole file, chunked, once the client has.
#[tokio::test]
async fn an_uploads_first_try_starts_while_the_body_is_still_arriving() {
    let (fake, gw, spool) = upload_gateway().await;
    let audio: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let body = form(&[("model", "stt")], Some(("file", "talk.wav", &audio)));
    let half = body.len() / 2;
    let conn = start_upload(&gw, &body, half).await;
    let ten = std::time::Duration::from_secs(10);
    assert!(fake.wait_started(1, ten).await, "the try starts mid-upload");
    assert_eq!(fake.request_count(), 0, "its body is still arriving");
    let (status, text) = end_upload(conn, &body[half..]).await;
    assert!(status.contains(" 200 "), "{text}");
    let heard = format!(
        "model whisper-1 heard 2000000 bytes of talk.wav checksum {:016x}",
        checksum(&audio)
    );
    assert!(text.contains(&heard), "{text}");
    let seen = fake.last_request().unwrap();
    assert_eq!(seen.header("content-length"), None, "sent chunked");
    assert_eq!(fake.started_count(), 1, "one try");
    assert!(spool_empties(spool.path()).await, "the spool is removed");
}

/// A client that stops mid-upload aborts the try under way (the upstream's request body
/// breaks off; it never sees a whole, short upload), leaves no spool, and the gateway
/// goes on serving.
#[tokio::test]
async fn a_client_that_stops_mid_upload_aborts_the_try_cleanly() {
    let (fake, gw, spool) = upload_gateway().await;
    let audio = vec![7u8; 1_000_000];
    let body = form(&[("model", "stt")], Some(("file", "cut.wav", &audio)));
    let conn = start_upload(&gw, &body, body.len() / 3).await;
    let ten = std::time::Duration::from_secs(10);
    assert!(fake.wait_started(1, ten).await);
    drop(conn);
    assert!(fake.wait_broken_bodies(1, ten).await, "the try is aborted");
    assert_eq!(
        fake.request_count(),
        0,
        "no upload reached the upstream whole"
    );
    assert!(spool_empties(spool.path()).await, "the spool is removed");
    let body = form(&[("model", "stt")], Some(("file", "a.wav", b"RIFFdata")));
    let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// A fallback started while the upload is still arriving sends it again from the spool,
/// following it to its end; one started after it ended sends it with its length.
#[tokio::test]
async fn fallbacks_replay_an_upload_from_its_spool_during_and_after_its_arrival() {
    let (fake, gw, spool) = upload_gateway().await;
    let audio: Vec<u8> = (0..1_500_000u32).map(|i| (i % 239) as u8).collect();
    let heard = format!(
        "heard 1500000 bytes of f.wav checksum {:016x}",
        checksum(&audio)
    );
    // The first target refuses the connection mid-upload; the second follows the spool.
    let body = form(&[("model", "stt-routed")], Some(("file", "f.wav", &audio)));
    let half = body.len() / 2;
    let conn = start_upload(&gw, &body, half).await;
    let ten = std::time::Duration::from_secs(10);
    assert!(
        fake.wait_started(1, ten).await,
        "the fallback starts mid-upload"
    );
    let (status, text) = end_upload(conn, &body[half..]).await;
    assert!(status.contains(" 200 "), "{text}");
    assert!(text.contains(&heard), "{text}");
    // The first try fails once the upload is whole (a 500): the retry has its length.
    fake.push(sluice_testkit::Behavior::new().with_status(500));
    let body = form(&[("model", "stt-routed")], Some(("file", "f.wav", &audio)));
    let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(String::from_utf8_lossy(&r.body).contains(&heard));
    let seen = fake.take_requests();
    let last = seen.last().unwrap();
    assert_eq!(
        last.header("content-length"),
        Some(last.body.len().to_string().as_str())
    );
    assert!(spool_empties(spool.path()).await, "the spools are removed");
}

/// Over HTTP/2 (h2c, prior knowledge), speech whose upstream is cut midway resets the
/// client's stream: the bytes sent before the cut arrive, then an error, never a clean
/// end of a short file.
#[tokio::test]
async fn a_cut_speech_stream_resets_the_http2_stream() {
    use http_body_util::{BodyExt, Full};
    let (_fake, gw) = media_gateway().await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, h2) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(h2);
    let ten = std::time::Duration::from_secs(10);
    for (cut, whole) in [(Some(2), false), (None, true)] {
        let body = json!({"model": "tts", "input": "a".repeat(400), "voice": "alloy",
                          "x_fake": {"cut_after_chunks": cut}});
        let req = http::Request::post(gw.url("/v1/audio/speech"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let resp = tokio::time::timeout(ten, send.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let mut body = resp.into_body();
        let mut got = 0usize;
        let end = loop {
            match tokio::time::timeout(ten, body.frame()).await.unwrap() {
                None => break Ok(()),
                Some(Ok(f)) => got += f.into_data().map_or(0, |d| d.len()),
                Some(Err(e)) => break Err(e),
            }
        };
        match whole {
            // The same connection still serves: the reset was the stream's alone.
            true => {
                assert!(end.is_ok(), "{end:?}");
                assert_eq!(got, fake_audio(&"a".repeat(400)).len());
            }
            false => {
                let e = end.expect_err("a reset, not a clean end");
                assert!(format!("{e:?}").contains("Reset"), "{e:?}");
                assert_eq!(got, 2 * 4096, "the bytes before the cut arrive first");
            }
        }
    }
}

/// A PCM WAV (8 kHz, mono, 16-bit) `ms` milliseconds long.
fn wav_of(ms: u32) -> Vec<u8> {
    let data = 16 * ms; // 16,000 bytes a second
    let mut f = b"RIFF".to_vec();
    f.extend_from_slice(&(36 + data).to_le_bytes());
    f.extend_from_slice(b"WAVEfmt ");
    f.extend_from_slice(&16u32.to_le_bytes());
    f.extend_from_slice(&[1, 0, 1, 0]); // PCM, mono
    f.extend_from_slice(&8_000u32.to_le_bytes());
    f.extend_from_slice(&16_000u32.to_le_bytes());
    f.extend_from_slice(&[2, 0, 16, 0]);
    f.extend_from_slice(b"data");
    f.extend_from_slice(&data.to_le_bytes());
    f.resize(f.len() + data as usize, 0);
    f
}

/// The bytes a file of `ms` milliseconds takes at least: past what its size holds at
/// 1 kbit/s, a length is not believed.
fn room_for(ms: u64) -> usize {
    usize::try_from(ms / 8).unwrap() + 64
}

/// A FLAC stream: STREAMINFO saying `ms` milliseconds at 48 kHz, then room for its frames.
fn flac_of(ms: u64) -> Vec<u8> {
    let mut f = b"fLaC\x80\x00\x00\x22".to_vec();
    f.extend_from_slice(&[0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&((48_000u64 << 44) | (1 << 41) | (15 << 36) | (48 * ms)).to_be_bytes());
    f.extend_from_slice(&[0; 16]);
    f.resize(f.len() + room_for(ms), 0);
    f
}

/// MP3 frames (MPEG-1 layer III, 128 kb/s, 44.1 kHz: 417 bytes, 1,152 samples each).
fn mp3_of(frames: usize) -> Vec<u8> {
    let mut frame = vec![0xFF, 0xFB, 0x90, 0x00];
    frame.resize(417, 0);
    frame.repeat(frames)
}

/// An Ogg Opus stream whose last page's granule position says `ms` milliseconds.
fn opus_of(ms: u64) -> Vec<u8> {
    let page = |granule: u64, kind: u8, packet: &[u8]| {
        let mut p = b"OggS\x00".to_vec();
        p.push(kind);
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.push(u8::try_from(packet.len()).unwrap());
        p.extend_from_slice(packet);
        p
    };
    let head = b"OpusHead\x01\x01\x00\x00\x80\xbb\x00\x00\x00\x00\x00";
    let middle = page(24 * ms, 0, &[0; 255]).repeat(room_for(ms) / 255 + 1);
    [page(0, 2, head), middle, page(48 * ms, 4, &[0; 100])].concat()
}

/// An M4A: `ftyp`, `mdat`, then `moov/mvhd` saying `ms` milliseconds (time scale 1,000).
fn m4a_of(ms: u32) -> Vec<u8> {
    m4a_saying(0, &[0; 8], &ms.to_be_bytes(), room_for(ms.into()))
}

/// An M4A whose `mvhd` (of `version`) has `times` and then `duration` at time scale 1,000,
/// after `mdat` bytes of media data.
fn m4a_saying(version: u8, times: &[u8], duration: &[u8], mdat: usize) -> Vec<u8> {
    let boxed = |kind: &[u8], body: &[u8]| {
        let mut b = u32::try_from(body.len() + 8)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    };
    let mut mvhd = vec![version, 0, 0, 0];
    mvhd.extend_from_slice(times);
    mvhd.extend_from_slice(&1_000u32.to_be_bytes());
    mvhd.extend_from_slice(duration);
    mvhd.resize(112, 0);
    [
        boxed(b"ftyp", b"M4A \0\0\0\0"),
        boxed(b"mdat", &vec![0; mdat]),
        boxed(b"moov", &boxed(b"mvhd", &mvhd)),
    ]
    .concat()
}

/// A WebM: its EBML header, then a Segment whose Info says `ms` milliseconds.
fn webm_of(ms: f64) -> Vec<u8> {
    let mut f = vec![0x1A, 0x45, 0xDF, 0xA3, 0x87, 0x42, 0x82, 0x84];
    f.extend_from_slice(b"webm");
    let mut info = vec![0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40, 0x44, 0x89, 0x88];
    info.extend_from_slice(&ms.to_bits().to_be_bytes());
    f.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x80 | (info.len() as u8 + 5)]);
    f.extend_from_slice(&[0x15, 0x49, 0xA9, 0x66, 0x80 | info.len() as u8]);
    f.extend(info);
    f.resize(f.len() + room_for(ms as u64), 0);
    f
}

/// The spend record of the request answered `r`.
async fn record_of(gw: &Gateway, r: &sluice_testkit::TestResponse) -> sluice_store::SpendRecord {
    let id = r.header("x-request-id").unwrap().to_string();
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    records.into_iter().find(|x| x.request_id == id).unwrap()
}

#[tokio::test]
async fn text_srt_and_vtt_transcriptions_are_priced_by_the_audios_own_length() {
    let (_fake, gw) = media_gateway().await;
    // 5 s of WAV at $0.006 a minute: $0.0005, in every format that carries no seconds.
    for format in ["text", "srt", "vtt"] {
        let body = form(
            &[("model", "stt"), ("response_format", format)],
            Some(("file", "lesson.wav", &wav_of(5_000))),
        );
        let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
        assert_eq!(r.status, 200, "{format}: {:?}", r.body);
        assert_eq!(r.header("x-sluice-cost-usd"), Some("0.0005"), "{format}");
        let rec = record_of(&gw, &r).await;
        assert_eq!(rec.cost_nano_usd, 500_000, "{format}");
        assert!(rec.usage_estimated, "{format}");
    }
    // The upstream's own seconds win where it sends them: json's usage (the fake counts
    // 16,000 bytes a second, rounded up: 80,044 bytes is 6 s), verbose_json's duration.
    let body = form(
        &[("model", "stt"), ("response_format", "json")],
        Some(("file", "lesson.wav", &wav_of(5_000))),
    );
    let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
    assert_eq!(r.header("x-sluice-cost-usd"), Some("0.0006"));
    assert!(!record_of(&gw, &r).await.usage_estimated);
    let body = form(
        &[("model", "stt"), ("response_format", "verbose_json")],
        Some(("file", "lesson.wav", &wav_of(5_000))),
    );
    let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
    assert!(!record_of(&gw, &r).await.usage_estimated);
    // Each format's length read from its own header (a translation alike).
    for (name, file, ms) in [
        ("a.flac", flac_of(3_000), 3_000),
        ("a.mp3", mp3_of(500), 500 * 1152 * 1000 / 44_100),
        ("a.ogg", opus_of(4_000), 4_000),
        ("a.m4a", m4a_of(2_500), 2_500),
        ("a.webm", webm_of(7_000.0), 7_000),
    ] {
        for path in ["/v1/audio/transcriptions", "/v1/audio/translations"] {
            let body = form(
                &[("model", "stt"), ("response_format", "text")],
                Some(("file", name, &file)),
            );
            let r = post_form(&gw, path, body).await;
            assert_eq!(r.status, 200, "{name}: {:?}", r.body);
            // $0.006 a minute is 100 nano-USD a millisecond.
            let rec = record_of(&gw, &r).await;
            assert_eq!(rec.cost_nano_usd, ms * 100, "{name} {path}");
            assert!(rec.usage_estimated, "{name}");
        }
    }
}

#[tokio::test]
async fn a_streamed_transcription_without_usage_is_priced_by_the_audios_own_length() {
    let (fake, gw) = media_gateway().await;
    // Events without a usage event or field: 5 s of WAV at $0.006 a minute, $0.0005.
    fake.push(Behavior::new().with_replay([
        "data: {\"type\":\"transcript.text.delta\",\"delta\":\"hello \"}\n\n",
        "data: {\"type\":\"transcript.text.done\",\"text\":\"hello there\"}\n\n",
    ]));
    let body = form(
        &[("model", "stt"), ("stream", "true")],
        Some(("file", "lesson.wav", &wav_of(5_000))),
    );
    let r = post_form(&gw, "/v1/audio/transcriptions", body.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.contains("transcript.text.done"), "{text}");
    assert!(text.contains(": x-sluice-cost-usd 0.0005"), "{text}");
    let rec = record_of(&gw, &r).await;
    assert_eq!(rec.cost_nano_usd, 500_000);
    assert!(rec.usage_estimated);
    assert!(rec.stream);
    // The upstream's own usage wins where it sends it (the fake's: tokens, no seconds).
    let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
    let rec = record_of(&gw, &r).await;
    assert!(!rec.usage_estimated);
    assert_eq!(rec.cost_nano_usd, 0);
}

#[tokio::test]
async fn an_unreadable_audio_file_is_priced_by_its_last_cue_in_srt_and_vtt() {
    let (_fake, gw) = media_gateway().await;
    let noise: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 13) as u8).collect();
    // The fake's one cue ends at 00:00:01.000: 1 s, $0.0001.
    for format in ["srt", "vtt"] {
        let body = form(
            &[("model", "stt"), ("response_format", format)],
            Some(("file", "noise.wav", &noise)),
        );
        let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
        assert_eq!(r.status, 200, "{format}: {:?}", r.body);
        assert_eq!(r.header("x-sluice-cost-usd"), Some("0.0001"), "{format}");
        let rec = record_of(&gw, &r).await;
        assert_eq!(rec.cost_nano_usd, 100_000, "{format}");
        assert!(rec.usage_estimated, "{format}");
    }
    // `text` has no cues: nothing to price by the minute.
    let body = form(
        &[("model", "stt"), ("response_format", "text")],
        Some(("file", "noise.wav", &noise)),
    );
    let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
    assert_eq!(r.status, 200);
    assert_eq!(record_of(&gw, &r).await.cost_nano_usd, 0);
}

#[tokio::test]
async fn a_forged_audio_length_is_not_priced() {
    let (_fake, gw) = media_gateway().await;
    // An M4A claiming u64::MAX milliseconds (a version 1 mvhd): past 48 hours and past what
    // its 100 kB hold, so not believed. `srt` and `vtt` go by the fake's cue (1 s, $0.0001);
    // `text` has nothing left to go by.
    let forged = m4a_saying(1, &[0; 16], &u64::MAX.to_be_bytes(), 100_000);
    for (format, cost) in [("srt", 100_000), ("vtt", 100_000), ("text", 0)] {
        let body = form(
            &[("model", "stt"), ("response_format", format)],
            Some(("file", "forged.m4a", &forged)),
        );
        let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
        assert_eq!(r.status, 200, "{format}: {:?}", r.body);
        assert_eq!(record_of(&gw, &r).await.cost_nano_usd, cost, "{format}");
    }
    // 47 hours is believed only in a file big enough to hold it at 1 kbit/s (21 MB).
    let hours_47 = (47 * 3_600_000u32).to_be_bytes();
    let small = m4a_saying(0, &[0; 8], &hours_47, 100_000);
    let body = form(
        &[("model", "stt"), ("response_format", "text")],
        Some(("file", "small.m4a", &small)),
    );
    let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
    assert_eq!(record_of(&gw, &r).await.cost_nano_usd, 0);
    // A file claiming less than its cues: the cues (the upstream's) set the floor.
    for format in ["srt", "vtt"] {
        let body = form(
            &[("model", "stt"), ("response_format", format)],
            Some(("file", "short.m4a", &m4a_of(1))),
        );
        let r = post_form(&gw, "/v1/audio/transcriptions", body).await;
        assert_eq!(record_of(&gw, &r).await.cost_nano_usd, 100_000, "{format}");
    }
}
