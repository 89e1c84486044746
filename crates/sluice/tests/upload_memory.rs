//! A 100 MB (10^8 bytes; the default limit is 100 MiB) upload through the real binary raises its resident memory by less than 20 MB
//! (issue 16): the multipart body is read a frame at a time, spooled to disk, and streamed
//! to the upstream from the spool.

#![allow(clippy::unwrap_used)]

mod common;

use common::{temp_dir, Serving};
use sluice_testkit::client::TestClient;
use sluice_testkit::media::checksum;
use sluice_testkit::FakeUpstream;

const MB: usize = 1 << 20;
const BOUNDARY: &str = "memory-test-boundary";

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn form(audio: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nstt\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"long.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(audio);
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_upload_raises_resident_memory_by_less_than_20_mb() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir("upload-memory");
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{data}"
[[providers]]
name = "fake"
type = "openai"
base_url = "{base}"
[[models]]
name = "stt"
provider = "fake"
upstream = "whisper-1"
"#,
            data = dir.join("data").display(),
            base = fake.base_url()
        ),
    )
    .unwrap();
    let serving = Serving::start(&config);
    let pid = serving.child.id();
    let client = TestClient::new();
    let url = serving.url("/v1/audio/transcriptions");
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let headers = [("content-type", content_type.as_str())];

    // Warm up: the runtime, the pools and the allocator at their working size.
    let small: Vec<u8> = (0..MB).map(|i| (i % 251) as u8).collect();
    let r = client
        .post_json(&url, form(&small), &headers)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let before = status_kib(pid, "VmHWM:");

    // VmHWM is updated lazily; a sampler of VmRSS backs it up.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = std::sync::Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "VmRSS:"));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak
        })
    };
    let big: Vec<u8> = (0..100_000_000).map(|i| (i * 7 % 253) as u8).collect();
    let r = client.post_json(&url, form(&big), &headers).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let text = r.json()["text"].as_str().unwrap().to_string();
    assert!(
        text.contains(&format!(
            "heard {} bytes of long.wav checksum {:016x}",
            big.len(),
            checksum(&big)
        )),
        "the upstream got the upload whole: {text}"
    );
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = status_kib(pid, "VmHWM:").max(sampler.join().unwrap());
    let grew_mib = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "resident peak before {before} KiB, after the 100 MB upload {peak} KiB: +{grew_mib:.1} MiB"
    );
    assert!(grew_mib < 20.0, "resident memory grew by {grew_mib:.1} MiB");
    assert!(serving.stop());
}
