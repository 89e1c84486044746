//! `POST /admin/local/models/{name}/load` and `POST /admin/local/models/{name}/unload`: an
//! operator loads or unloads a local model (master key). `{name}` is the model's name in the
//! pool, as `/health/detailed`'s `local.models` lists it, percent-encoded.

use crate::handlers::{admin_auth, method_not_allowed, not_found};
use crate::response::{error_response, json, ResponseBody};
use crate::state::AppState;
use http::{Method, Response, StatusCode};
use sluice_core::ErrorKind;

/// The prefix of the paths this module serves.
pub const PREFIX: &str = "/admin/local/models/";

/// What is asked of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Load,
    Unload,
}

/// Serves `path` (under [`PREFIX`]).
pub async fn serve(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Response<ResponseBody> {
    let target = path[PREFIX.len()..]
        .rsplit_once('/')
        .and_then(|(name, action)| {
            let action = match action {
                "load" => Action::Load,
                "unload" => Action::Unload,
                _ => return None,
            };
            Some((percent_decode(name)?, action))
        });
    let Some((name, action)) = target else {
        return not_found(path);
    };
    if method != Method::POST {
        return method_not_allowed(method, path, "POST");
    }
    if let Err(e) = admin_auth(state, headers) {
        return error_response(&e);
    }
    let Some(local) = state.local.as_deref() else {
        return error_response(
            &ErrorKind::InvalidRequest {
                message: "no local models are configured (no provider of `type = \"local\"` in a build with the local runtime)".into(),
                param: None,
            }
            .into(),
        );
    };
    let result = match action {
        Action::Load => crate::local::load(local, &name).await,
        Action::Unload => crate::local::unload(local, &name),
    };
    match result {
        Ok(v) => json(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default()),
        Err(e) => error_response(&e),
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn names_are_percent_decoded() {
        assert_eq!(
            percent_decode("qwen2.5%3A0.5b").as_deref(),
            Some("qwen2.5:0.5b")
        );
        assert_eq!(percent_decode("org%2Fmodel").as_deref(), Some("org/model"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%4", "%zz", "%ff", ""] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
