//! Prices of models, in USD per million tokens (and, for media, per million characters, per
//! minute of audio, per image and per request), and what a request costs at them.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Price of a model: USD per million tokens, and the media units it bills by. Every kind
/// that applies is added up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens.
    #[serde(default)]
    pub input: f64,
    /// Completion tokens.
    #[serde(default)]
    pub output: f64,
    /// Prompt tokens read from the provider's prompt cache (default: `input`).
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's prompt cache (default: `input`; Anthropic
    /// charges 1.25x `input` for 5-minute cache writes).
    pub cache_write: Option<f64>,
    /// USD per million characters of input (text to speech: `/v1/audio/speech`).
    #[serde(default)]
    pub character: Option<f64>,
    /// USD per minute of audio (speech to text), billed by the millisecond.
    #[serde(default)]
    pub audio_minute: Option<f64>,
    /// USD per image made: one price, or a table by size and quality.
    #[serde(default)]
    pub image: Option<ImagePrice>,
    /// USD per request (a rerank search, a moderation), whatever it holds.
    #[serde(default)]
    pub request: Option<f64>,
    /// Prompt tokens of a batch forwarded to the provider's Batch API (default: half of
    /// `input`).
    #[serde(default)]
    pub batch_input: Option<f64>,
    /// Completion tokens of a forwarded batch (default: half of `output`).
    #[serde(default)]
    pub batch_output: Option<f64>,
}

/// What an image costs: `image = 0.04`, or `image = { "1024x1024" = 0.04,
/// "1024x1024/hd" = 0.08, "default" = 0.04 }` (the most specific entry applies: size and
/// quality, then size, then `default`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ImagePrice {
    /// One price for every image.
    Flat(f64),
    /// Prices by size (`WIDTHxHEIGHT`) and quality.
    #[serde(deserialize_with = "image_table")]
    Table(Arc<[ImageRate]>),
}

/// One entry of an image price table.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRate {
    /// `(width, height)`; `None` for `default`.
    pub size: Option<(u16, u16)>,
    /// The quality (`standard`, `hd`, `low`, `medium`, `high`), lowercase; `None` for any.
    pub quality: Option<Box<str>>,
    /// USD per image.
    pub usd: f64,
}

fn image_table<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<[ImageRate]>, D::Error> {
    let raw = BTreeMap::<String, f64>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, usd)| image_rate(&k, usd).map_err(serde::de::Error::custom))
        .collect()
}

fn image_rate(key: &str, usd: f64) -> Result<ImageRate, String> {
    if key == "default" {
        return Ok(ImageRate {
            size: None,
            quality: None,
            usd,
        });
    }
    let (size, quality) = match key.split_once('/') {
        Some((s, q)) => (s, Some(q.to_ascii_lowercase().into_boxed_str())),
        None => (key, None),
    };
    let size = parse_size(size).ok_or_else(|| {
        format!(
            "image price key `{key}`: expected `WIDTHxHEIGHT`, `WIDTHxHEIGHT/QUALITY` or `default`"
        )
    })?;
    Ok(ImageRate {
        size: Some(size),
        quality,
        usd,
    })
}

/// `1024x1024` as `(1024, 1024)`.
pub fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (w, h) = s.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

impl ImagePrice {
    /// USD per image of `size` and `quality`; `None` when the table prices neither it nor
    /// a `default`.
    pub fn per_image(&self, size: Option<(u16, u16)>, quality: Option<&str>) -> Option<f64> {
        let table = match self {
            Self::Flat(usd) => return Some(*usd),
            Self::Table(t) => t,
        };
        let exact = table.iter().find(|r| {
            r.size.is_some()
                && r.size == size
                && r.quality.is_some()
                && r.quality.as_deref() == quality
        });
        let by_size = || {
            table
                .iter()
                .find(|r| r.size.is_some() && r.size == size && r.quality.is_none())
        };
        let default = || table.iter().find(|r| r.size.is_none());
        exact.or_else(by_size).or_else(default).map(|r| r.usd)
    }

    /// Every price in it.
    pub fn values(&self) -> Vec<f64> {
        match self {
            Self::Flat(usd) => vec![*usd],
            Self::Table(t) => t.iter().map(|r| r.usd).collect(),
        }
    }
}

/// What a request is billed by besides tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Billed<'a> {
    /// Characters of input (text to speech).
    pub characters: u64,
    /// Milliseconds of audio.
    pub audio_ms: u64,
    /// Images made.
    pub images: u64,
    /// Their size.
    pub image_size: Option<(u16, u16)>,
    /// Their quality.
    pub image_quality: Option<&'a str>,
    /// Whether the request counts for the per-request price (every answered request).
    pub request: bool,
}

impl Price {
    /// A price per million tokens only.
    pub const fn tokens(input: f64, output: f64) -> Self {
        Self {
            input,
            output,
            cached_input: None,
            cache_write: None,
            character: None,
            audio_minute: None,
            image: None,
            request: None,
            batch_input: None,
            batch_output: None,
        }
    }

    /// The price of a line of a batch forwarded to the provider's Batch API: `batch_input`
    /// and `batch_output` when set, else half of `input` and `output`; cached prompt tokens
    /// and cache writes at half their price (at `batch_input` when those are not set).
    /// OpenAI bills batches at half its prices.
    pub fn batch(&self) -> Self {
        Self {
            input: self.batch_input.unwrap_or(self.input / 2.0),
            output: self.batch_output.unwrap_or(self.output / 2.0),
            cached_input: self.cached_input.map(|p| p / 2.0),
            cache_write: self.cache_write.map(|p| p / 2.0),
            batch_input: None,
            batch_output: None,
            ..self.clone()
        }
    }

    /// What the media units of one request cost, in nano-USD, each kind rounded once.
    pub fn units_nano_usd(&self, b: &Billed<'_>) -> u64 {
        let nano = |usd: f64| (usd * 1e9).round() as u64;
        let mut total = 0;
        if let Some(per_million) = self.character {
            total += (b.characters as f64 * per_million * 1000.0).round() as u64;
        }
        if let Some(per_minute) = self.audio_minute {
            total += nano(b.audio_ms as f64 * per_minute / 60_000.0);
        }
        if let (Some(p), true) = (&self.image, b.images > 0) {
            let per = p.per_image(b.image_size, b.image_quality).unwrap_or(0.0);
            total += nano(b.images as f64 * per);
        }
        if let (Some(usd), true) = (self.request, b.request) {
            total += nano(usd);
        }
        total
    }

    /// Every number in it, for validation.
    pub fn values(&self) -> Vec<f64> {
        let mut v = vec![self.input, self.output];
        v.extend(
            [
                self.cached_input,
                self.cache_write,
                self.character,
                self.audio_minute,
                self.request,
                self.batch_input,
                self.batch_output,
            ]
            .into_iter()
            .flatten(),
        );
        v.extend(self.image.iter().flat_map(ImagePrice::values));
        v
    }

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
    fn media_units_each_at_their_price() {
        let p: Price = toml::from_str(
            r#"character = 15.0
audio_minute = 0.006
request = 0.002
image = { "1024x1024" = 0.04, "1024x1024/hd" = 0.08, "default" = 0.02 }"#,
        )
        .unwrap();
        assert_eq!(p.input, 0.0);
        // 1,000 characters at $15 per million: $0.015.
        let chars = Billed {
            characters: 1_000,
            ..Billed::default()
        };
        assert_eq!(p.units_nano_usd(&chars), 15_000_000);
        // 90 s at $0.006 a minute: $0.009.
        let audio = Billed {
            audio_ms: 90_000,
            ..Billed::default()
        };
        assert_eq!(p.units_nano_usd(&audio), 9_000_000);
        let image = |size, quality, images| Billed {
            images,
            image_size: size,
            image_quality: quality,
            ..Billed::default()
        };
        let sq = Some((1024, 1024));
        assert_eq!(p.units_nano_usd(&image(sq, Some("hd"), 2)), 160_000_000);
        assert_eq!(
            p.units_nano_usd(&image(sq, Some("standard"), 1)),
            40_000_000
        );
        assert_eq!(
            p.units_nano_usd(&image(Some((256, 256)), None, 1)),
            20_000_000
        );
        let req = Billed {
            request: true,
            ..Billed::default()
        };
        assert_eq!(p.units_nano_usd(&req), 2_000_000);
        let flat: Price = toml::from_str("image = 0.05").unwrap();
        assert_eq!(flat.units_nano_usd(&image(None, None, 3)), 150_000_000);
        assert!(toml::from_str::<Price>("image = { \"big\" = 1.0 }").is_err());
    }

    #[test]
    fn a_forwarded_batch_is_billed_at_the_batch_price_or_half() {
        let p = Price {
            cached_input: Some(1.0),
            ..Price::tokens(2.0, 8.0)
        };
        let half = p.batch();
        assert_eq!(
            (half.input, half.output, half.cached_input),
            (1.0, 4.0, Some(0.5))
        );
        assert_eq!(
            half.cost_nano_usd(1_000, 0, 0, 1_000),
            1_000_000 + 4_000_000
        );
        let set: Price =
            toml::from_str("input = 2.0\noutput = 8.0\nbatch_input = 0.3\nbatch_output = 1.5")
                .unwrap();
        let b = set.batch();
        assert_eq!((b.input, b.output, b.cached_input), (0.3, 1.5, None));
        // Cached tokens without a price of their own are billed at the batch input price.
        assert_eq!(b.cost_nano_usd(1_000, 500, 0, 0), 300_000);
    }

    #[test]
    fn each_kind_of_token_at_its_own_price() {
        let price = Price {
            input: 2.0,
            output: 8.0,
            cached_input: Some(0.5),
            cache_write: Some(2.5),
            ..Price::tokens(0.0, 0.0)
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
            ..price.clone()
        };
        assert_eq!(plain.cost_nano_usd(1_000, 200, 300, 0), 1_000 * 2_000);
    }
}
