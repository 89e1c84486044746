//! One way to run a statement on either index the files live in (`files.sqlite` on its
//! thread, or PostgreSQL on its own): parameters and cells as a small closed set of values,
//! statements written once with PostgreSQL's `$n` placeholders (SQLite's `?n` is the same
//! numbered parameter). So every batch operation is written once, for both stores.

use crate::files::FileIndex;
use crate::StoreError;
use rusqlite::types::{Value, ValueRef};
use tokio_postgres::types::{ToSql, Type};

/// A statement's parameter.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    /// `BIGINT` (`NULL` when `None`).
    Int(Option<i64>),
    /// `TEXT` (`NULL` when `None`).
    Text(Option<String>),
}

impl From<u64> for Param {
    fn from(n: u64) -> Self {
        Self::Int(Some(i64::try_from(n).unwrap_or(i64::MAX)))
    }
}

impl From<Option<u64>> for Param {
    fn from(n: Option<u64>) -> Self {
        Self::Int(n.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
    }
}

impl From<&str> for Param {
    fn from(s: &str) -> Self {
        Self::Text(Some(s.to_string()))
    }
}

impl From<String> for Param {
    fn from(s: String) -> Self {
        Self::Text(Some(s))
    }
}

impl From<Option<String>> for Param {
    fn from(s: Option<String>) -> Self {
        Self::Text(s)
    }
}

/// A cell read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    /// `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
}

impl Cell {
    /// The integer (0 for anything else; negative as 0).
    pub(crate) fn uint(&self) -> u64 {
        self.opt_uint().unwrap_or(0)
    }

    /// The integer, `None` for `NULL`.
    pub(crate) fn opt_uint(&self) -> Option<u64> {
        match self {
            Self::Int(n) => Some(u64::try_from(*n).unwrap_or(0)),
            _ => None,
        }
    }

    /// The text (empty for anything else).
    pub(crate) fn text(&self) -> String {
        self.opt_text().unwrap_or_default()
    }

    /// The text, `None` for `NULL`.
    pub(crate) fn opt_text(&self) -> Option<String> {
        match self {
            Self::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// A row read back.
pub(crate) type Cells = Vec<Cell>;

/// Runs `sql` (`$n` placeholders) with `params`; rows changed.
pub(crate) async fn execute(
    index: &FileIndex,
    sql: String,
    params: Vec<Param>,
) -> Result<u64, StoreError> {
    match index {
        FileIndex::Sqlite(i) => {
            i.run(move |conn| {
                let n = conn.execute(&sqlite_text(&sql), sqlite_params(params))?;
                Ok(n as u64)
            })
            .await
        }
        FileIndex::Postgres(i) => {
            i.run(move |c| async move {
                let boxed = pg_params(params);
                let refs: Vec<&(dyn ToSql + Sync)> = boxed
                    .iter()
                    .map(|b| -> &(dyn ToSql + Sync) { b.as_ref() })
                    .collect();
                c.execute(&sql, &refs).await
            })
            .await
        }
    }
}

/// Runs the query `sql` (`$n` placeholders) with `params`; its rows.
pub(crate) async fn query(
    index: &FileIndex,
    sql: String,
    params: Vec<Param>,
) -> Result<Vec<Cells>, StoreError> {
    match index {
        FileIndex::Sqlite(i) => {
            i.run(move |conn| {
                let mut stmt = conn.prepare(&sqlite_text(&sql))?;
                let width = stmt.column_count();
                let rows = stmt.query_map(sqlite_params(params), |r| {
                    (0..width).map(|k| r.get_ref(k).map(sqlite_cell)).collect()
                })?;
                Ok(rows.collect::<Result<Vec<Cells>, _>>()?)
            })
            .await
        }
        FileIndex::Postgres(i) => {
            i.run(move |c| async move {
                let boxed = pg_params(params);
                let refs: Vec<&(dyn ToSql + Sync)> = boxed
                    .iter()
                    .map(|b| -> &(dyn ToSql + Sync) { b.as_ref() })
                    .collect();
                let rows = c.query(&sql, &refs).await?;
                rows.iter().map(pg_cells).collect()
            })
            .await
        }
    }
}

/// Runs several statements (no parameters) as one script.
pub(crate) async fn script(index: &FileIndex, sql: String) -> Result<(), StoreError> {
    match index {
        FileIndex::Sqlite(i) => i.run(move |conn| Ok(conn.execute_batch(&sql)?)).await,
        FileIndex::Postgres(i) => {
            i.run(move |c| async move { c.batch_execute(&sql).await })
                .await
        }
    }
}

fn sqlite_text(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_params(params: Vec<Param>) -> rusqlite::ParamsFromIter<Vec<Value>> {
    let values = params
        .into_iter()
        .map(|p| match p {
            Param::Int(Some(n)) => Value::Integer(n),
            Param::Text(Some(s)) => Value::Text(s),
            Param::Int(None) | Param::Text(None) => Value::Null,
        })
        .collect::<Vec<_>>();
    rusqlite::params_from_iter(values)
}

fn sqlite_cell(v: ValueRef<'_>) -> Cell {
    match v {
        ValueRef::Integer(n) => Cell::Int(n),
        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Null | ValueRef::Real(_) | ValueRef::Blob(_) => Cell::Null,
    }
}

fn pg_params(params: Vec<Param>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Int(n) => Box::new(n),
                Param::Text(s) => Box::new(s),
            }
        })
        .collect()
}

fn pg_cells(row: &tokio_postgres::Row) -> Result<Cells, tokio_postgres::Error> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(k, col)| {
            Ok(match *col.type_() {
                Type::INT8 => row
                    .try_get::<_, Option<i64>>(k)?
                    .map_or(Cell::Null, Cell::Int),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(k)?
                    .map_or(Cell::Null, |n| Cell::Int(i64::from(n))),
                _ => row
                    .try_get::<_, Option<String>>(k)?
                    .map_or(Cell::Null, Cell::Text),
            })
        })
        .collect()
}
