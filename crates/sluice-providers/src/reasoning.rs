//! What a chat request's `reasoning_effort` means to providers that take a thinking budget
//! in tokens instead (Anthropic's `thinking.budget_tokens`, Gemini's
//! `thinkingConfig.thinkingBudget`), and back (the inbound `/v1/messages`' `budget_tokens`
//! as an effort).
//!
//! The budgets: `minimal` and `low` 1,024 tokens (Anthropic's smallest), `medium` 4,096,
//! `high` 16,384; `none` turns thinking off. Efforts: a budget under 2,048 is `low`, under
//! 8,192 `medium`, else `high`.

/// The thinking budget for `effort`: `Some(None)` for `none` (thinking off), `None` for an
/// effort sluice does not know.
pub fn budget(effort: &str) -> Option<Option<u64>> {
    match effort {
        "none" => Some(None),
        "minimal" | "low" => Some(Some(1024)),
        "medium" => Some(Some(4096)),
        "high" => Some(Some(16384)),
        _ => None,
    }
}

/// The effort closest to a budget of `tokens`.
pub fn effort(tokens: u64) -> &'static str {
    match tokens {
        0..2048 => "low",
        2048..8192 => "medium",
        _ => "high",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efforts_and_budgets_round_trip() {
        for e in ["low", "medium", "high"] {
            let b = budget(e).flatten().unwrap();
            assert_eq!(effort(b), e);
        }
        assert_eq!(budget("none"), Some(None));
        assert_eq!(budget("extreme"), None);
    }
}
