//! `GET /admin/history`: what the gateway served minute by minute over the last 24 hours,
//! from its memory (see [`crate::history`]); the console's overview draws it.

use crate::admin_query::{number, params};
use crate::history::{Point, KEEP};
use crate::response::{error_response, json, ResponseBody};
use crate::state::AppState;
use http::{Response, StatusCode};
use serde_json::{json, Value};
use sluice_core::Error;

/// The longest `step`, in minutes.
const MAX_STEP: u32 = 60;

/// What was asked: the last `minutes` minutes, `step` minutes a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Query {
    minutes: u32,
    step: u32,
}

/// `GET /admin/history?minutes=&step=`.
pub fn serve<B>(state: &AppState, req: &http::Request<B>) -> Response<ResponseBody> {
    let result = (|| {
        crate::handlers::admin_auth(state, req.headers())?;
        let q = parse(req.uri().query().unwrap_or_default())?;
        let points = state.history.read(
            &state.metrics,
            state.kept_counts(),
            u64::from(q.minutes),
            u64::from(q.step),
        );
        let body = json!({
            "minutes": q.minutes,
            "step_minutes": q.step,
            "points": points.iter().map(point_json).collect::<Vec<_>>(),
        });
        Ok::<_, Error>(json(
            StatusCode::OK,
            serde_json::to_vec(&body).unwrap_or_default(),
        ))
    })();
    result.unwrap_or_else(|e| error_response(&e))
}

/// Reads the query string; a parameter it does not know is refused.
fn parse(query: &str) -> Result<Query, Error> {
    let max_minutes = u32::try_from(KEEP).unwrap_or(u32::MAX);
    let mut q = Query {
        minutes: max_minutes,
        step: 1,
    };
    for (name, value) in params(query, "/admin/history", &["minutes", "step"])? {
        match name {
            "minutes" => q.minutes = number(&value, "minutes", 1..=max_minutes)?,
            _ => q.step = number(&value, "step", 1..=MAX_STEP)?,
        }
    }
    Ok(q)
}

/// One point: its start (`t`, Unix seconds), its counts, its latency quantiles (`null`
/// without requests) and its cache hit rate (`null` without lookups).
fn point_json(p: &Point) -> Value {
    let c = &p.counts;
    json!({
        "t": p.minute * 60,
        "partial": p.partial,
        "requests": c.requests,
        "errors": c.errors,
        "p50_seconds": c.quantile(0.5),
        "p95_seconds": c.quantile(0.95),
        "tokens_in": c.tokens_in,
        "tokens_out": c.tokens_out,
        "spend_usd": c.spend_nano_usd as f64 / 1e9,
        "cache_hits": c.cache_hits,
        "cache_lookups": c.cache_lookups,
        "cache_hit_rate": (c.cache_lookups > 0).then(|| c.cache_hits as f64 / c.cache_lookups as f64),
        "saved_usd": c.saved_nano_usd as f64 / 1e9,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_and_bad_ones_refused() {
        assert_eq!(
            parse("").ok(),
            Some(Query {
                minutes: 1440,
                step: 1
            })
        );
        assert_eq!(
            parse("minutes=60&step=5").ok(),
            Some(Query {
                minutes: 60,
                step: 5
            })
        );
        for bad in [
            "minutes=0",
            "minutes=1441",
            "minutes=x",
            "step=0",
            "step=61",
            "since=1h",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
