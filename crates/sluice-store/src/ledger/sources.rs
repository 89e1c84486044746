//! Where a spend report's sums are read from: the raw records of the partial UTC days at
//! the period's edges and the daily roll-ups of the whole days between them.
//!
//! The roll-ups hold, per UTC day, the same sums as the raw records of that day (both are
//! written in one transaction), in a few hundred rows a day instead of every request's. So
//! a period that starts (or ends) mid-day is summed exactly from the raw records of its
//! first (and last) partial day plus the roll-ups of every whole day in between: a rolling
//! `7d` reads at most a day of raw records instead of seven.

use crate::ledger::types::{reads_rollups, Dimension, DAY_MS};
use crate::UnixMs;
use std::ops::Range;

/// The ranges a report reads: raw records in `head` and `tail` (Unix ms, end exclusive;
/// either may be empty) and roll-ups of the UTC days in `days` (days since 1970-01-01, end
/// exclusive; may be empty). The three never overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSources {
    /// Raw records at the period's start, before its first whole day.
    pub head: Range<UnixMs>,
    /// Whole UTC days read from the roll-ups.
    pub days: Range<u64>,
    /// Raw records at the period's end, after its last whole day.
    pub tail: Range<UnixMs>,
    /// The period was widened to whole UTC days and read from the roll-ups alone (see
    /// [`reads_rollups`]): the report's [`crate::Report::from_rollups`].
    pub from_rollups: bool,
}

// === impl ReportSources ===

impl ReportSources {
    /// The sources of a report of `period` grouped by `by` at `now`, for a raw log kept
    /// `retention_days` (0: forever). A period [`reads_rollups`] accepts is widened to whole
    /// days and read from the roll-ups alone; any other is split at its first and last UTC
    /// midnight, and read exactly (to the millisecond).
    pub fn plan(by: Dimension, period: &Range<UnixMs>, now: UnixMs, retention_days: u64) -> Self {
        if reads_rollups(by, period, now, retention_days) {
            return Self {
                head: 0..0,
                days: period.start / DAY_MS..period.end.div_ceil(DAY_MS),
                tail: 0..0,
                from_rollups: true,
            };
        }
        let first_midnight = period.start.div_ceil(DAY_MS).saturating_mul(DAY_MS);
        // An open end: the roll-ups hold every day up to the latest record, today's too.
        let last_midnight = match period.end {
            UnixMs::MAX => UnixMs::MAX,
            end => end / DAY_MS * DAY_MS,
        };
        if first_midnight >= last_midnight {
            // No whole day inside: the raw records only.
            return Self {
                head: period.clone(),
                days: 0..0,
                tail: 0..0,
                from_rollups: false,
            };
        }
        let days_end = match last_midnight {
            UnixMs::MAX => UnixMs::MAX.div_ceil(DAY_MS),
            m => m / DAY_MS,
        };
        Self {
            head: period.start..first_midnight,
            days: first_midnight / DAY_MS..days_end,
            tail: last_midnight.min(period.end)..period.end,
            from_rollups: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMs = 20_800 * DAY_MS + 5 * 3_600_000; // 05:00 UTC

    #[test]
    fn a_rolling_week_reads_one_partial_day_raw() {
        let since = NOW - 7 * DAY_MS;
        let s = ReportSources::plan(Dimension::Key, &(since..UnixMs::MAX), NOW, 30);
        assert_eq!(s.head, since..20_794 * DAY_MS);
        assert_eq!(s.days.start, 20_794);
        assert!(s.days.end > 20_800);
        assert!(s.tail.is_empty());
        assert!(!s.from_rollups);
    }

    #[test]
    fn a_bounded_period_reads_both_edges_raw() {
        let period = 20_790 * DAY_MS + 7..20_795 * DAY_MS + 9;
        let s = ReportSources::plan(Dimension::Model, &period, NOW, 30);
        assert_eq!(s.head, period.start..20_791 * DAY_MS);
        assert_eq!(s.days, 20_791..20_795);
        assert_eq!(s.tail, 20_795 * DAY_MS..period.end);
        assert!(!s.from_rollups);
    }

    #[test]
    fn a_period_without_a_whole_day_is_raw() {
        for period in [
            20_790 * DAY_MS + 7..20_790 * DAY_MS + 9,
            20_790 * DAY_MS + 7..20_791 * DAY_MS + 9,
            20_790 * DAY_MS + 7..20_791 * DAY_MS,
        ] {
            let s = ReportSources::plan(Dimension::Route, &period, NOW, 30);
            assert_eq!(s.head, period);
            assert!(s.days.is_empty() && s.tail.is_empty());
        }
        // A start on a midnight and an end mid-day: the whole first day from the roll-ups.
        let period = 20_790 * DAY_MS..20_791 * DAY_MS + 9;
        let s = ReportSources::plan(Dimension::Route, &period, NOW, 30);
        assert!(s.head.is_empty());
        assert_eq!(s.days, 20_790..20_791);
        assert_eq!(s.tail, 20_791 * DAY_MS..period.end);
    }

    #[test]
    fn whole_days_and_old_periods_read_the_rollups_alone() {
        let whole = 20_790 * DAY_MS..20_795 * DAY_MS;
        let s = ReportSources::plan(Dimension::Key, &whole, NOW, 30);
        assert!(s.from_rollups && s.head.is_empty() && s.tail.is_empty());
        assert_eq!(s.days, 20_790..20_795);
        let old = NOW - 40 * DAY_MS..UnixMs::MAX;
        let s = ReportSources::plan(Dimension::Key, &old, NOW, 30);
        assert!(s.from_rollups);
        assert_eq!(s.days.start, (NOW - 40 * DAY_MS) / DAY_MS);
    }
}
