//! Stored Responses API conversations, for `previous_response_id`: each response's chat
//! messages (its input, the conversation before it, and its answer), by response id and
//! owner (the virtual key that made it). Kept in the gateway's memory: at most
//! [`CAPACITY`] responses (the oldest go first), each for [`RETENTION`]; a restart or
//! another replica does not know them.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Most responses kept.
pub const CAPACITY: usize = 10_000;

/// How long a response is kept.
pub const RETENTION: Duration = Duration::from_secs(60 * 60);

/// What a `previous_response_id` finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The conversation so far: a JSON array of chat messages.
    Found(Bytes),
    /// The response was made with `store: false`.
    NotStored,
    /// No such response for this owner (unknown, expired, or another key's).
    Missing,
}

struct Kept {
    owner: Option<String>,
    messages: Option<Bytes>,
    at: Instant,
}

#[derive(Default)]
struct Store {
    by_id: HashMap<String, Kept>,
    order: VecDeque<String>,
}

static STORE: LazyLock<Mutex<Store>> = LazyLock::new(Mutex::default);

/// Keeps response `id` of `owner`: its conversation, or `None` for `store: false`.
pub fn keep(id: String, owner: Option<&str>, messages: Option<Vec<u8>>) {
    let Ok(mut s) = STORE.lock() else {
        return;
    };
    while s.order.len() >= CAPACITY {
        if let Some(old) = s.order.pop_front() {
            s.by_id.remove(&old);
        }
    }
    s.order.push_back(id.clone());
    let kept = Kept {
        owner: owner.map(str::to_owned),
        messages: messages.map(Bytes::from),
        at: Instant::now(),
    };
    s.by_id.insert(id, kept);
}

/// The conversation of response `id`, as `owner` may see it.
pub fn find(id: &str, owner: Option<&str>) -> Lookup {
    let Ok(s) = STORE.lock() else {
        return Lookup::Missing;
    };
    match s.by_id.get(id) {
        Some(k) if k.owner.as_deref() == owner && k.at.elapsed() < RETENTION => match &k.messages {
            Some(m) => Lookup::Found(m.clone()),
            None => Lookup::NotStored,
        },
        _ => Lookup::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_found_by_its_owner_only() {
        keep("resp_t1".into(), Some("key_a"), Some(b"[1]".to_vec()));
        keep("resp_t2".into(), None, None);
        assert_eq!(
            find("resp_t1", Some("key_a")),
            Lookup::Found(Bytes::from_static(b"[1]"))
        );
        assert_eq!(find("resp_t1", Some("key_b")), Lookup::Missing);
        assert_eq!(find("resp_t1", None), Lookup::Missing);
        assert_eq!(find("resp_t2", None), Lookup::NotStored);
        assert_eq!(find("resp_unknown", None), Lookup::Missing);
    }
}
