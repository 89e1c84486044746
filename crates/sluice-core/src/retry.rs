//! Retry policy: which failures are retried, and how long to wait before the next try.
//!
//! Exponential backoff with full jitter (the wait before retry `n` is uniform in
//! `[0, min(max_backoff, backoff * 2^(n-1))]`), capped by a number of attempts per deployment
//! and by a time budget for the whole request. An upstream's `Retry-After` is honoured: the
//! wait is at least that long, and when it is longer than `max_retry_after` the deployment is
//! left for the next one instead of waiting.

use std::time::Duration;

/// How a route retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per deployment, the first one included (1 = no retry).
    pub attempts: u32,
    /// Base of the exponential backoff.
    pub backoff: Duration,
    /// Largest single backoff.
    pub max_backoff: Duration,
    /// Total time a request may spend waiting between tries.
    pub budget: Duration,
    /// Longest `Retry-After` worth waiting for on the same deployment.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            budget: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(5),
        }
    }
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try the same deployment again.
    RetryAfter(Duration),
    /// Move on to the next deployment now.
    NextDeployment,
}

impl RetryPolicy {
    /// The cap of the backoff before retry number `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// Decides after try number `tried` (1-based) of a deployment failed retryably.
    /// `unit` is a uniform random number in `[0, 1)`; `waited` is the time already spent
    /// waiting in this request; `retry_after` is the upstream's hint.
    pub fn next(
        &self,
        tried: u32,
        unit: f64,
        waited: Duration,
        retry_after: Option<Duration>,
    ) -> Next {
        if tried >= self.attempts {
            return Next::NextDeployment;
        }
        if retry_after.is_some_and(|ra| ra > self.max_retry_after) {
            return Next::NextDeployment;
        }
        let jitter = self.ceiling(tried).mul_f64(unit.clamp(0.0, 1.0));
        let wait = jitter.max(retry_after.unwrap_or_default());
        if waited + wait > self.budget {
            return Next::NextDeployment;
        }
        Next::RetryAfter(wait)
    }
}

/// Parses `Retry-After` as seconds (`"3"`, `"1.5"`) or `retry-after-ms` as milliseconds.
/// HTTP dates are not used by model APIs and read as absent.
pub fn parse_retry_after(seconds: Option<&str>, millis: Option<&str>) -> Option<Duration> {
    if let Some(ms) = millis.and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let s = seconds?.trim().parse::<f64>().ok()?;
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            backoff: MS(100),
            max_backoff: MS(1000),
            budget: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(5),
        };
        assert_eq!(p.ceiling(1), MS(100));
        assert_eq!(p.ceiling(2), MS(200));
        assert_eq!(p.ceiling(4), MS(800));
        assert_eq!(p.ceiling(5), MS(1000));
        assert_eq!(p.ceiling(80), MS(1000));
        // Full jitter: anywhere from zero to the ceiling.
        assert_eq!(
            p.next(3, 0.0, Duration::ZERO, None),
            Next::RetryAfter(Duration::ZERO)
        );
        assert_eq!(
            p.next(3, 0.5, Duration::ZERO, None),
            Next::RetryAfter(MS(200))
        );
    }

    #[test]
    fn attempts_budget_and_retry_after() {
        let p = RetryPolicy::default();
        assert_eq!(p.next(2, 0.5, Duration::ZERO, None), Next::NextDeployment);
        assert_eq!(
            p.next(1, 0.5, Duration::from_secs(10), None),
            Next::NextDeployment
        );
        assert_eq!(
            p.next(1, 0.0, Duration::ZERO, Some(MS(1500))),
            Next::RetryAfter(MS(1500))
        );
        assert_eq!(
            p.next(1, 0.0, Duration::ZERO, Some(Duration::from_secs(30))),
            Next::NextDeployment
        );
        // Never more than the budget, whatever the draws.
        for i in 0..1000 {
            let u = f64::from(i) / 1000.0;
            if let Next::RetryAfter(w) = p.next(1, u, MS(9950), None) {
                assert!(MS(9950) + w <= p.budget);
            }
        }
    }

    #[test]
    fn parses_retry_after() {
        assert_eq!(
            parse_retry_after(Some("3"), None),
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse_retry_after(Some("0.5"), None), Some(MS(500)));
        assert_eq!(parse_retry_after(Some("3"), Some("250")), Some(MS(250)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), None),
            None
        );
        assert_eq!(parse_retry_after(None, None), None);
        assert_eq!(parse_retry_after(Some("-1"), None), None);
    }
}
