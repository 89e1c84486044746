//! String `format`s, each as a pattern (anchored, ASCII) that produces only valid values: a
//! subset of each format where the whole is not regular or not worth it (documented per
//! format and in the README). Other formats are refused by the schema compiler.

/// The formats compiled, by name.
pub(crate) const FORMATS: &[&str] = &[
    "date",
    "time",
    "date-time",
    "uuid",
    "ipv4",
    "ipv6",
    "email",
    "hostname",
    "uri",
];

/// RFC 3339 `full-date`, days checked against the month (29 February in leap years only).
const DATE: &str = concat!(
    "(?:[0-9]{4}-(?:",
    "(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)",
);

/// RFC 3339 `full-time` without leap seconds, at most 9 fraction digits, `Z` or an offset.
const TIME: &str = concat!(
    "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?",
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])",
);

const HEX: &str = "[0-9a-fA-F]";

/// One DNS label: letters, digits and inner hyphens, at most 63 characters.
const LABEL: &str = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";

/// The pattern (without anchors) of `format`, and the longest string it may be.
pub(crate) fn pattern(format: &str) -> Option<(String, Option<u32>)> {
    let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let uri_char = "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
    Some(match format {
        "date" => (DATE.to_owned(), None),
        "time" => (TIME.to_owned(), None),
        "date-time" => (format!("{DATE}T{TIME}"), None),
        "uuid" => (
            format!("{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}"),
            None,
        ),
        "ipv4" => (format!("(?:{octet}\\.){{3}}{octet}"), None),
        // The full form only: eight groups, no `::`.
        "ipv6" => (format!("{HEX}{{1,4}}(?::{HEX}{{1,4}}){{7}}"), None),
        // A dot-atom local part and a domain of labels with an alphabetic top-level label.
        "email" => (
            format!("[A-Za-z0-9_+-]+(?:\\.[A-Za-z0-9_+-]+)*@(?:{LABEL}\\.)+[A-Za-z]{{2,63}}"),
            Some(254),
        ),
        "hostname" => (format!("{LABEL}(?:\\.{LABEL})*"), Some(253)),
        // A scheme, `//`, a host of letters, digits, dots and hyphens, an optional port, then
        // path, query and fragment characters (or percent escapes).
        "uri" => (
            format!(
                "[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9.-]+(?::[0-9]{{1,5}})?(?:/{uri_char}*)*\
                 (?:\\?(?:{uri_char}|[/?])*)?(?:#(?:{uri_char}|[/?])*)?"
            ),
            None,
        ),
        _ => return None,
    })
}
