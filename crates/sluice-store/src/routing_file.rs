//! The routing state of an embedded gateway (no `storage.redis_url`): each route's canary
//! rollout, in `routing.sqlite` in the data directory, so that a restarted gateway resumes a
//! rollout at its stage and a rolled-back canary stays rolled back (with Redis the fleet's
//! state lives there instead). Gateways sharing the directory share their rollouts too.
//!
//! One row per rollout, `canaries(key, state)`; the state is text the caller encodes.
//! [`RoutingFile::exchange`] reads a rollout's state, lets the caller decide what to keep and
//! writes it back when it changed, in one transaction. Its calls block on SQLite: callers on
//! an async runtime make them off its threads (`spawn_blocking`).

use crate::sqlite_file::{open_wal, retry_busy};
use crate::StoreError;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "routing.sqlite";

/// `routing.sqlite`, open.
#[derive(Debug)]
pub struct RoutingFile {
    conn: Mutex<Connection>,
}

impl RoutingFile {
    /// Opens (or creates) `routing.sqlite` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        let conn = retry_busy(|| {
            let conn = open_wal(&path, "routing state")?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS canaries (key TEXT PRIMARY KEY, state TEXT NOT NULL)",
            )?;
            Ok(conn)
        })?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// In one transaction: reads the state stored under `key` (if any), keeps what `keep`
    /// returns for it (written when it differs) and returns that.
    pub fn exchange(
        &self,
        key: &str,
        keep: impl FnOnce(Option<&str>) -> String,
    ) -> Result<String, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<String> = tx
            .query_row("SELECT state FROM canaries WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        let kept = keep(stored.as_deref());
        if stored.as_deref() != Some(kept.as_str()) {
            tx.execute(
                "INSERT INTO canaries (key, state) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET state = excluded.state",
                params![key, kept],
            )?;
        }
        tx.commit()?;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_the_caller_chose_across_openings() {
        let dir = std::env::temp_dir().join(format!(
            "sluice-routing-file-{}-{}",
            std::process::id(),
            crate::unix_now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = RoutingFile::open(&dir).unwrap();
        let kept = file.exchange("r", |stored| {
            assert_eq!(stored, None);
            "1 0".into()
        });
        assert_eq!(kept.unwrap(), "1 0");
        drop(file);
        let file = RoutingFile::open(&dir).unwrap();
        let kept = file.exchange("r", |stored| stored.unwrap_or("?").to_string());
        assert_eq!(kept.unwrap(), "1 0");
        let kept = file.exchange("r", |_| "2 -".into()).unwrap();
        assert_eq!(kept, "2 -");
        assert_eq!(
            file.exchange("other", |s| s.unwrap_or("none").into())
                .unwrap(),
            "none"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
