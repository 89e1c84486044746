//! What the admin API's endpoints share in reading a query: its parameters read strictly
//! (each one the endpoint knows, at most once, its value URL-decoded; anything else a 400
//! naming it, in the admin API's error shape), and cursors tagged with the master key, so
//! that a client can only go on from a page this gateway gave out.

use crate::response::{error_response, ResponseBody};
use crate::state::AppState;
use http::Response;
use sluice_core::keys::{same_secret, tag};
use sluice_core::Error;

/// The parameters of `query`, in order, each as the name it has in `known` and its value
/// URL-decoded. A name `endpoint` (its path, for the message) does not know, a name given
/// twice, or a value that does not decode is refused with a 400 that names it.
pub(crate) fn params(
    query: &str,
    endpoint: &str,
    known: &[&'static str],
) -> Result<Vec<(&'static str, String)>, Error> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (given, raw) = pair.split_once('=').unwrap_or((pair, ""));
        // Names are matched as decoded (`%62y` is `by`), as their values are read.
        let given = decode(given)
            .ok_or_else(|| bad("a parameter's name is not URL-encoded UTF-8 text", "query"))?;
        let Some(&name) = known.iter().find(|k| **k == given) else {
            let message = match known {
                [] => format!("`{given}` is not a parameter: `{endpoint}` takes none"),
                _ => format!(
                    "`{given}` is not a parameter of `{endpoint}`: use {}",
                    known.join(", ")
                ),
            };
            return Err(bad(message, "query"));
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(bad(format!("`{name}` is given more than once"), name));
        }
        let value = decode(raw)
            .ok_or_else(|| bad(format!("`{name}` is not URL-encoded UTF-8 text"), name))?;
        out.push((name, value));
    }
    Ok(out)
}

/// For an admin endpoint that takes no query parameters: `None` when `query` is empty or
/// absent; else the caller's 401 if it is not the master key's, or the 400 that names the
/// first parameter given.
pub(crate) fn none_taken(
    state: &AppState,
    path: &str,
    headers: &http::HeaderMap,
    query: Option<&str>,
) -> Option<Response<ResponseBody>> {
    let query = query.filter(|q| q.split('&').any(|p| !p.is_empty()))?;
    let refused = crate::handlers::admin_auth(state, headers)
        .and_then(|()| params(query, path, &[]).map(drop));
    refused.err().map(|e| error_response(&e))
}

/// Whether `path` is an admin endpoint that takes no query parameters (`/admin/spend`,
/// `/admin/requests`, `/admin/samples` and `/admin/history` read theirs themselves).
pub(crate) fn takes_none(path: &str) -> bool {
    path.starts_with("/admin/")
        && (matches!(
            path,
            "/admin/health"
                | "/admin/metrics"
                | "/admin/routes"
                | "/admin/cache"
                | "/admin/keys"
                | "/admin/config/reload"
        ) || path.starts_with("/admin/keys/")
            || (path.starts_with("/admin/routes/") && path.ends_with("/canary"))
            || path.starts_with(crate::admin_local::PREFIX))
}

/// The 400 of a bad query parameter `param`.
pub(crate) fn bad(message: impl Into<String>, param: &'static str) -> Error {
    Error::invalid_request(message, Some(param))
}

/// `text` as a whole number in `range`, else the 400 of parameter `name` that says so.
pub(crate) fn number(
    text: &str,
    name: &'static str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, Error> {
    text.parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            bad(
                format!(
                    "`{name}` must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
                name,
            )
        })
}

/// The master key (the admin API answers only with one, so it is there when this runs).
pub(crate) fn master(state: &AppState) -> &str {
    state.master_key.as_ref().map_or("", |k| k.expose())
}

/// A query-string value, `%XX` and `+` decoded; `None` if it is not UTF-8 or escapes badly.
pub(crate) fn decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A cursor for the position `at` (a listing's own text, without a `.` at its end):
/// `AT.TAG`, the tag made with `secret` for `context` (one per listing).
pub(crate) fn cursor(at: &str, secret: &str, context: &str) -> String {
    format!("{at}.{}", tag(secret, context, at))
}

/// The position a cursor names, if `secret` made it for `context`; else the 400 that says
/// to start again.
pub(crate) fn read_cursor<'a>(
    text: &'a str,
    secret: &str,
    context: &str,
) -> Result<&'a str, Error> {
    let refused = || {
        bad(
            "`cursor` is not one this gateway gave out: start again from the first page",
            "cursor",
        )
    };
    let (at, given) = text.rsplit_once('.').ok_or_else(refused)?;
    match same_secret(given, &tag(secret, context, at)) {
        true => Ok(at),
        false => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::ErrorKind;

    fn refused(query: &str, known: &[&'static str]) -> (String, Option<&'static str>) {
        let e = params(query, "/admin/x", known).unwrap_err();
        assert_eq!(e.status_code(), 400, "{query}");
        match e.kind() {
            ErrorKind::InvalidRequest { message, param } => (message.clone(), *param),
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn known_parameters_are_read_once_each_and_decoded() {
        let got = params("a=1&&b=x%20y+z&c", "/admin/x", &["a", "b", "c"]).unwrap();
        assert_eq!(
            got,
            vec![
                ("a", "1".into()),
                ("b", "x y z".into()),
                ("c", String::new())
            ]
        );
        assert!(params("", "/admin/x", &[]).unwrap().is_empty());
        // Names are decoded before they are matched.
        let got = params("%62=2", "/admin/x", &["a", "b"]).unwrap();
        assert_eq!(got, vec![("b", "2".into())]);
        assert_eq!(refused("%zz=1", &["a"]).1, Some("query"));
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        let (m, p) = refused("a=1&colour=red", &["a", "b"]);
        assert_eq!(m, "`colour` is not a parameter of `/admin/x`: use a, b");
        assert_eq!(p, Some("query"));
        let (m, _) = refused("x=1", &[]);
        assert_eq!(m, "`x` is not a parameter: `/admin/x` takes none");
        let (m, p) = refused("a=1&a=2", &["a"]);
        assert!(m.contains("`a` is given more than once"), "{m}");
        assert_eq!(p, Some("a"));
        let (m, p) = refused("a=%E2%28", &["a"]);
        assert!(m.contains("`a` is not URL-encoded"), "{m}");
        assert_eq!(p, Some("a"));
    }

    #[test]
    fn the_endpoints_without_parameters_are_known() {
        for path in [
            "/admin/health",
            "/admin/metrics",
            "/admin/routes",
            "/admin/routes/r/canary",
            "/admin/cache",
            "/admin/keys",
            "/admin/keys/k1",
            "/admin/config/reload",
            "/admin/local/models/m/load",
        ] {
            assert!(takes_none(path), "{path}");
        }
        for path in [
            "/admin/spend",
            "/admin/requests",
            "/admin/samples",
            "/admin/history",
            "/v1/chat/completions",
            "/metrics",
        ] {
            assert!(!takes_none(path), "{path}");
        }
    }
}
