//! Prices of models, in USD per million tokens, and what a request's tokens cost at them.

use serde::Deserialize;

/// Price of a model in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens read from the provider's prompt cache (default: `input`).
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's prompt cache (default: `input`; Anthropic
    /// charges 1.25x `input` for 5-minute cache writes).
    pub cache_write: Option<f64>,
}

impl Price {
    /// What `prompt` tokens (of which `cached` were prompt-cache reads and `written`
    /// prompt-cache writes) and `completion` tokens (reasoning included) cost, in nano-USD
    /// (USD per million tokens is nano-USD per thousandth of a token), each kind rounded
    /// once, so sums of many requests are exact integers.
    pub fn cost_nano_usd(&self, prompt: u64, cached: u64, written: u64, completion: u64) -> u64 {
        let cached = cached.min(prompt);
        let written = written.min(prompt - cached);
        let nano = |tokens: u64, usd_per_million: f64| {
            (tokens as f64 * usd_per_million * 1000.0).round() as u64
        };
        nano(prompt - cached - written, self.input)
            + nano(cached, self.cached_input.unwrap_or(self.input))
            + nano(written, self.cache_write.unwrap_or(self.input))
            + nano(completion, self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_token_at_its_own_price() {
        let price = Price {
            input: 2.0,
            output: 8.0,
            cached_input: Some(0.5),
            cache_write: Some(2.5),
        };
        // 1,000 tokens at $1 per million: 1,000 * 1,000 nano-USD.
        assert_eq!(price.cost_nano_usd(1_000, 0, 0, 0), 2_000_000);
        assert_eq!(price.cost_nano_usd(0, 0, 0, 1_000), 8_000_000);
        assert_eq!(
            price.cost_nano_usd(1_000, 200, 300, 100),
            500 * 2_000 + 200 * 500 + 300 * 2_500 + 100 * 8_000
        );
        // Cached and written tokens are part of the prompt, never more than it.
        assert_eq!(price.cost_nano_usd(100, 500, 500, 0), 100 * 500);
        let plain = Price {
            cached_input: None,
            cache_write: None,
            ..price
        };
        assert_eq!(plain.cost_nano_usd(1_000, 200, 300, 0), 1_000 * 2_000);
    }
}
