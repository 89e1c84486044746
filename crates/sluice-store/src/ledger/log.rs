//! The request log: the spend log read newest first, filtered, a page at a time.
//!
//! A page is read by keyset (the position of its last row, never an offset), and the rows a
//! page may examine are bounded ([`LogQuery::scan_limit`]): a filter that matches few of
//! millions of records answers with what the first `scan_limit` records held and a position
//! to go on searching from, never with a scan of the whole log. Both ledgers read the same
//! way: the `ts_ms` index walked backwards, first (with filters) to the search's edge, the
//! `scan_limit`-th record from the position, read from the index alone; then the records
//! between the position and the edge, filtered, the first `limit + 1` kept.

use super::types::SpendRecord;
use crate::sql_int::to_sql;
use crate::UnixMs;

/// Which statuses a log query keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Exactly this status.
    Exact(u16),
    /// Errors: 400 and above.
    Errors,
    /// Successes: below 400.
    Successes,
}

impl StatusFilter {
    /// Reads `200`, `errors` or `ok`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "errors" | "error" => Some(Self::Errors),
            "ok" | "success" => Some(Self::Successes),
            n => n
                .parse::<u16>()
                .ok()
                .filter(|s| (100..600).contains(s))
                .map(Self::Exact),
        }
    }

    /// The statuses kept, as a half-open range.
    pub fn range(self) -> (u16, u16) {
        match self {
            Self::Exact(s) => (s, s + 1),
            Self::Errors => (400, 1000),
            Self::Successes => (0, 400),
        }
    }
}

/// A record's place in the log, newest first: its arrival, then its row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// The record's `ts_ms`.
    pub ts_ms: UnixMs,
    /// The record's row id.
    pub id: i64,
}

/// What a page of the request log is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// A virtual key's id or name.
    pub key: Option<String>,
    /// The deployment (configured model).
    pub model: Option<String>,
    /// The route.
    pub route: Option<String>,
    /// The provider.
    pub provider: Option<String>,
    /// The endpoint label (`chat`, `embeddings`, ...).
    pub endpoint: Option<String>,
    /// The statuses.
    pub status: Option<StatusFilter>,
    /// Records that arrived at or after (Unix ms).
    pub since: UnixMs,
    /// Records that arrived before (Unix ms).
    pub until: UnixMs,
    /// Records strictly older than this position (the previous page's last, or where its
    /// search stopped).
    pub after: Option<LogPosition>,
    /// Rows per page.
    pub limit: u32,
    /// Records a page examines at most.
    pub scan_limit: u32,
}

impl LogQuery {
    /// Everything, newest first, `limit` a page.
    pub fn all(limit: u32, scan_limit: u32) -> Self {
        Self {
            key: None,
            model: None,
            route: None,
            provider: None,
            endpoint: None,
            status: None,
            since: 0,
            until: UnixMs::MAX,
            after: None,
            limit,
            scan_limit,
        }
    }

    /// Whether any filter beyond the period applies.
    pub fn filters(&self) -> bool {
        self.key.is_some()
            || self.model.is_some()
            || self.route.is_some()
            || self.provider.is_some()
            || self.endpoint.is_some()
            || self.status.is_some()
    }
}

/// One record of the log and its row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// The record's row id.
    pub id: i64,
    /// The record.
    pub record: SpendRecord,
}

impl LogRow {
    /// Its place in the log.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            ts_ms: self.record.ts_ms,
            id: self.id,
        }
    }
}

/// A page of the request log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    /// The matching records, newest first (at most the query's `limit`).
    pub rows: Vec<LogRow>,
    /// Where the next page starts: after the last row of a full page, or where a search
    /// bounded by `scan_limit` stopped; `None` when the log holds nothing older that the
    /// period could include.
    pub next: Option<LogPosition>,
    /// The page is short because the search stopped at `scan_limit` records, not because
    /// the log ended: older matches may follow at `next`.
    pub partial: bool,
}

impl LogPage {
    /// The page from `found` (up to `limit + 1` matching rows, newest first) and `edge`, the
    /// last record the bounded search examined if it examined `scan_limit` records.
    pub(crate) fn assemble(mut found: Vec<LogRow>, limit: u32, edge: Option<LogPosition>) -> Self {
        let limit = limit as usize;
        if found.len() > limit {
            found.truncate(limit);
            let next = found.last().map(LogRow::position);
            return Self {
                rows: found,
                next,
                partial: false,
            };
        }
        match edge {
            // The search stopped at its bound: go on from the last record it examined.
            Some(edge) => Self {
                rows: found,
                next: Some(edge),
                partial: true,
            },
            None => Self {
                rows: found,
                next: None,
                partial: false,
            },
        }
    }
}

/// The SQL both ledgers run for a page (the record's columns, then its id): the records of
/// the period older than the position and not older than the search's edge, filtered,
/// newest first, the first `limit + 1`. Parameters (numbered for both databases): 1 and 2
/// the times searched ([`TsRange::page`]), 3 and 4 the position (ts, id), 5 and 6 the edge
/// (ts, id), 7 key, 8 model, 9
/// route, 10 provider, 11 endpoint, 12 and 13 the status range, 14 `limit + 1`. `p(n)`
/// writes parameter `n` in the database's syntax; the filters' first mentions are cast so
/// that PostgreSQL knows their type.
pub(crate) fn page_sql(columns: &str, p: impl Fn(u8) -> String) -> String {
    format!(
        "SELECT {columns}, id FROM spend_log
         WHERE ts_ms >= {p1} AND ts_ms <= {p2}
           AND (ts_ms < {p3} OR id < {p4})
           AND (ts_ms > {p5} OR id >= {p6})
           AND (CAST({p7} AS TEXT) IS NULL OR key_id = {p7} OR key_name = {p7})
           AND (CAST({p8} AS TEXT) IS NULL OR model = {p8})
           AND (CAST({p9} AS TEXT) IS NULL OR route = {p9})
           AND (CAST({p10} AS TEXT) IS NULL OR provider = {p10})
           AND (CAST({p11} AS TEXT) IS NULL OR endpoint = {p11})
           AND status >= {p12} AND status < {p13}
         ORDER BY ts_ms DESC, id DESC LIMIT {p14}",
        p1 = p(1),
        p2 = p(2),
        p3 = p(3),
        p4 = p(4),
        p5 = p(5),
        p6 = p(6),
        p7 = p(7),
        p8 = p(8),
        p9 = p(9),
        p10 = p(10),
        p11 = p(11),
        p12 = p(12),
        p13 = p(13),
        p14 = p(14),
    )
}

/// The SQL of the last record a bounded search examines (the `scan_limit`-th of the
/// period older than the position), read from the index alone. Parameters: 1 and 2 the
/// times searched ([`TsRange::edge`]), 3 position ts, 4 position id, 5 `scan_limit - 1`.
pub(crate) fn edge_sql(p: impl Fn(u8) -> String) -> String {
    format!(
        "SELECT ts_ms, id FROM spend_log
         WHERE ts_ms >= {p1} AND ts_ms <= {p2}
           AND (ts_ms < {p3} OR id < {p4})
         ORDER BY ts_ms DESC, id DESC LIMIT 1 OFFSET {p5}",
        p1 = p(1),
        p2 = p(2),
        p3 = p(3),
        p4 = p(4),
        p5 = p(5),
    )
}

/// The times a search reads, as one lower and one upper bound (both inclusive, SQL
/// integers). The queries name each bound once: given the period's bounds, the position's
/// and the edge's as separate parameters, SQLite's planner limited the index range by the
/// period's alone, and a search for a rare value read the log down to the period's start
/// (4 s on ten million records) instead of stopping at its edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TsRange {
    pub low: i64,
    pub high: i64,
}

impl TsRange {
    /// The times the edge's search reads: the period's, no newer than the position.
    pub fn edge(q: &LogQuery, after: LogPosition) -> Self {
        Self {
            low: to_sql(q.since),
            high: to_sql(q.until).saturating_sub(1).min(to_sql(after.ts_ms)),
        }
    }

    /// The times a page reads: the edge's search's, no older than the edge.
    pub fn page(q: &LogQuery, after: LogPosition, edge: LogPosition) -> Self {
        let r = Self::edge(q, after);
        Self {
            low: r.low.max(to_sql(edge.ts_ms)),
            ..r
        }
    }
}

/// The position a first page starts after: past every record.
pub(crate) const START: LogPosition = LogPosition {
    ts_ms: i64::MAX as UnixMs,
    id: i64::MAX,
};

/// The edge of a search that examines every record: before every record.
pub(crate) const NO_EDGE: LogPosition = LogPosition {
    ts_ms: 0,
    id: i64::MIN,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64) -> LogRow {
        LogRow {
            id,
            record: SpendRecord {
                ts_ms: 1000 + id as u64,
                ..SpendRecord::default()
            },
        }
    }

    #[test]
    fn a_full_page_goes_on_after_its_last_row() {
        let page = LogPage::assemble(vec![row(9), row(8), row(7)], 2, None);
        assert_eq!(page.rows.len(), 2);
        assert_eq!(page.next, Some(row(8).position()));
        assert!(!page.partial);
    }

    #[test]
    fn a_search_stopped_at_its_bound_goes_on_from_where_it_stopped() {
        let edge = LogPosition { ts_ms: 5, id: 3 };
        let page = LogPage::assemble(vec![row(9)], 2, Some(edge));
        assert_eq!(page.next, Some(edge));
        assert!(page.partial);
        let end = LogPage::assemble(vec![row(9)], 2, None);
        assert_eq!(end.next, None);
        assert!(!end.partial);
    }

    #[test]
    fn a_search_reads_one_range_of_times() {
        let q = LogQuery {
            since: 100,
            until: 1000,
            ..LogQuery::all(50, 1000)
        };
        // A first page: the period, `until` exclusive.
        assert_eq!(
            TsRange::page(&q, START, NO_EDGE),
            TsRange {
                low: 100,
                high: 999
            }
        );
        // Past a position, down to an edge: both bound the range.
        let after = LogPosition { ts_ms: 700, id: 9 };
        let edge = LogPosition { ts_ms: 400, id: 3 };
        assert_eq!(
            TsRange::edge(&q, after),
            TsRange {
                low: 100,
                high: 700
            }
        );
        assert_eq!(
            TsRange::page(&q, after, edge),
            TsRange {
                low: 400,
                high: 700
            }
        );
        // An edge older than the period does not widen it.
        let old = LogPosition { ts_ms: 5, id: 1 };
        assert_eq!(TsRange::page(&q, after, old).low, 100);
    }

    #[test]
    fn statuses_read_as_ranges() {
        assert_eq!(StatusFilter::parse("429"), Some(StatusFilter::Exact(429)));
        assert_eq!(StatusFilter::parse("errors").unwrap().range(), (400, 1000));
        assert_eq!(StatusFilter::parse("ok").unwrap().range(), (0, 400));
        assert_eq!(StatusFilter::parse("99"), None);
        assert_eq!(StatusFilter::parse("x"), None);
    }
}
