//! A number's bounds (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) and
//! `multipleOf` as one [`NumRange`]: an inclusive range of values on a grid of 10⁻¹⁶ (the most
//! fraction digits the matcher writes) and a step the values are multiples of. The matcher
//! checks it digit by digit: a sign, digit or point is taken only if the number can still end
//! within the range on the step (within the digit limits), so generation never reaches a
//! dead end inside a number.
//!
//! Exactly, whichever way a validator reads numbers: the bounds are `f64`s (as the schema is
//! parsed), and a value is kept only if both its exact decimal value and the `f64` it parses
//! to satisfy them. An inclusive bound is compared with its shortest decimal (`0.1`, not the
//! `f64`'s `0.1000000000000000055…`; rounding is monotonic, so the parsed value satisfies it
//! too); an exclusive bound is moved to the midpoint between it and its neighbouring `f64`, so
//! that no value allowed parses to the bound itself. `multipleOf` is taken when it is an
//! integer or a binary fraction `m/2ʲ` with `j ≤ 16` (`0.5`, `0.25`, `2.5`): then values that
//! are exact multiples of it, within `2⁵³` times its power of two, are exact `f64`s whose
//! quotient by it is an exact integer, so validators that divide in floating point agree.
//! Other steps (`0.1`, `0.01`: not binary fractions, and `0.7 / 0.1` is `6.999…` in floating
//! point) are refused. Bounded numbers are written without an exponent.

use serde_json::{Map, Value};

/// Digits allowed in a number's integer part and fraction (the matcher's limit: numbers parse
/// as finite `f64`s).
pub(crate) const MAX_DIGITS: u8 = 16;

/// The keywords a [`NumRange`] is made of.
pub(crate) const KEYWORDS: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

/// One in grid units: values are counted in 10⁻¹⁶.
pub(crate) const UNIT: i128 = 10i128.pow(MAX_DIGITS as u32);
/// The widest magnitude written: 16 nines before the point and 16 after.
const WIDEST: i128 = UNIT * UNIT - 1;
/// Beyond every value written (a bound outside the digit limits saturates to it).
const BEYOND: i128 = 2 * UNIT * UNIT;

/// The values `lo..=hi` that are multiples of `step`, in grid units (10⁻¹⁶).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NumRange {
    pub(crate) lo: i128,
    pub(crate) hi: i128,
    /// `UNIT` (or a multiple of it) for integers.
    pub(crate) step: i128,
}

/// A keyword the schema gives wrongly or that cannot be enforced, and why.
pub(crate) type KeywordError = (String, String);

// === impl NumRange ===

impl NumRange {
    /// The range a schema's keywords give (`None` without any) for an `integer` or a
    /// `number`; the error names the keyword (none when the range is empty).
    pub(crate) fn from_schema(
        map: &Map<String, Value>,
        integer: bool,
    ) -> Result<Option<Self>, KeywordError> {
        if !KEYWORDS.iter().any(|k| map.contains_key(*k)) {
            return Ok(None);
        }
        let number = |key: &str| -> Result<Option<f64>, KeywordError> {
            match map.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .map(Some)
                    .ok_or_else(|| (key.to_owned(), format!("`{key}` must be a number"))),
            }
        };
        let mut range = Self {
            lo: -WIDEST,
            hi: WIDEST,
            step: if integer { UNIT } else { 1 },
        };
        if let Some(m) = number("minimum")? {
            range.lo = range.lo.max(grid(shortest(m), Round::Up));
        }
        if let Some(m) = number("exclusiveMinimum")? {
            range.lo = range
                .lo
                .max(grid(midpoint(m, m.next_up()), Round::Down) + 1);
        }
        if let Some(m) = number("maximum")? {
            range.hi = range.hi.min(grid(shortest(m), Round::Down));
        }
        if let Some(m) = number("exclusiveMaximum")? {
            range.hi = range
                .hi
                .min(grid(midpoint(m.next_down(), m), Round::Up) - 1);
        }
        if let Some(k) = number("multipleOf")? {
            let (step, exact) = multiple_of(k)?;
            range.step = lcm(range.step, step);
            range.lo = range.lo.max(-exact);
            range.hi = range.hi.min(exact);
        }
        range.lo = ceil_to(range.lo, range.step);
        range.hi = floor_to(range.hi, range.step);
        if range.lo > range.hi {
            let what = if integer { "integer" } else { "number" };
            return Err((
                String::new(),
                format!(
                    "no {what} with at most {MAX_DIGITS} digits before and after the point is \
                     within the bounds (`minimum`/`maximum`, exclusive or not, and `multipleOf`)"
                ),
            ));
        }
        Ok(Some(range))
    }

    /// Whether the value of sign `negative` and magnitude `grid` (in grid units) is within.
    pub(crate) fn contains(&self, negative: bool, grid: i128) -> bool {
        let v = if negative { -grid } else { grid };
        (self.lo..=self.hi).contains(&v) && v % self.step == 0
    }

    /// Whether some value of sign `negative` and magnitude in `from..=to` is within.
    pub(crate) fn meets(&self, negative: bool, from: i128, to: i128) -> bool {
        let (a, b) = if negative { (-to, -from) } else { (from, to) };
        let (a, b) = (a.max(self.lo), b.min(self.hi));
        a <= b && ceil_to(a, self.step) <= b
    }

    /// Whether a number begun with sign `negative` and an integer part `int` of `digits`
    /// digits (no leading zero) can still end within, with more digits or a fraction.
    pub(crate) fn reachable_int(&self, negative: bool, int: u64, digits: u8) -> bool {
        (0..=MAX_DIGITS.saturating_sub(digits)).any(|more| {
            let scale = 10i128.pow(u32::from(more)) * UNIT;
            let first = i128::from(int) * scale;
            self.meets(negative, first, first + scale - 1)
        })
    }

    /// Whether a number whose magnitude so far is `grid` (grid units), with `fraction`
    /// digits after the point, can still end within (more fraction digits may follow).
    pub(crate) fn reachable_fraction(&self, negative: bool, grid: i128, fraction: u8) -> bool {
        let rest = 10i128.pow(u32::from(MAX_DIGITS.saturating_sub(fraction)));
        self.meets(negative, grid, grid + rest - 1)
    }

    /// Whether any value of sign `negative` is within (after a lone `-`).
    pub(crate) fn reachable_sign(&self, negative: bool) -> bool {
        self.meets(negative, 0, WIDEST)
    }
}

/// `multipleOf` `k`: its step in grid units and the widest magnitude whose multiples are
/// exact `f64`s with exact quotients, or why it is refused.
fn multiple_of(k: f64) -> Result<(i128, i128), KeywordError> {
    let refuse = |why: String| Err(("multipleOf".to_owned(), why));
    if k <= 0.0 {
        return refuse("`multipleOf` must be greater than 0".into());
    }
    let (mut mant, mut exp) = decompose(k);
    while mant % 2 == 0 {
        mant /= 2;
        exp += 1;
    }
    if exp < -i32::from(MAX_DIGITS) {
        return refuse(format!(
            "`multipleOf` {k} cannot be enforced exactly: only integers and binary fractions \
             m/2^j with j ≤ {MAX_DIGITS} (0.5, 0.25, 2.5, …) are, since validators that divide in \
             floating point disagree about other steps' multiples (0.7 / 0.1 is 6.999…)"
        ));
    }
    let step = grid(
        Exact {
            mant,
            exp,
            exp10: 0,
        },
        Round::Down,
    );
    // Multiples n·k are exact `f64`s, and so are their quotients, while n·mant < 2⁵³.
    let exact = match u32::try_from(53 + exp) {
        Ok(bits) if bits < 64 => ((1i128 << bits) * UNIT - 1).min(WIDEST),
        _ => WIDEST,
    };
    Ok((step.clamp(1, BEYOND), exact))
}

/// An exact value `mant · 2^exp · 10^exp10`.
#[derive(Debug, Clone, Copy)]
struct Exact {
    mant: i128,
    exp: i32,
    exp10: i32,
}

/// `x` as `mant · 2^exp` (`mant` below 2⁵³ in magnitude).
fn decompose(x: f64) -> (i128, i32) {
    let bits = x.to_bits();
    let sign = if bits >> 63 == 1 { -1 } else { 1 };
    let field = ((bits >> 52) & 0x7ff) as i32;
    let fraction = i128::from(bits & ((1 << 52) - 1));
    if field == 0 {
        (sign * fraction, -1074)
    } else {
        (sign * (fraction | 1 << 52), field - 1075)
    }
}

/// The midpoint of two adjacent `f64`s, exactly.
fn midpoint(a: f64, b: f64) -> Exact {
    let ((ma, ea), (mb, eb)) = (decompose(a), decompose(b));
    let e = ea.min(eb);
    // Adjacent `f64`s differ in exponent by at most one.
    let sum = (ma << (ea - e)) + (mb << (eb - e));
    Exact {
        mant: sum,
        exp: e - 1,
        exp10: 0,
    }
}

/// The shortest decimal that parses to `x` (what the schema most likely says).
fn shortest(x: f64) -> Exact {
    let text = format!("{x:e}");
    let (digits, exp10) = text.split_once('e').unwrap_or((&text, "0"));
    let exp10: i32 = exp10.parse().unwrap_or(0);
    let fraction = digits.split_once('.').map_or(0, |(_, f)| f.len() as i32);
    let mant: i128 = digits.replace('.', "").parse().unwrap_or(0);
    Exact {
        mant,
        exp: 0,
        exp10: exp10 - fraction,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Round {
    Down,
    Up,
}

/// `x` in grid units (`x · 10¹⁶`), rounded; saturated at ±[`BEYOND`] beyond the digit limits.
fn grid(x: Exact, round: Round) -> i128 {
    if x.mant == 0 {
        return 0;
    }
    // Far beyond: |x| ≥ 2^(bits of mant + exp) · 10^exp10 is checked loosely first.
    let magnitude = (x.mant.unsigned_abs().ilog2() as i32 + 1) + x.exp;
    let decimal = x.exp10 + 16;
    if f64::from(magnitude) * std::f64::consts::LOG10_2 + f64::from(decimal) > 34.0 {
        return BEYOND * x.mant.signum();
    }
    let mut num = x.mant;
    let mut den_twos = 0u32;
    let mut den_tens = 0u32;
    if x.exp >= 0 {
        num <<= x.exp;
    } else {
        den_twos = x.exp.unsigned_abs();
    }
    if decimal >= 0 {
        num *= 10i128.pow(decimal as u32);
    } else {
        den_tens = decimal.unsigned_abs();
    }
    let num = divide(num, Divisor::Pow2(den_twos), round);
    divide(num, Divisor::Pow10(den_tens), round)
}

enum Divisor {
    Pow2(u32),
    Pow10(u32),
}

/// `num` divided by a power, rounded down or up.
fn divide(num: i128, by: Divisor, round: Round) -> i128 {
    let den = match by {
        Divisor::Pow2(n) if n < 126 => 1i128 << n,
        Divisor::Pow10(n) if n < 38 => 10i128.pow(n),
        // Larger than any `num`: the quotient is within (−1, 1).
        _ => {
            return match (round, num.signum()) {
                (Round::Down, -1) => -1,
                (Round::Up, 1) => 1,
                _ => 0,
            }
        }
    };
    let down = num.div_euclid(den);
    if round == Round::Up && num.rem_euclid(den) != 0 {
        down + 1
    } else {
        down
    }
}

/// The least multiple of `step` at or above `x`.
fn ceil_to(x: i128, step: i128) -> i128 {
    let r = x.rem_euclid(step);
    if r == 0 {
        x
    } else {
        x.saturating_add(step - r)
    }
}

/// The greatest multiple of `step` at or below `x`.
fn floor_to(x: i128, step: i128) -> i128 {
    x - x.rem_euclid(step)
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The least common multiple, saturated at [`BEYOND`] (only 0 is a multiple within the
/// digit limits then).
fn lcm(a: i128, b: i128) -> i128 {
    (a / gcd(a, b))
        .checked_mul(b)
        .map_or(BEYOND, |l| l.min(BEYOND))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(schema: Value, integer: bool) -> NumRange {
        NumRange::from_schema(schema.as_object().expect("object"), integer)
            .expect("compiles")
            .expect("bounded")
    }

    #[test]
    fn bounds_are_read_as_decimals_and_exclusive_ones_past_their_neighbour() {
        let r = range(serde_json::json!({"minimum": 0.1, "maximum": 2.5}), false);
        assert_eq!((r.lo, r.hi, r.step), (UNIT / 10, 25 * UNIT / 10, 1));
        let r = range(
            serde_json::json!({"exclusiveMinimum": 0, "exclusiveMaximum": 1}),
            false,
        );
        assert_eq!((r.lo, r.hi), (1, UNIT - 1));
        // Near 100 an `f64` step is 1.4e-14: 99.99999999999999999 would parse to 100.
        let r = range(serde_json::json!({"exclusiveMaximum": 100}), false);
        assert_eq!(r.hi, 100 * UNIT - 72);
        let text = format!("{}.{:016}", r.hi / UNIT, r.hi % UNIT);
        assert!(text.parse::<f64>().expect("parses") < 100.0, "{text}");
        let above = format!("{}.{:016}", (r.hi + 1) / UNIT, (r.hi + 1) % UNIT);
        assert_eq!(above.parse::<f64>().expect("parses"), 100.0, "{above}");
        let r = range(
            serde_json::json!({"exclusiveMinimum": -2.5, "maximum": 3}),
            true,
        );
        assert_eq!((r.lo, r.hi, r.step), (-2 * UNIT, 3 * UNIT, UNIT));
        let r = range(serde_json::json!({"multipleOf": 2.5}), true);
        assert_eq!(r.step, 5 * UNIT);
        let r = range(
            serde_json::json!({"multipleOf": 0.25, "minimum": 0.3}),
            false,
        );
        assert_eq!((r.lo, r.step), (UNIT / 2, UNIT / 4));
        // Beyond 2^53 · 2^-2 the multiples of 0.25 are not all exact `f64`s.
        assert_eq!(r.hi, floor_to((1i128 << 51) * UNIT - 1, UNIT / 4));
    }

    #[test]
    fn steps_that_floating_point_cannot_divide_are_refused() {
        for k in [0.1, 0.01, 1.0 / 3.0, 0.0, -2.0] {
            let map = serde_json::json!({"multipleOf": k});
            let e = NumRange::from_schema(map.as_object().expect("object"), false)
                .expect_err("refused");
            assert_eq!(e.0, "multipleOf", "{k}");
        }
    }
}
