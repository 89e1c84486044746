//! Samples in PostgreSQL (the ledger's database, `storage.database_url`), shared by
//! replicas: table `samples`, created if absent.

use super::types::{Sample, SampleQuery, StoredSample};
use crate::pg_worker::{PgWorker, Schema};
use crate::sql_int::{from_sql, to_sql};
use crate::StoreError;
use bytes::Bytes;
use std::future::Future;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

const SCHEMA: Schema = Schema {
    name: "samples",
    ddl: "
CREATE TABLE IF NOT EXISTS samples (
    id BIGSERIAL PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT,
    deployment TEXT,
    canary BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    request BYTEA NOT NULL,
    response BYTEA
);
CREATE INDEX IF NOT EXISTS samples_expires ON samples (expires_ms);
CREATE INDEX IF NOT EXISTS samples_route ON samples (route, id);
CREATE INDEX IF NOT EXISTS samples_deployment ON samples (deployment, id);
CREATE INDEX IF NOT EXISTS samples_model ON samples (model, id);
CREATE INDEX IF NOT EXISTS samples_key ON samples (key_id, id);
CREATE INDEX IF NOT EXISTS samples_request ON samples (request_id);
",
    // "sluice" + 6.
    lock: 0x736c_7569_6365_0006,
};

/// The columns read back, in [`sample_from_row`]'s order.
const COLUMNS: &str = "id, ts_ms, expires_ms, request_id, key_id, endpoint, model, route, \
                       deployment, canary, status, request, response";

/// The PostgreSQL store of samples. Cheap to clone; the last clone dropped stops its
/// thread.
#[derive(Debug, Clone)]
pub struct PgSamples {
    worker: PgWorker,
}

impl PgSamples {
    /// Connects to `url` and creates the table if absent; blocks until connected, or failed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            worker: PgWorker::open(url, SCHEMA)?,
        })
    }

    /// See [`super::sqlite::SqliteSamples::put`].
    pub fn put(
        &self,
        s: Sample,
        purge_before: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.worker.run(move |c| async move {
            c.execute(
                "INSERT INTO samples (ts_ms, expires_ms, request_id, key_id, endpoint, model,
                 route, deployment, canary, status, request, response)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &to_sql(s.ts_ms),
                    &to_sql(s.expires_ms),
                    &s.request_id,
                    &s.key_id,
                    &s.endpoint,
                    &s.model,
                    &s.route,
                    &s.deployment,
                    &s.canary,
                    &i32::from(s.status),
                    &&s.request[..],
                    &s.response.as_deref(),
                ],
            )
            .await?;
            if let Some(now) = purge_before {
                c.execute(
                    "DELETE FROM samples WHERE expires_ms <= $1",
                    &[&to_sql(now)],
                )
                .await?;
            }
            Ok(())
        })
    }

    /// Samples matching `q`, newest first.
    pub async fn list(&self, q: &SampleQuery) -> Result<Vec<StoredSample>, StoreError> {
        let (conditions, values) = q.conditions(|i| format!("${i}"));
        let rows = self
            .worker
            .run(move |c| async move {
                let sql = format!("SELECT {COLUMNS} FROM samples {conditions}");
                let params: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                c.query(&sql, &params).await
            })
            .await?;
        rows.iter().map(sample_from_row).collect()
    }

    /// Deletes every sample expired at `now_ms`; how many.
    pub async fn purge(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.worker
            .run(move |c| async move {
                c.execute(
                    "DELETE FROM samples WHERE expires_ms <= $1",
                    &[&to_sql(now_ms)],
                )
                .await
            })
            .await
    }
}

/// A row of [`COLUMNS`].
fn sample_from_row(r: &Row) -> Result<StoredSample, StoreError> {
    let status: i32 = r.try_get(10)?;
    Ok(StoredSample {
        id: from_sql(r.try_get(0)?),
        sample: Sample {
            ts_ms: from_sql(r.try_get(1)?),
            expires_ms: from_sql(r.try_get(2)?),
            request_id: r.try_get(3)?,
            key_id: r.try_get(4)?,
            endpoint: r.try_get(5)?,
            model: r.try_get(6)?,
            route: r.try_get(7)?,
            deployment: r.try_get(8)?,
            canary: r.try_get(9)?,
            status: u16::try_from(status).unwrap_or(0),
            request: Bytes::from(r.try_get::<_, Vec<u8>>(11)?),
            response: r.try_get::<_, Option<Vec<u8>>>(12)?.map(Bytes::from),
        },
    })
}
