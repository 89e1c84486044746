//! The fake's Files and Batch APIs, in OpenAI's documented wire formats: `POST /v1/files`
//! (multipart: `purpose`, `file`), `GET /v1/files/{id}`, `GET /v1/files/{id}/content`,
//! `DELETE /v1/files/{id}`; `POST /v1/batches`, `GET /v1/batches` (newest first),
//! `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`.
//!
//! A batch does nothing until it is polled: each `GET /v1/batches/{id}` is one poll. How it
//! ends is the test's [`BatchOutcome`] (set with
//! [`FakeUpstream::set_batch_outcome`](crate::FakeUpstream::set_batch_outcome)): completed,
//! failed or expired at the poll that reaches its `after_polls` (in progress before). Its
//! lines are answered then, each as the fake answers that endpoint (chat completions and
//! embeddings); a line whose body has an `x_fake` with a `status` is answered with that
//! status and an error body, into the error file, and one with an `x_fake` `request_id`
//! gets that `request_id` (as an upstream that repeats or blanks it does). An expired batch answers its first half
//! and reports the rest `batch_expired`. A cancelled batch is `cancelling`, then
//! `cancelled` at the next poll with no line run.

use crate::media::parse_form;
use crate::responses;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How the fake's batches end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// `completed` at poll `after_polls` (every line answered).
    Complete {
        /// The poll (from 1) that finds it ended.
        after_polls: u64,
    },
    /// `failed` at poll `after_polls`, with `errors` and no file.
    Fail {
        /// The poll that finds it ended.
        after_polls: u64,
    },
    /// `expired` at poll `after_polls`: the first half of the lines answered, the rest
    /// `batch_expired` in the error file.
    Expire {
        /// The poll that finds it ended.
        after_polls: u64,
    },
}

impl Default for BatchOutcome {
    fn default() -> Self {
        Self::Complete { after_polls: 2 }
    }
}

impl BatchOutcome {
    const fn after(self) -> u64 {
        match self {
            Self::Complete { after_polls }
            | Self::Fail { after_polls }
            | Self::Expire { after_polls } => after_polls,
        }
    }
}

#[derive(Debug, Clone)]
struct FakeFile {
    object: Value,
    data: Bytes,
}

#[derive(Debug, Clone)]
struct FakeBatch {
    object: Value,
    polls: u64,
    outcome: BatchOutcome,
}

/// The fake's files and batches.
#[derive(Debug, Default)]
pub(crate) struct State {
    files: Mutex<BTreeMap<String, FakeFile>>,
    batches: Mutex<Vec<FakeBatch>>,
    outcome: Mutex<BatchOutcome>,
    next: AtomicU64,
    polls: AtomicU64,
}

/// What a request here is answered: a status and a JSON (or file) body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    pub json: bool,
}

fn ok(v: &Value) -> Answer {
    Answer {
        status: StatusCode::OK,
        body: Bytes::from(v.to_string()),
        json: true,
    }
}

fn error(status: StatusCode, message: &str, param: Option<&str>) -> Answer {
    let v = json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}});
    Answer {
        status,
        body: Bytes::from(v.to_string()),
        json: true,
    }
}

/// Locks a mutex, ignoring poisoning (the data stays usable for a fake).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> u64 {
    responses::now_unix()
}

/// Whether `path` is the Files or Batch API's.
pub(crate) fn is_batch_api(path: &str) -> bool {
    path == "/v1/files"
        || path.starts_with("/v1/files/")
        || path == "/v1/batches"
        || path.starts_with("/v1/batches/")
}

impl State {
    /// Sets how the batches made from now on end.
    pub(crate) fn set_outcome(&self, outcome: BatchOutcome) {
        *lock(&self.outcome) = outcome;
    }

    /// Polls of every batch so far.
    pub(crate) fn polls(&self) -> u64 {
        self.polls.load(Ordering::SeqCst)
    }

    fn id(&self, prefix: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        format!("{prefix}fake{n:08}")
    }

    /// Answers `method` `path`.
    pub(crate) fn route(
        &self,
        method: &Method,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Answer {
        let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        match (method, parts.as_slice()) {
            (&Method::POST, ["files"]) => self.upload(content_type, body),
            (&Method::GET, ["files", id]) => self.file(id, |f| ok(&f.object)),
            (&Method::GET, ["files", id, "content"]) => self.file(id, |f| Answer {
                status: StatusCode::OK,
                body: f.data.clone(),
                json: false,
            }),
            (&Method::DELETE, ["files", id]) => {
                let gone = lock(&self.files).remove(*id);
                match gone {
                    Some(_) => ok(&json!({"id": id, "object": "file", "deleted": true})),
                    None => error(
                        StatusCode::NOT_FOUND,
                        &format!("No such File object: {id}"),
                        Some("id"),
                    ),
                }
            }
            (&Method::POST, ["batches"]) => self.create(body),
            (&Method::GET, ["batches"]) => self.list(),
            (&Method::GET, ["batches", id]) => self.poll(id),
            (&Method::POST, ["batches", id, "cancel"]) => self.cancel(id),
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("Unknown request URL: {method} {path}"),
                None,
            ),
        }
    }

    fn file(&self, id: &str, f: impl Fn(&FakeFile) -> Answer) -> Answer {
        match lock(&self.files).get(id) {
            Some(file) => f(file),
            None => error(
                StatusCode::NOT_FOUND,
                &format!("No such File object: {id}"),
                Some("id"),
            ),
        }
    }

    fn store_file(&self, purpose: &str, filename: &str, data: Bytes) -> Value {
        let id = self.id("file-");
        let object = json!({"id": id, "object": "file", "bytes": data.len(), "created_at": now(),
            "expires_at": null, "filename": filename, "purpose": purpose, "status": "processed",
            "status_details": null});
        let file = FakeFile {
            object: object.clone(),
            data,
        };
        lock(&self.files).insert(id, file);
        object
    }

    fn upload(&self, content_type: &str, body: &[u8]) -> Answer {
        let parts = match parse_form(content_type, body) {
            Ok(p) => p,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("bad multipart body: {e}"),
                    None,
                )
            }
        };
        let purpose = parts
            .iter()
            .find(|p| p.name == "purpose" && p.filename.is_none())
            .map(|p| String::from_utf8_lossy(&p.data).to_string());
        let file = parts
            .iter()
            .find(|p| p.name == "file" && p.filename.is_some());
        let (Some(purpose), Some(file)) = (purpose, file) else {
            return error(
                StatusCode::BAD_REQUEST,
                "`purpose` and `file` are required",
                Some("file"),
            );
        };
        let name = file.filename.clone().unwrap_or_default();
        ok(&self.store_file(&purpose, &name, Bytes::from(file.data.clone())))
    }

    fn create(&self, body: &[u8]) -> Answer {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return error(StatusCode::BAD_REQUEST, "the body is not JSON", None);
        };
        let input = v["input_file_id"].as_str().unwrap_or_default().to_string();
        let lines = match lock(&self.files).get(&input) {
            Some(f) => String::from_utf8_lossy(&f.data)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count(),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("No such File object: {input}"),
                    Some("input_file_id"),
                )
            }
        };
        let created = now();
        let object = json!({"id": self.id("batch_"), "object": "batch", "endpoint": v["endpoint"],
            "errors": null, "input_file_id": input, "completion_window": v["completion_window"],
            "status": "validating", "output_file_id": null, "error_file_id": null,
            "created_at": created, "in_progress_at": null, "expires_at": created + 86_400,
            "finalizing_at": null, "completed_at": null, "failed_at": null, "expired_at": null,
            "cancelling_at": null, "cancelled_at": null,
            "request_counts": {"total": lines, "completed": 0, "failed": 0},
            "metadata": v.get("metadata").cloned().unwrap_or(Value::Null)});
        let outcome = *lock(&self.outcome);
        lock(&self.batches).push(FakeBatch {
            object: object.clone(),
            polls: 0,
            outcome,
        });
        ok(&object)
    }

    fn list(&self) -> Answer {
        let batches = lock(&self.batches);
        let data: Vec<Value> = batches.iter().rev().map(|b| b.object.clone()).collect();
        ok(
            &json!({"object": "list", "first_id": data.first().map(|b| b["id"].clone()),
            "last_id": data.last().map(|b| b["id"].clone()), "has_more": false, "data": data}),
        )
    }

    fn cancel(&self, id: &str) -> Answer {
        let mut batches = lock(&self.batches);
        let Some(b) = batches.iter_mut().find(|b| b.object["id"] == id) else {
            return error(
                StatusCode::NOT_FOUND,
                &format!("No such Batch object: {id}"),
                Some("batch_id"),
            );
        };
        if matches!(
            b.object["status"].as_str(),
            Some("validating" | "in_progress")
        ) {
            b.object["status"] = json!("cancelling");
            b.object["cancelling_at"] = json!(now());
        }
        ok(&b.object)
    }

    fn poll(&self, id: &str) -> Answer {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let mut batches = lock(&self.batches);
        let Some(b) = batches.iter_mut().find(|b| b.object["id"] == id) else {
            return error(
                StatusCode::NOT_FOUND,
                &format!("No such Batch object: {id}"),
                Some("batch_id"),
            );
        };
        b.polls += 1;
        let status = b.object["status"].as_str().unwrap_or_default().to_string();
        match status.as_str() {
            "cancelling" => {
                b.object["status"] = json!("cancelled");
                b.object["cancelled_at"] = json!(now());
            }
            "validating" | "in_progress" if b.polls < b.outcome.after() => {
                b.object["status"] = json!("in_progress");
                if b.object["in_progress_at"].is_null() {
                    b.object["in_progress_at"] = json!(now());
                }
            }
            "validating" | "in_progress" => {
                let input = b.object["input_file_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let data = lock(&self.files).get(&input).map(|f| f.data.clone());
                let mut object = b.object.clone();
                self.end(&mut object, b.outcome, &data.unwrap_or_default());
                b.object = object;
            }
            _ => {}
        }
        ok(&b.object)
    }

    /// Ends batch `object` as `outcome` says, its lines answered from `input`.
    fn end(&self, object: &mut Value, outcome: BatchOutcome, input: &[u8]) {
        let t = now();
        if object["in_progress_at"].is_null() {
            object["in_progress_at"] = json!(t);
        }
        if let BatchOutcome::Fail { .. } = outcome {
            object["status"] = json!("failed");
            object["failed_at"] = json!(t);
            object["errors"] = json!({"object": "list", "data": [{"code": "server_error",
                "message": "The fake batch failed.", "param": null, "line": null}]});
            return;
        }
        let text = String::from_utf8_lossy(input);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let answered = match outcome {
            BatchOutcome::Expire { .. } => lines.len() / 2,
            _ => lines.len(),
        };
        let (mut out, mut errors, mut completed) = (String::new(), String::new(), 0u64);
        for (k, line) in lines.iter().enumerate() {
            let (ok, text) = if k < answered {
                self.answer(line)
            } else {
                let v: Value = serde_json::from_str(line).unwrap_or_default();
                (false, json!({"id": self.id("batch_req_"), "custom_id": v["custom_id"], "response": null,
                    "error": {"code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired."}}).to_string())
            };
            let to = if ok { &mut out } else { &mut errors };
            to.push_str(&text);
            to.push('\n');
            completed += u64::from(ok);
        }
        let file = |data: String, kind: &str| {
            (!data.is_empty()).then(|| {
                self.store_file("batch_output", &format!("{kind}.jsonl"), Bytes::from(data))["id"]
                    .clone()
            })
        };
        object["output_file_id"] = file(out, "output").unwrap_or(Value::Null);
        object["error_file_id"] = file(errors, "errors").unwrap_or(Value::Null);
        object["request_counts"] = json!({"total": lines.len(), "completed": completed,
            "failed": lines.len() as u64 - completed});
        object["finalizing_at"] = json!(t);
        let (status, at) = match outcome {
            BatchOutcome::Expire { .. } => ("expired", "expired_at"),
            _ => ("completed", "completed_at"),
        };
        object["status"] = json!(status);
        object[at] = json!(t);
    }

    /// The output line of one input line: whether it succeeded, and the line.
    fn answer(&self, line: &str) -> (bool, String) {
        let v: Value = serde_json::from_str(line).unwrap_or_default();
        let body = &v["body"];
        let request_id = match body["x_fake"]["request_id"].as_str() {
            Some(given) => given.to_string(),
            None => self.id("req_"),
        };
        let failed = body["x_fake"]["status"].as_u64().filter(|s| *s >= 400);
        let (status, answer) = match (failed, v["url"].as_str()) {
            (Some(s), _) => (
                s,
                json!({"error": {"message": format!("fake upstream error {s}"),
                "type": responses::error_type_for(s as u16), "param": null, "code": null}}),
            ),
            (None, Some("/v1/chat/completions")) => {
                let model = body["model"].as_str().unwrap_or(responses::FAKE_MODEL_ID);
                let b = responses::chat_completion(
                    &self.id("chatcmpl-"),
                    now(),
                    model,
                    responses::DEFAULT_CONTENT,
                    None,
                    None,
                );
                (200, serde_json::from_slice(&b).unwrap_or_default())
            }
            (None, Some("/v1/embeddings")) => match responses::embeddings(body) {
                Ok(b) => (200, serde_json::from_slice(&b).unwrap_or_default()),
                Err(m) => (
                    400,
                    json!({"error": {"message": m, "type": "invalid_request_error"}}),
                ),
            },
            (None, url) => (
                400,
                json!({"error": {"message": format!("the fake cannot answer {url:?} in a batch"),
                "type": "invalid_request_error"}}),
            ),
        };
        let out = json!({"id": self.id("batch_req_"), "custom_id": v["custom_id"],
            "response": {"status_code": status, "request_id": request_id, "body": answer}, "error": null});
        (status == 200, out.to_string())
    }
}
