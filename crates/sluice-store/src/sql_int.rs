//! Counts as SQL databases store them: SQLite's `INTEGER` and PostgreSQL's `BIGINT` are
//! signed, so a `u64` past `i64::MAX` is written as `i64::MAX`, and a negative value is read
//! back as 0.

pub(crate) fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn opt_to_sql(n: Option<u64>) -> Option<i64> {
    n.map(to_sql)
}

pub(crate) fn opt_from_sql(n: Option<i64>) -> Option<u64> {
    n.map(from_sql)
}
