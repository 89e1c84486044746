//! Prometheus label values: escaped for the text format.

/// `v` escaped for a label value (backslash, double quote, newline).
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
