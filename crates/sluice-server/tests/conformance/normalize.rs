//! What varies between runs, made stable for the goldens: ids with random or time-based
//! parts (`resp_` and 32 hex digits, `chatcmpl-anthropic-1733300000`) and timestamps.
//!
//! Every maximal run of at least 8 hex digits (with at least one decimal digit) inside a
//! string becomes `<N>`, N numbered by first appearance within one answer (a whole body, or
//! a stream), so ids that must be equal (a response's `id` and its items' ids, a stream's
//! chunk ids) stay visibly equal and ids that must differ stay different. `created` and `created_at`
//! numbers become 0.

use serde_json::Value;

/// The numbering of random runs over one transcript.
#[derive(Default)]
pub struct Ids {
    seen: Vec<String>,
}

impl Ids {
    fn number(&mut self, run: &str) -> usize {
        match self.seen.iter().position(|s| s == run) {
            Some(i) => i + 1,
            None => {
                self.seen.push(run.to_owned());
                self.seen.len()
            }
        }
    }

    /// `s` with its random runs replaced.
    pub fn string(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut run = String::new();
        let flush = |run: &mut String, out: &mut String, ids: &mut Self| {
            let random = run.len() >= 8
                && run.chars().all(|c| c.is_ascii_hexdigit())
                && run.chars().any(|c| c.is_ascii_digit());
            if random {
                out.push_str(&format!("<{}>", ids.number(run)));
            } else {
                out.push_str(run);
            }
            run.clear();
        };
        for c in s.chars() {
            if c.is_ascii_alphanumeric() {
                run.push(c);
            } else {
                flush(&mut run, &mut out, self);
                out.push(c);
            }
        }
        flush(&mut run, &mut out, self);
        out
    }

    /// `v` with its random runs replaced and its timestamps zeroed.
    pub fn value(&mut self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.string(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    if matches!(k.as_str(), "created" | "created_at") && item.is_number() {
                        *item = Value::from(0);
                    } else {
                        self.value(item);
                    }
                }
            }
            _ => {}
        }
    }

    /// A JSON text normalised and written compactly (or as it was, when it is not JSON).
    pub fn json_line(&mut self, text: &str) -> String {
        match serde_json::from_str::<Value>(text) {
            Ok(mut v) => {
                self.value(&mut v);
                v.to_string()
            }
            Err(_) => self.string(text),
        }
    }

    /// A JSON text normalised and pretty-printed.
    pub fn json_pretty(&mut self, text: &[u8]) -> String {
        match serde_json::from_slice::<Value>(text) {
            Ok(mut v) => {
                self.value(&mut v);
                serde_json::to_string_pretty(&v).unwrap()
            }
            Err(_) => self.string(&String::from_utf8_lossy(text)),
        }
    }
}

#[test]
fn runs_are_numbered_consistently() {
    let mut ids = Ids::default();
    assert_eq!(
        ids.string("msg_0123456789abcdef_0 fc_0123456789abcdef_1 Overloaded chatcmpl-up1"),
        "msg_<1>_0 fc_<1>_1 Overloaded chatcmpl-up1"
    );
    assert_eq!(ids.string("chatcmpl-x-1733300000"), "chatcmpl-x-<2>");
    let mut v = serde_json::json!({"created": 17, "id": "resp_aaaa1111bbbb2222"});
    ids.value(&mut v);
    assert_eq!(v, serde_json::json!({"created": 0, "id": "resp_<3>"}));
}
