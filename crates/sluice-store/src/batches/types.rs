//! What the store keeps about a batch ([`Batch`]), its life ([`BatchStatus`]), its counts
//! ([`RequestCounts`]), the result of one of its lines ([`LineResult`]), and the upstream
//! state of a batch forwarded to a provider's Batch API ([`Forward`]).

use crate::files::Owner;

/// Every batch id starts with this.
pub const PREFIX: &str = "batch_";

/// Most batches a listing returns at once.
pub const MAX_LIST_LIMIT: usize = 100;

/// Where a batch is in its life, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchStatus {
    /// The input file is being read and checked.
    Validating,
    /// Lines are being run.
    InProgress,
    /// Every line has run; the output files are being written.
    Finalizing,
    /// Done: the output and error files are written.
    Completed,
    /// The input could not be run at all (see the batch's `errors`).
    Failed,
    /// Cancel asked: no line starts, the lines in flight finish.
    Cancelling,
    /// Cancelled: the partial output is written.
    Cancelled,
    /// The completion window passed: the partial output is written.
    Expired,
}

impl BatchStatus {
    /// Every status.
    pub const ALL: [Self; 8] = [
        Self::Validating,
        Self::InProgress,
        Self::Finalizing,
        Self::Completed,
        Self::Failed,
        Self::Cancelling,
        Self::Cancelled,
        Self::Expired,
    ];

    /// OpenAI's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::InProgress => "in_progress",
            Self::Finalizing => "finalizing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether the batch still has work for a runner (statuses before a final one).
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            Self::Validating | Self::InProgress | Self::Finalizing | Self::Cancelling
        )
    }

    /// The column holding when the batch entered this status.
    pub(crate) const fn at_column(self) -> &'static str {
        match self {
            Self::Validating => "created_at",
            Self::InProgress => "in_progress_at",
            Self::Finalizing => "finalizing_at",
            Self::Completed => "completed_at",
            Self::Failed => "failed_at",
            Self::Cancelling => "cancelling_at",
            Self::Cancelled => "cancelled_at",
            Self::Expired => "expired_at",
        }
    }
}

/// Lines of a batch: all of them, those answered 2xx, those that failed (malformed lines
/// and non-2xx answers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Lines in the input file.
    pub total: u64,
    /// Lines answered with a 2xx.
    pub completed: u64,
    /// Lines that failed.
    pub failed: u64,
}

/// When a batch entered each status (Unix seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    /// Created.
    pub created_at: u64,
    /// Started running its lines.
    pub in_progress_at: Option<u64>,
    /// When its completion window ends.
    pub expires_at: u64,
    /// Began writing its output.
    pub finalizing_at: Option<u64>,
    /// Completed.
    pub completed_at: Option<u64>,
    /// Failed.
    pub failed_at: Option<u64>,
    /// Expired.
    pub expired_at: Option<u64>,
    /// Cancel asked.
    pub cancelling_at: Option<u64>,
    /// Cancelled.
    pub cancelled_at: Option<u64>,
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `batch_` and 24 letters and digits.
    pub id: String,
    /// Who created it (whose key its lines run as).
    pub owner: Owner,
    /// The endpoint of every line (`/v1/chat/completions`, ...).
    pub endpoint: String,
    /// The input file (purpose `batch`, the owner's).
    pub input_file_id: String,
    /// `24h`.
    pub completion_window: String,
    /// Where it is.
    pub status: BatchStatus,
    /// The answers of the lines that were answered 2xx, once written.
    pub output_file_id: Option<String>,
    /// The failed lines, once written.
    pub error_file_id: Option<String>,
    /// Why the batch failed: OpenAI's `errors` object as JSON text.
    pub errors: Option<String>,
    /// The client's `metadata` object as JSON text.
    pub metadata: Option<String>,
    /// When it entered each status.
    pub times: Times,
    /// Its lines.
    pub counts: RequestCounts,
}

/// What [`super::BatchStore::create`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBatch {
    /// Who creates it.
    pub owner: Owner,
    /// The endpoint of every line.
    pub endpoint: String,
    /// The input file.
    pub input_file_id: String,
    /// `24h`.
    pub completion_window: String,
    /// The client's `metadata` as JSON text.
    pub metadata: Option<String>,
    /// When the completion window ends (Unix seconds).
    pub expires_at: u64,
}

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 2xx: a line of the output file.
    Completed,
    /// Malformed, or answered otherwise: a line of the error file.
    Failed,
}

/// One line's result: the line of the output or error file that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineResult {
    /// The line's number in the input file (from 0, blank lines skipped).
    pub line: u64,
    /// Which file it goes to.
    pub outcome: Outcome,
    /// The JSON line, without its newline.
    pub text: String,
}

/// A page of batches, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchPage {
    /// The batches.
    pub batches: Vec<Batch>,
    /// More follow the last one.
    pub has_more: bool,
}

/// A forwarded batch's upstream state: one row of `batch_upstreams`, written step by step
/// as the forwarding goes, so a restart resumes at the step it stopped at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forward {
    /// The provider (by name) the batch was forwarded to.
    pub provider: String,
    /// The upstream's input file, once uploaded.
    pub file_id: Option<String>,
    /// A create was sent (it may have made a batch whose id never came back).
    pub create_sent: bool,
    /// The upstream's batch, once made.
    pub upstream_id: Option<String>,
    /// The upstream's completed lines, as last polled (0 once collected).
    pub completed: u64,
    /// The upstream's failed lines, as last polled (0 once collected).
    pub failed: u64,
    /// The cancel was passed on upstream.
    pub cancel_sent: bool,
}
