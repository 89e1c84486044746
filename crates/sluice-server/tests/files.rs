//! `/v1/files` over real loopback HTTP: upload (multipart, streamed to disk), list, retrieve,
//! content, delete; per-key ownership; bad input answered with 400 (or 413, 404) and never
//! a half-written file.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::Method;
use serde_json::{json, Value};
use sluice_testkit::client::{raw_request, TestClient};
use sluice_testkit::TestResponse;
use std::path::{Path, PathBuf};

const MASTER: &str = "sk-master-files";
const BOUNDARY: &str = "files-boundary-7c1e";

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-files-{name}-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway with a master key, its data in `dir` and `extra` TOML appended.
async fn gateway(dir: &Path, server_extra: &str, extra: &str) -> Gateway {
    start_with(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
{server_extra}
[storage]
data_dir = "{dir}"
[[providers]]
name = "fake"
type = "openai"
base_url = "http://127.0.0.1:9"
[[models]]
name = "m"
provider = "fake"
{extra}
"#,
        dir = dir.display()
    ))
    .await
}

/// A multipart part: a text field, or a file when `filename` is given.
enum Part<'a> {
    Field(&'a str, &'a str),
    File(&'a str, &'a str, &'a [u8]),
}

fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        match part {
            Part::Field(name, value) => out.extend_from_slice(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            ),
            Part::File(name, filename, data) => {
                out.extend_from_slice(
                    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                        .as_bytes(),
                );
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

async fn call(gw: &Gateway, method: Method, path: &str, body: Vec<u8>, key: &str) -> TestResponse {
    let auth = format!("Bearer {key}");
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let mut headers = vec![("authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("content-type", ct.as_str()));
    }
    TestClient::new()
        .request(method, &gw.url(path), body.into(), &headers)
        .await
        .expect("request")
}

async fn upload(gw: &Gateway, key: &str, parts: &[Part<'_>]) -> TestResponse {
    call(gw, Method::POST, "/v1/files", form(parts), key).await
}

async fn get(gw: &Gateway, path: &str, key: &str) -> TestResponse {
    call(gw, Method::GET, path, Vec::new(), key).await
}

async fn new_key(gw: &Gateway, name: &str) -> String {
    let r = TestClient::new()
        .request(
            Method::POST,
            &gw.url("/admin/keys"),
            json!({ "name": name }).to_string().into(),
            &[("authorization", &format!("Bearer {MASTER}"))],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

fn assert_not_found(r: &TestResponse, id: &str) {
    assert_eq!(r.status, 404, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["code"], "file_not_found");
    assert_eq!(e["message"], format!("No such File object: {id}"));
}

fn assert_invalid(r: &TestResponse, param: &str, says: &str) {
    assert_eq!(r.status, 400, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error", "{e}");
    assert_eq!(e["param"], param, "{e}");
    assert!(e["message"].as_str().unwrap().contains(says), "{e}");
}

/// The contents' directory holds no file and no partial upload.
fn assert_no_contents(dir: &Path) {
    let files = dir.join("files");
    let stored: Vec<_> = std::fs::read_dir(&files)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "tmp")
        .collect();
    assert!(stored.is_empty(), "{stored:?}");
    let partial: Vec<_> = std::fs::read_dir(files.join("tmp")).unwrap().collect();
    assert!(partial.is_empty(), "{partial:?}");
}

#[tokio::test]
async fn upload_list_retrieve_content_delete() {
    let dir = data_dir("life");
    let gw = gateway(&dir, "", "").await;
    let lines = b"{\"custom_id\":\"1\"}\n{\"custom_id\":\"2\"}\n";
    // The file before its purpose, as curl's -F order may send it.
    let r = upload(
        &gw,
        MASTER,
        &[
            Part::File("file", "in.jsonl", lines),
            Part::Field("purpose", "batch"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let f = r.json();
    let id = f["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("file-"), "{f}");
    assert_eq!(f["object"], "file");
    assert_eq!(f["bytes"], lines.len());
    assert_eq!(
        (f["filename"].as_str(), f["purpose"].as_str()),
        (Some("in.jsonl"), Some("batch"))
    );
    assert_eq!(f["status"], "processed");
    assert!(f["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert!(dir.join("files").join(&id).exists());

    let r = get(&gw, &format!("/v1/files/{id}"), MASTER).await;
    assert_eq!(r.json(), f);
    let r = get(&gw, &format!("/v1/files/{id}/content"), MASTER).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], &lines[..]);
    assert_eq!(
        r.header("content-length"),
        Some(lines.len().to_string().as_str())
    );

    let second = upload(
        &gw,
        MASTER,
        &[
            Part::Field("purpose", "user_data"),
            Part::File("file", "notes.txt", b"notes"),
        ],
    )
    .await;
    let second = second.json()["id"].as_str().unwrap().to_string();
    let r = get(&gw, "/v1/files", MASTER).await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), id.as_str()], "newest first");
    assert_eq!(
        (v["first_id"].as_str(), v["last_id"].as_str()),
        (Some(second.as_str()), Some(id.as_str()))
    );
    assert_eq!(v["has_more"], false);
    let page = get(&gw, "/v1/files?limit=1&order=asc", MASTER).await.json();
    assert_eq!(
        (page["data"][0]["id"].as_str(), page["has_more"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    let next = get(
        &gw,
        &format!("/v1/files?limit=1&order=asc&after={id}"),
        MASTER,
    )
    .await
    .json();
    assert_eq!(
        (next["data"][0]["id"].as_str(), next["has_more"].as_bool()),
        (Some(second.as_str()), Some(false))
    );
    let batch = get(&gw, "/v1/files?purpose=batch", MASTER).await.json();
    assert_eq!(batch["data"].as_array().unwrap().len(), 1);

    let r = call(
        &gw,
        Method::DELETE,
        &format!("/v1/files/{id}"),
        Vec::new(),
        MASTER,
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"id": id, "object": "file", "deleted": true})
    );
    assert!(!dir.join("files").join(&id).exists());
    assert_not_found(&get(&gw, &format!("/v1/files/{id}"), MASTER).await, &id);
    assert_not_found(
        &get(&gw, &format!("/v1/files/{id}/content"), MASTER).await,
        &id,
    );
    assert_not_found(
        &call(
            &gw,
            Method::DELETE,
            &format!("/v1/files/{id}"),
            Vec::new(),
            MASTER,
        )
        .await,
        &id,
    );
}

#[tokio::test]
async fn another_keys_file_is_not_found() {
    let dir = data_dir("own");
    let gw = gateway(&dir, "", "").await;
    let (alice, bob) = (new_key(&gw, "alice").await, new_key(&gw, "bob").await);
    let r = upload(
        &gw,
        &alice,
        &[
            Part::Field("purpose", "batch"),
            Part::File("file", "a.jsonl", b"{}\n"),
        ],
    )
    .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    for key in [&bob, &MASTER.to_string()] {
        assert_not_found(&get(&gw, &format!("/v1/files/{id}"), key).await, &id);
        assert_not_found(
            &get(&gw, &format!("/v1/files/{id}/content"), key).await,
            &id,
        );
        assert_not_found(
            &call(
                &gw,
                Method::DELETE,
                &format!("/v1/files/{id}"),
                Vec::new(),
                key,
            )
            .await,
            &id,
        );
        assert_eq!(get(&gw, "/v1/files", key).await.json()["data"], json!([]));
    }
    assert_eq!(
        get(&gw, &format!("/v1/files/{id}"), &alice).await.status,
        200
    );
    assert_eq!(
        get(&gw, "/v1/files", &alice).await.json()["data"][0]["id"],
        id.as_str()
    );
    // No key, a wrong key.
    let r = TestClient::new().get(&gw.url("/v1/files")).await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(get(&gw, "/v1/files", "sk-wrong").await.status, 401);
}

#[tokio::test]
async fn bad_uploads_are_400s_and_leave_nothing_behind() {
    let dir = data_dir("bad");
    let gw = gateway(&dir, "", "").await;
    let data: &[u8] = b"{}\n";
    let cases: Vec<(Vec<Part<'_>>, &str, &str)> = vec![
        (
            vec![Part::Field("purpose", "batch")],
            "file",
            "no `file` part",
        ),
        (
            vec![Part::File("file", "a.jsonl", data)],
            "purpose",
            "no `purpose`",
        ),
        (
            vec![
                Part::Field("purpose", "nope"),
                Part::File("file", "a.jsonl", data),
            ],
            "purpose",
            "unknown purpose `nope`",
        ),
        (
            vec![
                Part::File("file", "a.jsonl", data),
                Part::Field("purpose", "batch_output"),
            ],
            "purpose",
            "written by sluice",
        ),
        (
            vec![
                Part::Field("purpose", "batch"),
                Part::File("file", "a.csv", data),
            ],
            "file",
            "unsupported file type",
        ),
        (
            vec![
                Part::File("file", "cat.exe", data),
                Part::Field("purpose", "vision"),
            ],
            "file",
            "unsupported file type",
        ),
        (
            vec![
                Part::Field("purpose", "batch"),
                Part::File("file", "a.jsonl", b""),
            ],
            "file",
            "empty",
        ),
        (
            vec![Part::Field("purpose", "batch"), Part::Field("file", "text")],
            "file",
            "must be a file",
        ),
        (
            vec![
                Part::Field("purpose", "batch"),
                Part::File("other", "a.jsonl", data),
            ],
            "file",
            "unexpected file part",
        ),
        (
            vec![
                Part::Field("purpose", "batch"),
                Part::File("file", "a.jsonl", data),
                Part::File("file", "b.jsonl", data),
            ],
            "file",
            "more than one",
        ),
        (
            vec![
                Part::Field("purpose", "batch"),
                Part::Field("expires_after[anchor]", "created_at"),
                Part::Field("expires_after[seconds]", "10"),
                Part::File("file", "a.jsonl", data),
            ],
            "expires_after",
            "3600",
        ),
    ];
    for (parts, param, says) in &cases {
        assert_invalid(&upload(&gw, MASTER, parts).await, param, says);
    }
    // Not multipart at all; a body cut before its closing boundary.
    let r = TestClient::new()
        .request(
            Method::POST,
            &gw.url("/v1/files"),
            "{}".into(),
            &[("authorization", &format!("Bearer {MASTER}"))],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("multipart/form-data"), "{}", r.text());
    let mut cut = form(&[
        Part::Field("purpose", "batch"),
        Part::File("file", "a.jsonl", &[b'x'; 50_000]),
    ]);
    cut.truncate(cut.len() - 20);
    let r = call(&gw, Method::POST, "/v1/files", cut, MASTER).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("closing boundary"), "{}", r.text());
    assert_eq!(
        get(&gw, "/v1/files", MASTER).await.json()["data"],
        json!([])
    );
    assert_no_contents(&dir);
}

#[tokio::test]
async fn uploads_over_the_limit_are_413_whether_announced_or_not() {
    let dir = data_dir("big");
    let gw = gateway(&dir, "max_upload_bytes = 1000", "").await;
    let big = vec![b'x'; 5000];
    let r = upload(
        &gw,
        MASTER,
        &[
            Part::Field("purpose", "batch"),
            Part::File("file", "a.jsonl", &big),
        ],
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("server.max_upload_bytes"), "{}", r.text());
    // Chunked, with no Content-Length: refused once the body passes the limit.
    let body = form(&[
        Part::Field("purpose", "batch"),
        Part::File("file", "a.jsonl", &big),
    ]);
    let mut raw = format!(
        "POST /v1/files HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {MASTER}\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(512) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = String::from_utf8_lossy(&raw_request(gw.addr, &raw).await.unwrap()).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let small = upload(
        &gw,
        MASTER,
        &[
            Part::Field("purpose", "batch"),
            Part::File("file", "a.jsonl", b"{}\n"),
        ],
    )
    .await;
    assert_eq!(small.status, 200, "{}", small.text());
    std::fs::remove_file(dir.join("files").join(small.json()["id"].as_str().unwrap())).unwrap();
    assert_no_contents(&dir);
}

#[tokio::test]
async fn unknown_ids_bad_queries_and_methods() {
    let dir = data_dir("misc");
    let gw = gateway(&dir, "", "").await;
    assert_not_found(
        &get(&gw, "/v1/files/file-nothere", MASTER).await,
        "file-nothere",
    );
    assert_not_found(
        &get(&gw, "/v1/files/file-..%2Fetc/content", MASTER).await,
        "file-..%2Fetc",
    );
    assert_not_found(
        &get(&gw, "/v1/files/not-a-file-id", MASTER).await,
        "not-a-file-id",
    );
    let r = get(&gw, "/v1/files?limit=0", MASTER).await;
    assert_invalid(&r, "limit", "1 to 10000");
    assert_invalid(
        &get(&gw, "/v1/files?purpose=nope", MASTER).await,
        "purpose",
        "unknown purpose",
    );
    assert_invalid(
        &get(&gw, "/v1/files?order=sideways", MASTER).await,
        "order",
        "asc",
    );
    let r = call(&gw, Method::PUT, "/v1/files", Vec::new(), MASTER).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST"));
    assert_eq!(
        call(
            &gw,
            Method::POST,
            "/v1/files/file-x/content",
            Vec::new(),
            MASTER
        )
        .await
        .status,
        405
    );
    assert_eq!(get(&gw, "/v1/files/file-x/other", MASTER).await.status, 404);
}

#[tokio::test]
async fn expiry_is_kept_and_a_big_upload_streams_through() {
    let dir = data_dir("expiry");
    let gw = gateway(&dir, "", "").await;
    let r = upload(
        &gw,
        MASTER,
        &[
            Part::Field("purpose", "user_data"),
            Part::Field("expires_after[anchor]", "created_at"),
            Part::Field("expires_after[seconds]", "3600"),
            Part::File("file", "a.txt", b"soon gone"),
        ],
    )
    .await;
    let f = r.json();
    assert_eq!(
        f["expires_at"].as_u64().unwrap(),
        f["created_at"].as_u64().unwrap() + 3600
    );
    // 8 MB in, the same 8 MB out.
    let big: Vec<u8> = (0..8_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = upload(
        &gw,
        MASTER,
        &[
            Part::File("file", "big.jsonl", &big),
            Part::Field("purpose", "batch"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let back = get(&gw, &format!("/v1/files/{id}/content"), MASTER).await;
    assert_eq!(back.body.len(), big.len());
    assert!(back.body[..] == big[..]);
}

#[tokio::test]
async fn readiness_checks_the_files_store() {
    let dir = data_dir("ready");
    let gw = gateway(&dir, "", "").await;
    let r = TestClient::new()
        .get(&gw.url("/health/ready"))
        .await
        .unwrap();
    assert_eq!(r.json()["checks"]["files"]["status"], "ok", "{}", r.text());
    // The contents' directory gone (a shared mount lost): degraded, not down.
    std::fs::remove_dir_all(dir.join("files")).unwrap();
    let r = TestClient::new()
        .get(&gw.url("/health/ready"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "degraded", "{}", r.text());
    assert_eq!(r.json()["checks"]["files"]["status"], "failed");
}

#[tokio::test]
async fn files_off_is_not_found() {
    let dir = data_dir("off");
    let gw = gateway(&dir, "", "[files]\nenabled = false").await;
    let r = get(&gw, "/v1/files", MASTER).await;
    assert_eq!(r.status, 404);
    assert!(!dir.join("files").exists());
    let v: Value = r.json();
    assert_eq!(v["error"]["type"], "not_found_error");
}

/// A fresh PostgreSQL schema (at `DATABASE_URL`) and the URL that selects it.
fn postgres_schema() -> (String, String) {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!(
        "files_{}_{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    );
    let out = std::process::Command::new("psql")
        .args([&base, "-X", "-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .output()
        .expect("psql is installed (test.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-csearch_path%3D{schema}"),
        schema,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_files_through_postgres_and_one_directory() {
    let (database, schema) = postgres_schema();
    let shared = data_dir("shared");
    let storage = format!(
        "database_url = \"{database}\"\n[files]\ndir = \"{}\"",
        shared.join("contents").display()
    );
    // The `[storage]` keys follow its `data_dir` line; `[files]` then opens its own table.
    let config = |dir: PathBuf| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{}"
{storage}
[[providers]]
name = "fake"
type = "openai"
base_url = "http://127.0.0.1:9"
[[models]]
name = "m"
provider = "fake"
"#,
            dir.display()
        )
    };
    let a = start_with(&config(data_dir("replica-a"))).await;
    let b = start_with(&config(data_dir("replica-b"))).await;
    let key = new_key(&a, "tenant").await;
    let lines = b"{\"custom_id\":\"x\"}\n";
    let r = upload(
        &a,
        &key,
        &[
            Part::Field("purpose", "batch"),
            Part::File("file", "in.jsonl", lines),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(shared.join("contents").join(&id).exists());
    assert_eq!(
        get(&b, &format!("/v1/files/{id}"), &key).await.json(),
        r.json()
    );
    assert_eq!(
        &get(&b, &format!("/v1/files/{id}/content"), &key).await.body[..],
        &lines[..]
    );
    assert_eq!(
        get(&b, "/v1/files", &key).await.json()["data"][0]["id"],
        id.as_str()
    );
    assert_not_found(&get(&b, &format!("/v1/files/{id}"), MASTER).await, &id);
    let r = call(
        &b,
        Method::DELETE,
        &format!("/v1/files/{id}"),
        Vec::new(),
        &key,
    )
    .await;
    assert_eq!(r.json()["deleted"], true);
    assert_not_found(
        &get(&a, &format!("/v1/files/{id}/content"), &key).await,
        &id,
    );
    drop((a, b));
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let _ = std::process::Command::new("psql")
        .args([
            &base,
            "-X",
            "-q",
            "-c",
            &format!("DROP SCHEMA {schema} CASCADE"),
        ])
        .output();
}

/// The stored content of `len` bytes under `dir`'s contents directory.
fn stored_content(dir: &Path, len: u64) -> PathBuf {
    let mut todo = vec![dir.join("files")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(p);
            } else if meta.len() == len {
                return p;
            }
        }
    }
    panic!("no stored content of {len} bytes");
}

/// Cuts a stored content short on disk (as a delete through another replica can).
fn cut_short(path: &Path) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(1_000_000).unwrap();
}

/// A content that cannot be read to its end (its file cut short on disk after the answer
/// began) aborts the download instead of ending it short: over HTTP/1.1 the body stops
/// before its `Content-Length` and the connection is closed; over HTTP/2 (h2c, prior
/// knowledge) the stream is reset, so the client's library reports an error.
#[tokio::test]
async fn a_content_cut_short_aborts_the_download_over_http1_and_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LEN: usize = 40_000_000;
    let dir = data_dir("cut-content");
    let gw = gateway(&dir, "", "").await;
    // One content of `LEN` bytes stored at a time, so the one cut is the one being read.
    let store = |name: &'static str| {
        let gw = &gw;
        async move {
            let big = vec![b'x'; LEN];
            let r = upload(
                gw,
                MASTER,
                &[
                    Part::Field("purpose", "batch"),
                    Part::File("file", name, &big),
                ],
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["id"].as_str().unwrap().to_string()
        }
    };
    let first = store("one.jsonl").await;
    let ten = std::time::Duration::from_secs(10);
    // HTTP/1.1: the head says 40 MB; the body stops short and the connection closes.
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "GET /v1/files/{}/content HTTP/1.1\r\nhost: sluice\r\nauthorization: Bearer {MASTER}\r\n\r\n",
        first
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(ten, conn.read(&mut got))
        .await
        .unwrap()
        .unwrap();
    got.truncate(n);
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(&format!("content-length: {LEN}")), "{text}");
    cut_short(&stored_content(&dir, LEN as u64));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(ten, conn.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed, not left hanging");
    let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = got.len() - at + rest.len();
    assert!(body < LEN, "the body falls short of its length: {body}");
    // HTTP/2 with prior knowledge: the stream is reset; the client sees an error.
    use http_body_util::{BodyExt, Empty};
    let second = store("two.jsonl").await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, h2) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(h2);
    let req = http::Request::get(gw.url(&format!("/v1/files/{second}/content")))
        .header("authorization", format!("Bearer {MASTER}"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(ten, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    cut_short(&stored_content(&dir, LEN as u64));
    let collected = tokio::time::timeout(ten, resp.into_body().collect()).await;
    let e = collected
        .expect("the stream ends")
        .expect_err("reset, not a clean end");
    assert!(
        format!("{e:?}").contains("Reset") || e.to_string().contains("stream"),
        "{e:?}"
    );
}
