//! `/v1/batches` on models sluice runs itself: a batch of chat lines on a generated GGUF
//! model and a batch of embeddings lines on all-MiniLM-L6-v2, run through the pipeline in
//! process, each line answered once in the output file and recorded with the batch's id.

use super::*;
use std::time::{Duration, Instant};

const BOUNDARY: &str = "local-batches-boundary-7c1d";

async fn upload(gw: &common::Gateway, lines: &[Value]) -> String {
    let data: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{data}\r\n--{BOUNDARY}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let r = TestClient::new()
        .with_timeout(SLOW)
        .request(
            http::Method::POST,
            &gw.url("/v1/files"),
            body.into(),
            &[("content-type", ct.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// Creates a batch of `lines` for `endpoint` and waits until it ends; its final object.
async fn run(gw: &common::Gateway, endpoint: &str, lines: &[Value]) -> Value {
    let file = upload(gw, lines).await;
    let body = json!({"input_file_id": file, "endpoint": endpoint, "completion_window": "24h"});
    let r = post_json_slow(&gw.url("/v1/batches"), body.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let until = Instant::now() + SLOW;
    loop {
        let b = TestClient::new()
            .with_timeout(SLOW)
            .get(&gw.url(&format!("/v1/batches/{id}")))
            .await
            .unwrap()
            .json();
        if matches!(
            b["status"].as_str(),
            Some("completed" | "failed" | "expired" | "cancelled")
        ) {
            return b;
        }
        assert!(Instant::now() < until, "batch not done in time: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn output(gw: &common::Gateway, b: &Value) -> Vec<Value> {
    let id = b["output_file_id"].as_str().unwrap();
    let r = TestClient::new()
        .with_timeout(SLOW)
        .get(&gw.url(&format!("/v1/files/{id}/content")))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_run_on_local_chat_and_embedding_models() {
    let gguf = model_file("batch", TestArch::Llama);
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\nprice = {{ input = 1.0, output = 2.0 }}\n\
         [[models]]\nname = \"minilm\"\nprovider = \"here\"\npath = \"{}\"\n",
        gguf.display(),
        minilm_dir().display()
    );
    let (fake, gw) = gateway("", &models).await;

    let chat_lines: Vec<Value> = (0..3)
        .map(|i| {
            json!({"custom_id": format!("c-{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "tiny", "temperature": 0, "max_tokens": 4,
                            "messages": [{"role": "user", "content": format!("hello {i}")}]}})
        })
        .collect();
    let b = run(&gw, "/v1/chat/completions", &chat_lines).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 3, "{b}");
    let out = output(&gw, &b).await;
    let mut ids: Vec<&str> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["c-0", "c-1", "c-2"]);
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        let body = &l["response"]["body"];
        assert_eq!(body["object"], "chat.completion", "{l}");
        assert!(
            body["usage"]["completion_tokens"].as_u64().unwrap() > 0,
            "{l}"
        );
    }

    let embed_lines: Vec<Value> = (0..3)
        .map(|i| {
            json!({"custom_id": format!("e-{i}"), "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "minilm", "input": format!("a sentence {i}")}})
        })
        .collect();
    let e = run(&gw, "/v1/embeddings", &embed_lines).await;
    assert_eq!(e["status"], "completed", "{e}");
    let embedded = output(&gw, &e).await;
    assert_eq!(embedded.len(), 3, "{embedded:?}");
    for l in embedded {
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        let vector = l["response"]["body"]["data"][0]["embedding"]
            .as_array()
            .unwrap();
        assert_eq!(vector.len(), 384, "{l}");
    }
    assert_eq!(fake.request_count(), 0, "nothing left the process");

    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    for (batch, endpoint) in [(&b, "chat"), (&e, "embeddings")] {
        let id = batch["id"].as_str().unwrap();
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r.batch_id.as_deref() == Some(id))
            .collect();
        assert_eq!(mine.len(), 3, "{id}: {mine:?}");
        assert!(
            mine.iter()
                .all(|r| r.endpoint == endpoint && r.status == 200),
            "{mine:?}"
        );
    }
}
