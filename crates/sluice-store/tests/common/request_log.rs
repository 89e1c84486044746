//! The request log's checks, run on both ledgers (SQLite in `ledger_sqlite.rs`, PostgreSQL
//! in `postgres.rs`): pages by cursor, filters, periods and the bounded search.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use sluice_store::ledger::{LogPage, LogPosition, LogQuery, StatusFilter};
use sluice_store::{Ledger, SpendRecord};

const BASE: u64 = 1_764_000_000_000;

fn record(i: u64) -> SpendRecord {
    SpendRecord {
        // The last four arrive in the same millisecond: their order is their row ids'.
        ts_ms: BASE + i.min(300) * 1_000,
        request_id: format!("req-{i}"),
        key_id: Some(format!("key_{}", i % 3)),
        key_name: Some(format!("team-{}", i % 3)),
        endpoint: if i % 4 == 0 { "embeddings" } else { "chat" }.into(),
        route: (i % 2 == 0).then(|| "auto".to_string()),
        model: Some(if i == 5 || i == 250 { "rare" } else { "m" }.to_string()),
        provider: Some("p".into()),
        status: if i % 10 == 0 { 502 } else { 200 },
        cache: "miss".into(),
        attempts: 1,
        ..SpendRecord::default()
    }
}

/// Every page of `query` from the first, following `next`.
async fn pages(ledger: &Ledger, query: &LogQuery) -> Vec<LogPage> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = ledger
            .log(LogQuery {
                after,
                ..query.clone()
            })
            .await
            .unwrap();
        after = page.next;
        out.push(page);
        if after.is_none() || out.len() > 100 {
            return out;
        }
    }
}

fn request_ids(pages: &[LogPage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.rows.iter().map(|r| r.record.request_id.clone()))
        .collect()
}

pub async fn check(ledger: &Ledger) {
    for i in 0..304 {
        ledger.record(record(i));
    }
    ledger.flush().await;

    // Everything, 40 a page: each record once, newest first, ties broken by row id.
    let all = pages(ledger, &LogQuery::all(40, 100_000)).await;
    let ids = request_ids(&all);
    let expected: Vec<String> = (0..304).rev().map(|i| format!("req-{i}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(all.len(), 8);
    assert!(all.iter().all(|p| !p.partial));
    let positions: Vec<LogPosition> = all
        .iter()
        .flat_map(|p| p.rows.iter().map(|r| r.position()))
        .collect();
    assert!(positions
        .windows(2)
        .all(|w| (w[0].ts_ms, w[0].id) > (w[1].ts_ms, w[1].id)));
    let first = &all[0].rows[0];
    assert_eq!(first.record, record(303));

    // Filters: a key by id or by name, a route, an endpoint, statuses.
    let filtered = |f: fn(&mut LogQuery)| {
        let mut q = LogQuery::all(500, 100_000);
        f(&mut q);
        q
    };
    let count = async |q: LogQuery| request_ids(&pages(ledger, &q).await).len();
    assert_eq!(count(filtered(|q| q.key = Some("key_1".into()))).await, 101);
    assert_eq!(
        count(filtered(|q| q.key = Some("team-1".into()))).await,
        101
    );
    assert_eq!(
        count(filtered(|q| q.route = Some("auto".into()))).await,
        152
    );
    assert_eq!(
        count(filtered(|q| q.endpoint = Some("embeddings".into()))).await,
        76
    );
    assert_eq!(
        count(filtered(|q| q.status = Some(StatusFilter::Errors))).await,
        31
    );
    assert_eq!(
        count(filtered(|q| q.status = Some(StatusFilter::Exact(200)))).await,
        273
    );
    assert_eq!(count(filtered(|q| q.model = Some("none".into()))).await, 0);
    let both = filtered(|q| {
        q.key = Some("team-0".into());
        q.status = Some(StatusFilter::Errors);
    });
    // i % 3 == 0 and i % 10 == 0: 0, 30, ..., 300.
    assert_eq!(count(both).await, 11);

    // A period: from record 100's arrival to before record 200's.
    let mut period = LogQuery::all(500, 100_000);
    period.since = BASE + 100_000;
    period.until = BASE + 200_000;
    let ids = request_ids(&pages(ledger, &period).await);
    assert_eq!(ids.first().map(String::as_str), Some("req-199"));
    assert_eq!(ids.last().map(String::as_str), Some("req-100"));
    assert_eq!(ids.len(), 100);

    // A bounded search: 100 records a page for a model only two records have.
    let mut rare = LogQuery::all(10, 100);
    rare.model = Some("rare".into());
    let found = pages(ledger, &rare).await;
    assert_eq!(request_ids(&found), ["req-250", "req-5"]);
    // 304 records, 100 examined a page: 4 pages, the first three stopped at the bound.
    let partial: Vec<bool> = found.iter().map(|p| p.partial).collect();
    assert_eq!(partial, [true, true, true, false]);
    assert_eq!(found.last().unwrap().next, None);
}
