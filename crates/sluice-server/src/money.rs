//! Money: what usage costs at a price, in nano-USD, and nano-USD written as USD.

/// `u64` nano-USD as a decimal USD string (`0.000123`).
pub fn usd(nano: u64) -> String {
    let s = format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.')
        .map_or_else(|| s.to_string(), |s| format!("{s}.0"))
}

/// What `usage` cost at `price`, in nano-USD.
pub fn cost_nano_usd(price: &sluice_core::config::Price, usage: &sluice_types::Usage) -> u64 {
    price.cost_nano_usd(
        usage.prompt_tokens,
        usage.cached_prompt_tokens,
        usage.cache_write_tokens,
        usage.completion_tokens,
    )
}
