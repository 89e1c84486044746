//! Whether two questions whose embeddings are alike ask the same thing. Embeddings miss what
//! changes an answer while changing few words: "convert Celsius to Fahrenheit" and the
//! reverse embed at cosine 0.995 with all-MiniLM-L6-v2, "three tips" and "ten tips" at 0.947,
//! "World War I" and "World War II" at 0.905. So a semantic candidate is served only when
//! the two questions also have
//!
//! 1. **the same numbers**: digits, number words ("three", "twenty"), ordinals ("third") and
//!    Roman numerals ("VIII"; a lone "I" only after a capitalised word, "War I"), as a
//!    multiset;
//! 2. **the same named entities**: every capitalised word of one that is not a stop word
//!    ("What", "How", "Please", …, "I") appears, in any case, in the other (so "Paris" against
//!    "London" differs, while "Convert …" against "convert …" does not);
//! 3. **the same direction**: around each directional word ("to", "from", "into", "than",
//!    "vs", "versus", "over", "per"), the key terms before and after it (the nearest words
//!    that are not stop words), as a multiset of (before, word, after).
//!
//! Each check costs a pass over the two texts (microseconds); what each catches is listed in
//! the tests.

use std::collections::BTreeSet;

/// Why two questions are not the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// Different numbers.
    Numbers,
    /// Different named entities.
    Entities,
    /// Their key terms stand the other way around a directional word.
    Order,
}

/// `Ok` when `a` and `b` pass every check.
pub fn same_question(a: &str, b: &str) -> Result<(), Difference> {
    let (a, b) = (Parsed::new(a), Parsed::new(b));
    if a.numbers != b.numbers {
        return Err(Difference::Numbers);
    }
    let missing = |x: &Parsed, y: &Parsed| x.entities.iter().any(|e| !y.words.contains(e));
    if missing(&a, &b) || missing(&b, &a) {
        return Err(Difference::Entities);
    }
    if a.directions != b.directions {
        return Err(Difference::Order);
    }
    Ok(())
}

struct Parsed {
    numbers: Vec<String>,
    entities: BTreeSet<String>,
    /// Every word, lowercased.
    words: BTreeSet<String>,
    /// (term before, directional word, term after), sorted.
    directions: Vec<(String, String, String)>,
}

/// Words that say which way a relation goes.
const DIRECTIONAL: [&str; 8] = ["to", "from", "into", "than", "vs", "versus", "over", "per"];

impl Parsed {
    fn new(text: &str) -> Self {
        let mut numbers = Vec::new();
        let mut entities = BTreeSet::new();
        // Every word, lowercased, with whether it is a key term.
        let mut tokens: Vec<(String, bool)> = Vec::new();
        let mut sentence_start = true;
        let mut previous_capitalised = false;
        for (word, ends_sentence) in words(text) {
            let lower = word.to_lowercase();
            let capitalised = word.chars().next().is_some_and(char::is_uppercase);
            let stop = STOP_WORDS.contains(&lower.as_str());
            if let Some(n) = number(&word, &lower, previous_capitalised) {
                numbers.push(n.clone());
                tokens.push((n, true));
            } else if capitalised && !stop {
                entities.insert(lower.clone());
                tokens.push((lower, true));
            } else {
                tokens.push((lower, !stop));
            }
            previous_capitalised = capitalised && !sentence_start;
            sentence_start = ends_sentence;
        }
        numbers.sort();
        Self {
            numbers,
            entities,
            words: tokens.iter().map(|(w, _)| w.clone()).collect(),
            directions: directions(&tokens),
        }
    }
}

/// (nearest key term before, directional word, nearest key term after) for each
/// directional word, sorted.
fn directions(tokens: &[(String, bool)]) -> Vec<(String, String, String)> {
    let term = |t: Option<&(String, bool)>| t.map(|(w, _)| w.clone()).unwrap_or_default();
    let mut out: Vec<(String, String, String)> = tokens
        .iter()
        .enumerate()
        .filter(|(_, (w, _))| DIRECTIONAL.contains(&w.as_str()))
        .map(|(i, (w, _))| {
            let before = term(tokens[..i].iter().rev().find(|t| t.1));
            let after = term(tokens[i + 1..].iter().find(|t| t.1));
            (before, w.clone(), after)
        })
        .collect();
    out.sort();
    out
}

/// The words of `text` (letters and digits, with `.` or `,` inside a number), each with
/// whether a sentence ends after it.
fn words(text: &str) -> Vec<(String, bool)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let inside_number = (c == '.' || c == ',')
            && word.chars().last().is_some_and(|p| p.is_ascii_digit())
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_alphanumeric() || inside_number {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push((std::mem::take(&mut word), false));
        }
        if matches!(c, '.' | '?' | '!' | '\n') {
            if let Some(last) = out.last_mut() {
                last.1 = true;
            }
        }
    }
    if !word.is_empty() {
        out.push((word, true));
    }
    out
}

/// A word as a number, normalised: digits without leading zeros (a decimal comma as a
/// point), number words and ordinals as digits, Roman numerals after a capitalised word.
fn number(word: &str, lower: &str, after_capitalised: bool) -> Option<String> {
    if word.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        let digits: String = word
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
            .collect();
        let trimmed = digits.replace(',', ".");
        let trimmed = trimmed.trim_start_matches('0');
        // "3rd", "21st": the digits alone.
        return Some(if trimmed.is_empty() { "0" } else { trimmed }.to_string());
    }
    if let Some(i) = NUMBER_WORDS.iter().position(|w| *w == lower) {
        return Some(i.to_string());
    }
    if let Some(i) = ORDINALS.iter().position(|w| *w == lower) {
        return Some((i + 1).to_string());
    }
    if let Some(n) = TENS.iter().position(|w| *w == lower) {
        return Some(((n + 2) * 10).to_string());
    }
    match lower {
        "hundred" => return Some("100".into()),
        "thousand" => return Some("1000".into()),
        "million" => return Some("1000000".into()),
        "billion" => return Some("1000000000".into()),
        _ => {}
    }
    // "II", "VIII", "XIV" anywhere; "I", "V", "X", "L", "C" alone only after a capitalised
    // word ("War I"), not the pronoun.
    let long = word.len() >= 2 && word.chars().all(|c| matches!(c, 'I' | 'V' | 'X'));
    let roman = word
        .chars()
        .all(|c| matches!(c, 'I' | 'V' | 'X' | 'L' | 'C'));
    if long || (roman && after_capitalised) {
        return roman_value(word).map(|v| v.to_string());
    }
    None
}

fn roman_value(s: &str) -> Option<u32> {
    let value = |c| match c {
        'I' => 1,
        'V' => 5,
        'X' => 10,
        'L' => 50,
        'C' => 100,
        _ => 0,
    };
    let digits: Vec<u32> = s.chars().map(value).collect();
    let mut total = 0;
    for (i, &d) in digits.iter().enumerate() {
        if digits.get(i + 1).is_some_and(|&next| next > d) {
            total -= d as i64;
        } else {
            total += d as i64;
        }
    }
    u32::try_from(total).ok().filter(|&v| v > 0)
}

const NUMBER_WORDS: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

const ORDINALS: [&str; 12] = [
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth",
];

/// Words that carry no key meaning, and that a question may begin with capitalised.
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "at", "for", "from", "by", "with", "about", "into",
    "and", "or", "but", "is", "are", "was", "were", "be", "been", "being", "do", "does", "did",
    "can", "could", "would", "should", "will", "shall", "may", "might", "must", "i", "me", "my",
    "you", "your", "we", "our", "it", "its", "this", "that", "these", "those", "what", "whats",
    "which", "who", "whom", "whose", "when", "where", "why", "how", "please", "tell", "give",
    "explain", "describe", "show", "list", "write", "make", "let", "us", "some", "any", "there",
    "here", "as", "so", "if", "then", "than", "just", "also", "very", "really", "hi", "hello",
    "hey", "thanks", "thank", "kindly", "s", "t",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paraphrases_pass() {
        for (a, b) in [
            (
                "What is the capital of France?",
                "Tell me the capital of France.",
            ),
            (
                "How do I reverse a list in Python?",
                "How can I reverse a list in Python",
            ),
            (
                "Give me 3 tips for sleeping better",
                "Please give three tips for better sleeping",
            ),
            (
                "What is the boiling point of water?",
                "what's the boiling point of water",
            ),
        ] {
            assert_eq!(same_question(a, b), Ok(()), "{a} / {b}");
        }
    }

    #[test]
    fn near_misses_are_caught_by_the_right_check() {
        for (a, b, why) in [
            (
                "Give three tips for sleeping",
                "Give ten tips for sleeping",
                Difference::Numbers,
            ),
            (
                "What happened in 1914?",
                "What happened in 1941?",
                Difference::Numbers,
            ),
            (
                "Causes of World War I",
                "Causes of World War II",
                Difference::Numbers,
            ),
            (
                "Who won the third match?",
                "Who won the fourth match?",
                Difference::Numbers,
            ),
            (
                "Weather in Paris today",
                "Weather in London today",
                Difference::Entities,
            ),
            (
                "Paris weather today",
                "London weather today",
                Difference::Entities,
            ),
            (
                "Convert Celsius to Fahrenheit",
                "Convert Fahrenheit to Celsius",
                Difference::Order,
            ),
            (
                "translate english to french",
                "translate french to english",
                Difference::Order,
            ),
            (
                "Is Python faster than Java",
                "Is Java faster than Python",
                Difference::Order,
            ),
        ] {
            assert_eq!(same_question(a, b), Err(why), "{a} / {b}");
        }
    }

    #[test]
    fn numbers_normalise() {
        assert_eq!(same_question("cost of 2,5 kg", "cost of 2.5 kg"), Ok(()));
        assert_eq!(same_question("list 10 cities", "list ten cities"), Ok(()));
        assert_eq!(same_question("the 3rd item", "the third item"), Ok(()));
        assert_eq!(
            same_question("Henry VIII wives", "Henry VIII's wives"),
            Ok(())
        );
        assert_eq!(
            same_question("Henry VIII wives", "Henry VII wives"),
            Err(Difference::Numbers)
        );
    }
}
