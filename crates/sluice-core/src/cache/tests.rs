use super::*;
use serde_json::json;

/// A small deterministic generator for the property tests.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn word(&mut self) -> String {
        const WORDS: &[&str] = &["alpha", "beta", "ünï", "q\"d", "new\nline", "42", "🚀"];
        WORDS[self.below(WORDS.len())].to_string()
    }
    /// A random value of bounded depth.
    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth == 0 { 4 } else { 6 }) {
            0 => json!(self.word()),
            1 => json!(self.below(1000)),
            2 => json!(self.below(100) as f64 / 8.0),
            3 => json!(self.below(2) == 0),
            4 => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
            _ => {
                let mut m = Map::new();
                for i in 0..self.below(4) {
                    m.insert(format!("k{i}{}", self.word()), self.value(depth - 1));
                }
                Value::Object(m)
            }
        }
    }
    /// A random chat request.
    fn request(&mut self) -> Map<String, Value> {
        let mut m = Map::new();
        let messages: Vec<Value> = (0..1 + self.below(4))
            .map(|i| {
                let role = ["system", "user", "assistant"][i % 3];
                json!({"role": role, "content": self.word()})
            })
            .collect();
        m.insert("messages".into(), Value::Array(messages));
        m.insert("temperature".into(), json!(self.below(3)));
        if self.below(2) == 0 {
            m.insert("seed".into(), json!(self.below(1 << 20)));
        }
        if self.below(2) == 0 {
            m.insert("tools".into(), self.value(3));
        }
        if self.below(2) == 0 {
            m.insert("max_tokens".into(), json!(1 + self.below(500)));
        }
        m.insert("x_extra".into(), self.value(3));
        m
    }
}

/// Writes `v` as JSON text with every object's keys in a random order and, sometimes,
/// integral numbers written as floats.
fn write_shuffled(g: &mut Gen, v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, g.below(i + 1));
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_shuffled(g, v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_shuffled(g, v, out);
            }
            out.push(']');
        }
        Value::Number(n) if n.is_u64() && g.below(2) == 0 => {
            out.push_str(&format!("{}.0", n));
        }
        other => out.push_str(&other.to_string()),
    }
}

fn key(body: &str) -> RequestKey {
    request_key(Operation::Chat, "gpt-4o-mini", None, body.as_bytes()).expect("an object")
}

#[test]
fn key_ignores_field_order_number_form_and_irrelevant_fields() {
    let mut g = Gen(7);
    for _ in 0..500 {
        let req = g.request();
        let mut base = req.clone();
        base.insert("model".into(), json!("gpt-4o-mini"));
        let mut a = String::new();
        write_shuffled(&mut g, &Value::Object(base.clone()), &mut a);
        // The same request with irrelevant fields, another order, the stream flag.
        let mut noisy = base.clone();
        noisy.insert("stream".into(), json!(g.below(2) == 0));
        noisy.insert("stream_options".into(), json!({"include_usage": true}));
        noisy.insert("user".into(), json!(g.word()));
        noisy.insert("metadata".into(), g.value(2));
        noisy.insert("model".into(), json!("an-alias"));
        let mut b = String::new();
        write_shuffled(&mut g, &Value::Object(noisy), &mut b);
        let (ka, kb) = (key(&a), key(&b));
        assert_eq!(ka.key, kb.key, "{a}\n{b}");
        assert_eq!(ka.deterministic, kb.deterministic);
    }
}

#[test]
fn key_changes_with_anything_that_changes_the_answer() {
    let mut g = Gen(11);
    for _ in 0..500 {
        let req = g.request();
        let base = key(&Value::Object(req.clone()).to_string());
        // Another message content.
        let mut other = req.clone();
        if let Some(Value::Array(ms)) = other.get_mut("messages") {
            ms[0]["content"] = json!(format!("{} more", ms[0]["content"]));
        }
        assert_ne!(base.key, key(&Value::Object(other).to_string()).key);
        // Another sampling parameter.
        let mut other = req.clone();
        other.insert("top_p".into(), json!(0.5));
        assert_ne!(base.key, key(&Value::Object(other).to_string()).key);
        // Another target, another endpoint.
        let text = Value::Object(req.clone()).to_string();
        let other_target = request_key(Operation::Chat, "gpt-4o", None, text.as_bytes());
        assert_ne!(base.key, other_target.expect("object").key);
        let other_endpoint =
            request_key(Operation::Embeddings, "gpt-4o-mini", None, text.as_bytes());
        assert_ne!(base.key, other_endpoint.expect("object").key);
    }
}

#[test]
fn numbers_of_one_value_are_one_number() {
    let a = key(r#"{"messages":[],"temperature":0}"#);
    for t in ["0.0", "-0.0", "0e0", "0.000"] {
        let b = key(&format!(r#"{{"messages":[],"temperature":{t}}}"#));
        assert_eq!(a.key, b.key, "temperature {t}");
    }
    let c = key(r#"{"messages":[],"temperature":0.5}"#);
    assert_ne!(a.key, c.key);
    // Large seeds keep every digit.
    let s1 = key(r#"{"messages":[],"seed":9007199254740993}"#);
    let s2 = key(r#"{"messages":[],"seed":9007199254740992}"#);
    assert_ne!(s1.key, s2.key);
}

#[test]
fn determinism() {
    assert!(key(r#"{"messages":[],"temperature":0}"#).deterministic);
    assert!(key(r#"{"messages":[],"temperature":0.0}"#).deterministic);
    assert!(key(r#"{"messages":[],"temperature":0.7,"seed":1}"#).deterministic);
    assert!(!key(r#"{"messages":[],"temperature":0.7}"#).deterministic);
    assert!(!key(r#"{"messages":[]}"#).deterministic);
    assert!(!key(r#"{"messages":[],"seed":null}"#).deterministic);
    let e = request_key(Operation::Embeddings, "e", None, br#"{"input":"x"}"#).expect("object");
    assert!(e.deterministic);
    assert!(request_key(Operation::Chat, "m", None, b"[1]").is_err());
    assert!(request_key(Operation::Chat, "m", None, b"{").is_err());
}

#[test]
fn legacy_completions_are_keyed_like_chat_but_apart_from_it() {
    let completion = |body: &str| {
        request_key(Operation::Completion, "m", None, body.as_bytes()).expect("an object")
    };
    let body = r#"{"prompt":"Once","temperature":0}"#;
    assert!(completion(body).deterministic);
    assert!(completion(r#"{"prompt":"Once","seed":4}"#).deterministic);
    assert!(!completion(r#"{"prompt":"Once"}"#).deterministic);
    let chat = request_key(Operation::Chat, "m", None, body.as_bytes()).expect("an object");
    assert_ne!(
        completion(body).key,
        chat.key,
        "one body, two endpoints: two entries"
    );
}

#[test]
fn directives_parse() {
    assert_eq!(Directives::parse(""), Ok(Directives::default()));
    let d = Directives::parse("no-cache, TTL=60").expect("valid");
    assert!(d.no_cache && !d.no_store);
    assert_eq!(d.ttl, Some(Duration::from_secs(60)));
    assert!(Directives::parse("no-store").expect("valid").no_store);
    for bad in ["ttl=0", "ttl=x", "ttl=-1", "forever", "no-cache;no-store"] {
        assert!(Directives::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn decisions() {
    let on = CachePolicy {
        enabled: true,
        ..CachePolicy::default()
    };
    let none = Directives::default();
    assert_eq!(
        decide(&CachePolicy::default(), &none, (true, true)),
        Decision::Bypass(Bypass::Disabled)
    );
    assert_eq!(
        decide(&on, &none, (false, true)),
        Decision::Bypass(Bypass::Nondeterministic)
    );
    let all = CachePolicy {
        nondeterministic: true,
        ..on.clone()
    };
    assert!(matches!(
        decide(&all, &none, (false, false)),
        Decision::Use { .. }
    ));
    // A semantic stage's sampled chat: chat requests that sample are cached, others not.
    let chat_only = CachePolicy {
        sampled_chat: true,
        ..on.clone()
    };
    assert!(matches!(
        decide(&chat_only, &none, (false, true)),
        Decision::Use { .. }
    ));
    assert_eq!(
        decide(&chat_only, &none, (false, false)),
        Decision::Bypass(Bypass::Nondeterministic)
    );
    assert_eq!(
        decide(&on, &none, (true, true)),
        Decision::Use {
            lookup: true,
            store: true,
            coalesce: true,
            ttl: crate::config::DEFAULT_CACHE_TTL,
        }
    );
    let no_cache = Directives::parse("no-cache,ttl=5").expect("valid");
    assert_eq!(
        decide(&on, &no_cache, (true, true)),
        Decision::Use {
            lookup: false,
            store: true,
            coalesce: false,
            ttl: Duration::from_secs(5),
        }
    );
    let neither = Directives::parse("no-cache,no-store").expect("valid");
    assert_eq!(
        decide(&on, &neither, (true, true)),
        Decision::Bypass(Bypass::Directives)
    );
}

#[test]
fn two_keys_never_share_an_entry() {
    let body = br#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
    let key = |scope| {
        request_key(Operation::Chat, "m", scope, body)
            .expect("an object")
            .key
    };
    assert_ne!(key(Some("key-a")), key(Some("key-b")));
    assert_ne!(key(Some("key-a")), key(None));
    assert_eq!(key(Some("key-a")), key(Some("key-a")));
}
