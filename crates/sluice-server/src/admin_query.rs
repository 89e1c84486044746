//! What the admin API's listings (`/admin/requests`, `/admin/samples`) share in reading a
//! query: its values URL-decoded, a 400 naming the parameter at fault, and cursors tagged
//! with the master key, so that a client can only go on from a page this gateway gave out.

use crate::state::AppState;
use sluice_core::keys::{same_secret, tag};
use sluice_core::Error;

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
