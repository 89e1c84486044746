//! Samples in SQLite (`samples.sqlite` in the data directory), on a thread of their own.

use super::types::{Sample, SampleQuery, StoredSample};
use crate::sql_int::{from_sql, to_sql};
use crate::sqlite_worker::SqliteWorker;
use crate::StoreError;
use bytes::Bytes;
use rusqlite::{params, Row};
use std::future::Future;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT,
    deployment TEXT,
    canary INTEGER NOT NULL,
    status INTEGER NOT NULL,
    request BLOB NOT NULL,
    response BLOB
);
CREATE INDEX IF NOT EXISTS samples_expires ON samples (expires_ms);
CREATE INDEX IF NOT EXISTS samples_route ON samples (route, id);
CREATE INDEX IF NOT EXISTS samples_deployment ON samples (deployment, id);
CREATE INDEX IF NOT EXISTS samples_model ON samples (model, id);
CREATE INDEX IF NOT EXISTS samples_key ON samples (key_id, id);
CREATE INDEX IF NOT EXISTS samples_request ON samples (request_id);
";

/// The columns read back, in [`row`]'s order.
const COLUMNS: &str = "id, ts_ms, expires_ms, request_id, key_id, endpoint, model, route, \
                       deployment, canary, status, request, response";

/// The SQLite store of samples. Cheap to clone; the last clone dropped stops its thread.
#[derive(Debug, Clone)]
pub struct SqliteSamples {
    worker: SqliteWorker,
}

impl SqliteSamples {
    /// Opens (or creates) the file at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let worker = SqliteWorker::open(path, SCHEMA, "samples", "samples store")?;
        Ok(Self { worker })
    }

    /// Stores `s`, then, with `purge_before`, deletes the samples expired by then.
    /// Started at once.
    pub fn put(
        &self,
        s: Sample,
        purge_before: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.worker.run(move |conn| {
            conn.execute(
                "INSERT INTO samples (ts_ms, expires_ms, request_id, key_id, endpoint, model,
                 route, deployment, canary, status, request, response)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    to_sql(s.ts_ms),
                    to_sql(s.expires_ms),
                    s.request_id,
                    s.key_id,
                    s.endpoint,
                    s.model,
                    s.route,
                    s.deployment,
                    s.canary,
                    s.status,
                    &s.request[..],
                    s.response.as_deref(),
                ],
            )?;
            if let Some(now) = purge_before {
                conn.execute(
                    "DELETE FROM samples WHERE expires_ms <= ?1",
                    params![to_sql(now)],
                )?;
            }
            Ok(())
        })
    }

    /// Samples matching `q`, newest first.
    pub async fn list(&self, q: &SampleQuery) -> Result<Vec<StoredSample>, StoreError> {
        let (conditions, values) = q.conditions(|i| format!("?{i}"));
        self.worker
            .run(move |conn| {
                let sql = format!("SELECT {COLUMNS} FROM samples {conditions}");
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Deletes every sample expired at `now_ms`; how many.
    pub async fn purge(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.worker
            .run(move |conn| {
                let n = conn.execute(
                    "DELETE FROM samples WHERE expires_ms <= ?1",
                    params![to_sql(now_ms)],
                )?;
                Ok(n as u64)
            })
            .await
    }
}

/// A row of [`COLUMNS`].
fn row(r: &Row<'_>) -> rusqlite::Result<StoredSample> {
    Ok(StoredSample {
        id: from_sql(r.get(0)?),
        sample: Sample {
            ts_ms: from_sql(r.get(1)?),
            expires_ms: from_sql(r.get(2)?),
            request_id: r.get(3)?,
            key_id: r.get(4)?,
            endpoint: r.get(5)?,
            model: r.get(6)?,
            route: r.get(7)?,
            deployment: r.get(8)?,
            canary: r.get(9)?,
            status: r.get(10)?,
            request: Bytes::from(r.get::<_, Vec<u8>>(11)?),
            response: r.get::<_, Option<Vec<u8>>>(12)?.map(Bytes::from),
        },
    })
}
