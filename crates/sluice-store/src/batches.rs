//! The Batch API's store (`/v1/batches`): batches, and the results of their lines until the
//! output files are written.
//!
//! Where: in the files' index, beside the files a batch reads and writes: the tables
//! `batches` and `batch_results` of `files.sqlite` (embedded) or of the ledger's PostgreSQL
//! (replicas). A batch and its files are one state; a restart needs both, and nothing here
//! waits behind the spend log's batched writes.
//!
//! What a restart needs: the batch row (status, owner, endpoint, input file, times) and one
//! `batch_results` row per line that has ended, written as soon as it ends
//! ([`BatchStore::record`]: `(batch_id, line)` is the key, so a line is recorded once). A
//! runner resuming a batch skips every line with a row. Until a batch is final its counts
//! are counted from those rows; at the end they are kept in the batch's row and the rows
//! deleted.
//!
//! Who runs a batch: the gateway holding its lease ([`BatchStore::claim`], renewed while it
//! runs, released when it stops). A lease that ran out (a replica gone) lets another take the
//! batch over.
//!
//! A batch forwarded to a provider's own Batch API has a row in `batch_upstreams` (its
//! provider, the upstream's input file and batch ids, the upstream's counts while it runs:
//! [`Forward`]), so a restarted gateway polls it again rather than sending it twice.
//!
//! The files: this one (the operations), `types`, `sql` (one statement text for both
//! stores).

mod sql;
pub mod types;

pub use types::{
    Batch, BatchPage, BatchStatus, Forward, LineResult, NewBatch, Outcome, RequestCounts, Times,
    MAX_LIST_LIMIT, PREFIX,
};

use crate::files::{unix_now_s, FileIndex, Owner};
use crate::StoreError;
use sql::{Cell, Cells, Param};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The tables; `{seq}` is the store's auto-increment key.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches (
    seq {seq},
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    output_file_id TEXT,
    error_file_id TEXT,
    errors TEXT,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    in_progress_at BIGINT,
    expires_at BIGINT NOT NULL,
    finalizing_at BIGINT,
    completed_at BIGINT,
    failed_at BIGINT,
    expired_at BIGINT,
    cancelling_at BIGINT,
    cancelled_at BIGINT,
    total BIGINT NOT NULL DEFAULT 0,
    completed BIGINT,
    failed BIGINT,
    runner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_owner_seq ON batches (owner, seq);
CREATE INDEX IF NOT EXISTS batches_status ON batches (status);
CREATE TABLE IF NOT EXISTS batch_results (
    batch_id TEXT NOT NULL,
    line BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (batch_id, line)
);
CREATE TABLE IF NOT EXISTS batch_upstreams (
    batch_id TEXT NOT NULL PRIMARY KEY,
    provider TEXT NOT NULL,
    file_id TEXT,
    create_sent BIGINT NOT NULL DEFAULT 0,
    upstream_id TEXT,
    completed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    cancel_sent BIGINT NOT NULL DEFAULT 0
);
";

/// The advisory lock that serializes the tables' creation across replicas ("sluice" + 3).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365_0003;

/// The columns a [`Batch`] is read from, in [`batch`]'s order; the counts of a batch not yet
/// final are counted from its results, plus, for a forwarded batch, the upstream's counts
/// (zeroed when its results are collected).
const COLUMNS: &str = "id, owner, endpoint, input_file_id, completion_window, status,
    output_file_id, error_file_id, errors, metadata, created_at, in_progress_at, expires_at,
    finalizing_at, completed_at, failed_at, expired_at, cancelling_at, cancelled_at, total,
    COALESCE(completed, (SELECT count(*) FROM batch_results r
        WHERE r.batch_id = batches.id AND r.failed = 0)
        + COALESCE((SELECT u.completed FROM batch_upstreams u WHERE u.batch_id = batches.id), 0)),
    COALESCE(failed, (SELECT count(*) FROM batch_results r
        WHERE r.batch_id = batches.id AND r.failed = 1)
        + COALESCE((SELECT u.failed FROM batch_upstreams u WHERE u.batch_id = batches.id), 0))";

/// Batches and their lines' results. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BatchStore {
    index: FileIndex,
    schema: Arc<OnceCell<()>>,
}

// === impl BatchStore ===

impl BatchStore {
    /// The store in `index` (the files' own); its tables are created at first use.
    pub fn new(index: FileIndex) -> Self {
        Self {
            index,
            schema: Arc::default(),
        }
    }

    /// The index, its tables created.
    async fn ready(&self) -> Result<&FileIndex, StoreError> {
        self.schema
            .get_or_try_init(|| async {
                let text = match &self.index {
                    FileIndex::Sqlite(_) => {
                        SCHEMA.replace("{seq}", "INTEGER PRIMARY KEY AUTOINCREMENT")
                    }
                    FileIndex::Postgres(_) => format!(
                        "BEGIN; SET LOCAL client_min_messages = warning;
                         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
                         {} COMMIT;",
                        SCHEMA.replace("{seq}", "BIGSERIAL PRIMARY KEY")
                    ),
                };
                sql::script(&self.index, text).await
            })
            .await?;
        Ok(&self.index)
    }

    async fn execute(&self, sql: impl Into<String>, params: Vec<Param>) -> Result<u64, StoreError> {
        sql::execute(self.ready().await?, sql.into(), params).await
    }

    async fn batches(&self, filter: &str, params: Vec<Param>) -> Result<Vec<Batch>, StoreError> {
        let text = format!("SELECT {COLUMNS} FROM batches {filter}");
        let rows = sql::query(self.ready().await?, text, params).await?;
        rows.iter().map(batch).collect()
    }

    /// Stores a new batch (`validating`).
    pub async fn create(&self, new: NewBatch) -> Result<Batch, StoreError> {
        let id = crate::files::id::random_id(PREFIX)?;
        self.execute(
            "INSERT INTO batches (id, owner, endpoint, input_file_id, completion_window,
                 status, metadata, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, 'validating', $6, $7, $8)",
            vec![
                id.as_str().into(),
                new.owner.as_stored().into(),
                new.endpoint.into(),
                new.input_file_id.into(),
                new.completion_window.into(),
                new.metadata.into(),
                unix_now_s().into(),
                new.expires_at.into(),
            ],
        )
        .await?;
        self.get_any(&id).await?.ok_or_else(|| {
            StoreError::Protocol(format!("batch `{id}` is not there after its insert"))
        })
    }

    /// The batch `id` of `owner` (`None`: none, or another owner's).
    pub async fn get(&self, id: &str, owner: &Owner) -> Result<Option<Batch>, StoreError> {
        let params = vec![id.into(), owner.as_stored().into()];
        let found = self.batches("WHERE id = $1 AND owner = $2", params).await?;
        Ok(found.into_iter().next())
    }

    /// The batch `id`, whoever owns it (for its runner).
    pub async fn get_any(&self, id: &str) -> Result<Option<Batch>, StoreError> {
        let found = self.batches("WHERE id = $1", vec![id.into()]).await?;
        Ok(found.into_iter().next())
    }

    /// A page of `owner`'s batches, newest first, after the batch `after` (an unknown
    /// cursor gives an empty page).
    pub async fn list(
        &self,
        owner: &Owner,
        after: Option<&str>,
        limit: usize,
    ) -> Result<BatchPage, StoreError> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let mut params: Vec<Param> = vec![owner.as_stored().into(), (limit as u64 + 1).into()];
        let cursor = match after {
            Some(a) => {
                params.push(a.into());
                "AND seq < (SELECT seq FROM batches WHERE id = $3 AND owner = $1)"
            }
            None => "",
        };
        let filter = format!("WHERE owner = $1 {cursor} ORDER BY seq DESC LIMIT $2");
        let mut batches = self.batches(&filter, params).await?;
        let has_more = batches.len() > limit;
        batches.truncate(limit);
        Ok(BatchPage { batches, has_more })
    }

    /// Asks to cancel `owner`'s batch `id`: `validating` and `in_progress` become
    /// `cancelling` (the runner stops, then writes what it has). The batch as it is now.
    pub async fn request_cancel(
        &self,
        id: &str,
        owner: &Owner,
    ) -> Result<Option<Batch>, StoreError> {
        self.execute(
            "UPDATE batches SET status = 'cancelling', cancelling_at = $3,
                 lease_until = CASE WHEN runner IS NULL THEN 0 ELSE lease_until END
             WHERE id = $1 AND owner = $2 AND status IN ('validating', 'in_progress')",
            vec![id.into(), owner.as_stored().into(), unix_now_s().into()],
        )
        .await?;
        self.get(id, owner).await
    }

    /// Moves the batch from `from` to `to` (stamping `to`'s time); whether it moved.
    pub async fn transition(
        &self,
        id: &str,
        from: BatchStatus,
        to: BatchStatus,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE batches SET status = $4, {} = $3 WHERE id = $1 AND status = $2",
            to.at_column()
        );
        let params = vec![
            id.into(),
            from.as_str().into(),
            unix_now_s().into(),
            to.as_str().into(),
        ];
        Ok(self.execute(sql, params).await? > 0)
    }

    /// The input is read: `total` lines; `validating` becomes `in_progress`.
    pub async fn start(&self, id: &str, total: u64) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE batches SET status = 'in_progress', in_progress_at = $2, total = $3
                 WHERE id = $1 AND status = 'validating'",
                vec![id.into(), unix_now_s().into(), total.into()],
            )
            .await?;
        Ok(n > 0)
    }

    /// The batch cannot run: `failed`, with OpenAI's `errors` object (JSON text).
    pub async fn fail(&self, id: &str, errors: String) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batches SET status = 'failed', failed_at = $2, errors = $3 WHERE id = $1",
            vec![id.into(), unix_now_s().into(), errors.into()],
        )
        .await
        .map(drop)
    }

    /// The batch ends as `to` with its files written: its counts are kept in its row and
    /// its lines' results deleted.
    pub async fn finish(
        &self,
        id: &str,
        to: BatchStatus,
        output_file_id: Option<String>,
        error_file_id: Option<String>,
    ) -> Result<(), StoreError> {
        let Some(b) = self.get_any(id).await? else {
            return Ok(());
        };
        let sql = format!(
            "UPDATE batches SET status = $7, {} = $2, output_file_id = $3, error_file_id = $4,
                 completed = $5, failed = $6, runner = NULL WHERE id = $1",
            to.at_column()
        );
        self.execute(
            sql,
            vec![
                id.into(),
                unix_now_s().into(),
                output_file_id.into(),
                error_file_id.into(),
                b.counts.completed.into(),
                b.counts.failed.into(),
                to.as_str().into(),
            ],
        )
        .await?;
        self.execute(
            "DELETE FROM batch_results WHERE batch_id = $1",
            vec![id.into()],
        )
        .await
        .map(drop)
    }

    /// Records one line's result, once: `false` when the line had one already.
    pub async fn record(&self, batch_id: &str, result: LineResult) -> Result<bool, StoreError> {
        let failed = u64::from(result.outcome == Outcome::Failed);
        let n = self
            .execute(
                "INSERT INTO batch_results (batch_id, line, failed, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (batch_id, line) DO NOTHING",
                vec![
                    batch_id.into(),
                    result.line.into(),
                    failed.into(),
                    result.text.into(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    /// The lines of the batch that have a result, in order.
    pub async fn done_lines(&self, batch_id: &str) -> Result<Vec<u64>, StoreError> {
        let rows = sql::query(
            self.ready().await?,
            "SELECT line FROM batch_results WHERE batch_id = $1 ORDER BY line".into(),
            vec![batch_id.into()],
        )
        .await?;
        Ok(rows.iter().map(|r| cell(r, 0).uint()).collect())
    }

    /// Up to `limit` results of the batch after line `after` (from the first with `None`),
    /// in line order.
    pub async fn results(
        &self,
        batch_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LineResult>, StoreError> {
        let rows = sql::query(
            self.ready().await?,
            "SELECT line, failed, body FROM batch_results WHERE batch_id = $1 AND line >= $2
             ORDER BY line LIMIT $3"
                .into(),
            vec![
                batch_id.into(),
                after.map_or(0, |a| a + 1).into(),
                (limit as u64).into(),
            ],
        )
        .await?;
        Ok(rows.iter().map(line_result).collect())
    }

    /// Takes the lease of batch `id` for `runner` until `until_ms`, if it is free, run out
    /// or `runner`'s already; whether `runner` holds it now.
    pub async fn claim(
        &self,
        id: &str,
        runner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE batches SET runner = $2, lease_until = $4
                 WHERE id = $1 AND (runner IS NULL OR runner = $2 OR lease_until < $3)",
                vec![id.into(), runner.into(), now_ms.into(), until_ms.into()],
            )
            .await?;
        Ok(n > 0)
    }

    /// Lets go of the lease of batch `id` (a stopping gateway), so a restart or another
    /// replica takes it at once.
    pub async fn release(&self, id: &str, runner: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batches SET runner = NULL, lease_until = 0 WHERE id = $1 AND runner = $2",
            vec![id.into(), runner.into()],
        )
        .await
        .map(drop)
    }

    /// Lets go of the lease of batch `id` until `until_ms` (a forwarded batch between two
    /// polls): nobody runs it, and it is not runnable before then (a cancel makes it so at
    /// once).
    pub async fn park(&self, id: &str, runner: &str, until_ms: u64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batches SET runner = NULL, lease_until = $3 WHERE id = $1 AND runner = $2",
            vec![id.into(), runner.into(), until_ms.into()],
        )
        .await
        .map(drop)
    }

    /// Lets go of every lease (an embedded store at start: its data directory is one
    /// gateway's, so a lease left by a killed process is nobody's).
    pub async fn release_all(&self) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batches SET runner = NULL, lease_until = 0 WHERE runner IS NOT NULL",
            Vec::new(),
        )
        .await
        .map(drop)
    }

    /// Up to `limit` batches with work left whose lease is free or ran out, oldest first.
    pub async fn runnable(&self, now_ms: u64, limit: usize) -> Result<Vec<Batch>, StoreError> {
        self.batches(
            "WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling')
             AND lease_until < $1 ORDER BY seq LIMIT $2",
            vec![now_ms.into(), (limit as u64).into()],
        )
        .await
    }

    /// Marks batch `id` as forwarded to `provider` (once: a second call keeps the first).
    pub async fn forward_to(&self, id: &str, provider: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO batch_upstreams (batch_id, provider) VALUES ($1, $2)
             ON CONFLICT (batch_id) DO NOTHING",
            vec![id.into(), provider.into()],
        )
        .await
        .map(drop)
    }

    /// The upstream state of batch `id`, when it was forwarded.
    pub async fn forwarded(&self, id: &str) -> Result<Option<Forward>, StoreError> {
        let rows = sql::query(
            self.ready().await?,
            "SELECT provider, file_id, create_sent, upstream_id, completed, failed, cancel_sent
             FROM batch_upstreams WHERE batch_id = $1"
                .into(),
            vec![id.into()],
        )
        .await?;
        Ok(rows.first().map(forward))
    }

    /// The upstream input file of batch `id` is uploaded.
    pub async fn forward_file(&self, id: &str, file_id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batch_upstreams SET file_id = $2 WHERE batch_id = $1",
            vec![id.into(), file_id.into()],
        )
        .await
        .map(drop)
    }

    /// A create is about to be sent for batch `id`.
    pub async fn forward_create_sent(&self, id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batch_upstreams SET create_sent = 1 WHERE batch_id = $1",
            vec![id.into()],
        )
        .await
        .map(drop)
    }

    /// The upstream batch of batch `id` is `upstream_id`.
    pub async fn forward_made(&self, id: &str, upstream_id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batch_upstreams SET upstream_id = $2 WHERE batch_id = $1",
            vec![id.into(), upstream_id.into()],
        )
        .await
        .map(drop)
    }

    /// The upstream's counts of batch `id`, as polled (zeroed when its results are
    /// collected into the batch's own).
    pub async fn forward_counts(
        &self,
        id: &str,
        completed: u64,
        failed: u64,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batch_upstreams SET completed = $2, failed = $3 WHERE batch_id = $1",
            vec![id.into(), completed.into(), failed.into()],
        )
        .await
        .map(drop)
    }

    /// The cancel of batch `id` was passed on upstream.
    pub async fn forward_cancel_sent(&self, id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batch_upstreams SET cancel_sent = 1 WHERE batch_id = $1",
            vec![id.into()],
        )
        .await
        .map(drop)
    }

    /// Batch `id` failed with OpenAI's `errors` object (JSON text), kept for when it ends.
    pub async fn set_errors(&self, id: &str, errors: String) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batches SET errors = $2 WHERE id = $1",
            vec![id.into(), errors.into()],
        )
        .await
        .map(drop)
    }

    /// Whether the store is embedded (one gateway's).
    pub fn is_embedded(&self) -> bool {
        matches!(self.index, FileIndex::Sqlite(_))
    }
}

fn cell(row: &Cells, k: usize) -> &Cell {
    row.get(k).unwrap_or(&Cell::Null)
}

/// A row of [`COLUMNS`].
fn batch(r: &Cells) -> Result<Batch, StoreError> {
    let status = cell(r, 5).text();
    let status = BatchStatus::parse(&status)
        .ok_or_else(|| StoreError::Protocol(format!("batches.status is `{status}`")))?;
    let at = |k| cell(r, k).opt_uint();
    Ok(Batch {
        id: cell(r, 0).text(),
        owner: Owner::from_stored(&cell(r, 1).text()),
        endpoint: cell(r, 2).text(),
        input_file_id: cell(r, 3).text(),
        completion_window: cell(r, 4).text(),
        status,
        output_file_id: cell(r, 6).opt_text(),
        error_file_id: cell(r, 7).opt_text(),
        errors: cell(r, 8).opt_text(),
        metadata: cell(r, 9).opt_text(),
        times: Times {
            created_at: cell(r, 10).uint(),
            in_progress_at: at(11),
            expires_at: cell(r, 12).uint(),
            finalizing_at: at(13),
            completed_at: at(14),
            failed_at: at(15),
            expired_at: at(16),
            cancelling_at: at(17),
            cancelled_at: at(18),
        },
        counts: RequestCounts {
            total: cell(r, 19).uint(),
            completed: cell(r, 20).uint(),
            failed: cell(r, 21).uint(),
        },
    })
}

fn forward(r: &Cells) -> Forward {
    Forward {
        provider: cell(r, 0).text(),
        file_id: cell(r, 1).opt_text(),
        create_sent: cell(r, 2).uint() == 1,
        upstream_id: cell(r, 3).opt_text(),
        completed: cell(r, 4).uint(),
        failed: cell(r, 5).uint(),
        cancel_sent: cell(r, 6).uint() == 1,
    }
}

fn line_result(r: &Cells) -> LineResult {
    LineResult {
        line: cell(r, 0).uint(),
        outcome: if cell(r, 1).uint() == 1 {
            Outcome::Failed
        } else {
            Outcome::Completed
        },
        text: cell(r, 2).text(),
    }
}
