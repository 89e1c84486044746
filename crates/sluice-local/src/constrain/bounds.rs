//! An integer's bounds (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) as one
//! inclusive range, checked digit by digit: a sign or digit is taken only if the number can
//! still end within the range (within the matcher's digit limit), so generation never reaches
//! a dead end inside a number.

use serde_json::{Map, Value};

/// Digits allowed in a number's integer part and fraction (the matcher's limit: numbers parse
/// as finite `f64`s).
pub(crate) const MAX_DIGITS: u8 = 16;

/// The bound keywords.
pub(crate) const KEYWORDS: &[&str] =
    &["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];

/// The integers `lo..=hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IntRange {
    pub(crate) lo: i128,
    pub(crate) hi: i128,
}

// === impl IntRange ===

impl IntRange {
    /// The range a schema's bound keywords give (`None` without any), for integers of at most
    /// [`MAX_DIGITS`] digits; the error names the keyword (or says the range is empty).
    pub(crate) fn from_schema(map: &Map<String, Value>) -> Result<Option<Self>, (String, String)> {
        let max_digits = MAX_DIGITS;
        if !KEYWORDS.iter().any(|k| map.contains_key(*k)) {
            return Ok(None);
        }
        let number = |key: &str| -> Result<Option<f64>, (String, String)> {
            match map.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| (key.to_owned(), format!("`{key}` must be a number"))),
            }
        };
        let widest = 10i128.pow(u32::from(max_digits)) - 1;
        // `as` saturates: bounds beyond the digit limit are clamped to it below.
        let mut lo = -widest;
        let mut hi = widest;
        if let Some(m) = number("minimum")? {
            lo = lo.max(m.ceil() as i128);
        }
        if let Some(m) = number("exclusiveMinimum")? {
            lo = lo.max(m.floor() as i128 + 1);
        }
        if let Some(m) = number("maximum")? {
            hi = hi.min(m.floor() as i128);
        }
        if let Some(m) = number("exclusiveMaximum")? {
            hi = hi.min(m.ceil() as i128 - 1);
        }
        if lo > hi {
            return Err((
                String::new(),
                format!(
                    "no integer of at most {max_digits} digits is within the bounds \
                     (`minimum`/`maximum`, exclusive or not)"
                ),
            ));
        }
        Ok(Some(Self { lo, hi }))
    }

    /// Whether the integer of sign `negative` and magnitude `value` is within.
    pub(crate) fn contains(&self, negative: bool, value: u64) -> bool {
        let v = if negative {
            -i128::from(value)
        } else {
            i128::from(value)
        };
        (self.lo..=self.hi).contains(&v)
    }

    /// Whether a number begun with sign `negative` and `digits` digits of magnitude `value`
    /// (none yet: only a `-`) can still end within the range, with at most [`MAX_DIGITS`]
    /// digits; a leading `0` ends the digits.
    pub(crate) fn reachable(&self, negative: bool, value: u64, digits: u8) -> bool {
        let max_digits = MAX_DIGITS;
        if digits == 0 {
            // Any magnitude may follow the `-`.
            let widest = 10i128.pow(u32::from(max_digits)) - 1;
            return self.meets(negative, 0, widest);
        }
        if value == 0 {
            return self.contains(negative, 0);
        }
        (0..=max_digits.saturating_sub(digits)).any(|more| {
            let scale = 10i128.pow(u32::from(more));
            let first = i128::from(value) * scale;
            self.meets(negative, first, first + scale - 1)
        })
    }

    /// Whether magnitudes `from..=to` of sign `negative` meet the range.
    fn meets(&self, negative: bool, from: i128, to: i128) -> bool {
        let (a, b) = if negative { (-to, -from) } else { (from, to) };
        a <= self.hi && self.lo <= b
    }
}
