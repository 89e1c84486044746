//! What a sample is, and how they are asked for.

use crate::sql_int::to_sql;
use bytes::Bytes;
use std::fmt::Write;

/// Most samples one query answers.
pub const MAX_PAGE: u32 = 100;

/// One request's payloads, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When the request ended (Unix ms).
    pub ts_ms: u64,
    /// When the sample is deleted (Unix ms).
    pub expires_ms: u64,
    /// `x-request-id`.
    pub request_id: String,
    /// The virtual key's id, if one was used.
    pub key_id: Option<String>,
    /// The operation (`chat`, `embeddings`, ...).
    pub endpoint: String,
    /// The model or route the client named.
    pub model: String,
    /// The route, when the client named one.
    pub route: Option<String>,
    /// The deployment that answered (or was tried last).
    pub deployment: Option<String>,
    /// That deployment was the route's canary candidate.
    pub canary: bool,
    /// The status the client got.
    pub status: u16,
    /// The request body, as sent upstream (redacted).
    pub request: Bytes,
    /// The answer's body; `None` when it was not kept (a stream).
    pub response: Option<Bytes>,
}

/// A kept sample and its id (ids grow: newer samples have larger ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSample {
    /// Its id.
    pub id: u64,
    /// The sample.
    pub sample: Sample,
}

/// Which samples to list: every filter that is set must match; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleQuery {
    /// Only this route's.
    pub route: Option<String>,
    /// Only requests naming this model (or route).
    pub model: Option<String>,
    /// Only answers of this deployment.
    pub deployment: Option<String>,
    /// Only this key's.
    pub key_id: Option<String>,
    /// Only this request's (its `x-request-id`).
    pub request_id: Option<String>,
    /// Only samples older than this id (the page cursor).
    pub before: Option<u64>,
    /// Unexpired at this time (Unix ms).
    pub now_ms: u64,
    /// At most this many ([`MAX_PAGE`] at most).
    pub limit: u32,
}

impl SampleQuery {
    /// The `SELECT`'s `WHERE`, `ORDER BY` and `LIMIT`: only the filters that are set, so
    /// that each can use its index; their values bound to placeholders `mark(1)`,
    /// `mark(2)`, ... and returned in that order (the numbers, which are ours, are written
    /// in).
    pub(crate) fn conditions(&self, mark: impl Fn(usize) -> String) -> (String, Vec<String>) {
        let mut sql = format!("WHERE expires_ms > {}", to_sql(self.now_ms));
        let mut values = Vec::new();
        let filters = [
            ("route", &self.route),
            ("model", &self.model),
            ("deployment", &self.deployment),
            ("key_id", &self.key_id),
            ("request_id", &self.request_id),
        ];
        for (column, value) in filters {
            if let Some(v) = value {
                values.push(v.clone());
                let _ = write!(sql, " AND {column} = {}", mark(values.len()));
            }
        }
        if let Some(before) = self.before {
            let _ = write!(sql, " AND id < {}", to_sql(before));
        }
        let _ = write!(sql, " ORDER BY id DESC LIMIT {}", self.limit.min(MAX_PAGE));
        (sql, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_set_filters_are_asked_for() {
        let q = SampleQuery {
            deployment: Some("c".into()),
            request_id: Some("req-1".into()),
            before: Some(9),
            now_ms: 5,
            limit: 500,
            ..SampleQuery::default()
        };
        let (sql, values) = q.conditions(|i| format!("${i}"));
        assert_eq!(
            sql,
            "WHERE expires_ms > 5 AND deployment = $1 AND request_id = $2 AND id < 9 \
             ORDER BY id DESC LIMIT 100"
        );
        assert_eq!(values, ["c", "req-1"]);
    }
}
