//! The wait after a failure: 200 ms, doubled at each failure in a row up to 5 s, back to
//! 200 ms after a success. Failed connects and failed batches each have one.

use std::time::Duration;

/// First wait after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(200);

/// Longest wait.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The wait after the next failure.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(BACKOFF_MIN)
    }
}

impl Backoff {
    /// A failure: the wait before the next try. The next failure in a row waits twice as
    /// long (at most [`BACKOFF_MAX`]).
    pub(super) fn fail(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        wait
    }

    /// After a success: the next failure waits the least again.
    pub(super) fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}
