//! Routing strategies: each turns a route's targets into an ordered list of deployments for
//! one request. The first is tried first; the rest is the fallback chain.
//!
//! Pure functions of their inputs (targets with their prices, tiers, ranks and observed
//! latencies, the request's estimated size, and a random source), so every strategy is
//! tested without a network.

use crate::pricing::Price;
use serde::Deserialize;

/// Size tier of a model, and of a request (see [`TierRules::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Small, cheap, fast.
    Small,
    /// Medium.
    Medium,
    /// Large, premium.
    Large,
}

/// How a route orders its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// In the order configured.
    Fallback,
    /// First pick random by weight, then the rest by weight.
    Weighted,
    /// Cheapest first, by the price table and the request's estimated tokens.
    Cost,
    /// Lowest observed latency first, power of two choices for the first pick.
    Latency,
    /// Highest configured quality first.
    Quality,
    /// The request's size tier first, then larger tiers, then smaller ones.
    Tier,
}

impl Strategy {
    /// Config name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::Weighted => "weighted",
            Self::Cost => "cost",
            Self::Latency => "latency",
            Self::Quality => "quality",
            Self::Tier => "tier",
        }
    }
}

/// A per-request override of the strategy (`x-sluice-priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Cheapest first.
    Cost,
    /// Fastest first.
    Speed,
    /// Best first.
    Quality,
}

impl Priority {
    /// Parses the header value.
    pub fn parse(v: &str) -> Option<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "cost" => Some(Self::Cost),
            "speed" => Some(Self::Speed),
            "quality" => Some(Self::Quality),
            _ => None,
        }
    }

    /// The strategy it stands for.
    pub const fn strategy(self) -> Strategy {
        match self {
            Self::Cost => Strategy::Cost,
            Self::Speed => Strategy::Latency,
            Self::Quality => Strategy::Quality,
        }
    }
}

/// What a strategy knows of one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The deployment (index into the model table).
    pub deployment: usize,
    /// Weight for `weighted` (default 1).
    pub weight: f64,
    /// Price per million tokens, if known.
    pub price: Option<TokenPrice>,
    /// Quality rank (higher is better).
    pub quality: f64,
    /// Size tier, if configured.
    pub tier: Option<Tier>,
    /// Observed latency (EWMA, ms), if any request has been measured.
    pub latency_ms: Option<f64>,
}

/// The part of a price that cost routing compares: USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenPrice {
    /// Prompt tokens.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
}

impl From<&Price> for TokenPrice {
    fn from(p: &Price) -> Self {
        Self {
            input: p.input,
            output: p.output,
        }
    }
}

/// What a strategy knows of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestFacts {
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// `max_tokens`, if given.
    pub max_tokens: Option<u64>,
    /// Tools were given.
    pub has_tools: bool,
    /// Number of messages.
    pub message_count: usize,
}

/// How a request's weight maps to a tier.
#[derive(Debug, Clone, PartialEq)]
pub struct TierRules {
    /// Weight below this is `small` (default 500).
    pub small_below: u64,
    /// Weight below this (and not small) is `medium` (default 2000).
    pub medium_below: u64,
    /// Added to the weight when tools are present (default 500).
    pub tools_weight: u64,
    /// A conversation with at least this many messages is long (default 12).
    pub long_conversation: usize,
    /// Added to the weight of a long conversation (default 1000).
    pub long_conversation_weight: u64,
    /// Output tokens assumed when `max_tokens` is absent (default 256).
    pub default_max_tokens: u64,
    /// Keywords that raise a request to at least the given tier (matched case-insensitively
    /// in the request body).
    pub keywords: Vec<(String, Tier)>,
}

impl Default for TierRules {
    fn default() -> Self {
        Self {
            small_below: 500,
            medium_below: 2000,
            tools_weight: 500,
            long_conversation: 12,
            long_conversation_weight: 1000,
            default_max_tokens: 256,
            keywords: Vec::new(),
        }
    }
}

const fn tier_rank(t: Tier) -> u8 {
    match t {
        Tier::Small => 0,
        Tier::Medium => 1,
        Tier::Large => 2,
    }
}

impl TierRules {
    /// The request's weight: estimated prompt tokens, plus `max_tokens`, plus the signals.
    pub fn weight(&self, facts: &RequestFacts) -> u64 {
        let mut w = facts.prompt_tokens + facts.max_tokens.unwrap_or(self.default_max_tokens);
        if facts.has_tools {
            w += self.tools_weight;
        }
        if facts.message_count >= self.long_conversation {
            w += self.long_conversation_weight;
        }
        w
    }

    /// The tier of a request; `body` is searched for keywords when any are configured.
    pub fn classify(&self, facts: &RequestFacts, body: &[u8]) -> Tier {
        let w = self.weight(facts);
        let mut tier = if w < self.small_below {
            Tier::Small
        } else if w < self.medium_below {
            Tier::Medium
        } else {
            Tier::Large
        };
        for (keyword, at_least) in &self.keywords {
            if tier_rank(*at_least) > tier_rank(tier)
                && contains_ignore_case(body, keyword.as_bytes())
            {
                tier = *at_least;
            }
        }
        tier
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Estimated cost in USD of the request on a candidate (unpriced: infinite).
pub fn estimated_cost(c: &Candidate, facts: &RequestFacts, default_max_tokens: u64) -> f64 {
    match c.price {
        None => f64::INFINITY,
        Some(p) => {
            let out = facts.max_tokens.unwrap_or(default_max_tokens);
            (facts.prompt_tokens as f64 * p.input + out as f64 * p.output) / 1e6
        }
    }
}

/// Orders `candidates` for one request. `tier` is the request's tier (for `Tier`);
/// `unit` draws uniform numbers in `[0, 1)`.
pub fn order(
    strategy: Strategy,
    candidates: &[Candidate],
    facts: &RequestFacts,
    tier: Option<Tier>,
    default_max_tokens: u64,
    unit: &mut dyn FnMut() -> f64,
) -> Vec<usize> {
    let mut list: Vec<Candidate> = candidates.to_vec();
    match strategy {
        Strategy::Fallback => {}
        Strategy::Weighted => list = by_weight(list, unit),
        Strategy::Cost => by_cost(&mut list, facts, default_max_tokens),
        Strategy::Latency => by_latency(&mut list, unit),
        Strategy::Quality => list.sort_by(|a, b| b.quality.total_cmp(&a.quality)),
        Strategy::Tier => {
            if let Some(want) = tier {
                by_tier(&mut list, want);
            }
        }
    }
    list.into_iter().map(|c| c.deployment).collect()
}

/// Draws without replacement, each pick proportional to the remaining weights.
fn by_weight(mut list: Vec<Candidate>, unit: &mut dyn FnMut() -> f64) -> Vec<Candidate> {
    let mut ordered = Vec::with_capacity(list.len());
    while !list.is_empty() {
        let total: f64 = list.iter().map(|c| c.weight.max(0.0)).sum();
        let mut at = unit() * total;
        let mut pick = list.len() - 1;
        if total > 0.0 {
            for (i, c) in list.iter().enumerate() {
                at -= c.weight.max(0.0);
                if at < 0.0 {
                    pick = i;
                    break;
                }
            }
        } else {
            pick = 0;
        }
        ordered.push(list.remove(pick));
    }
    ordered
}

/// Cheapest first for a request of this size; unpriced candidates last.
fn by_cost(list: &mut [Candidate], facts: &RequestFacts, default_max_tokens: u64) {
    list.sort_by(|a, b| {
        estimated_cost(a, facts, default_max_tokens).total_cmp(&estimated_cost(
            b,
            facts,
            default_max_tokens,
        ))
    });
}

/// Fastest first, unmeasured deployments counting as fastest so that they get measured;
/// then, among more than two, the faster of two random picks goes first, so load spreads
/// instead of piling onto the single fastest deployment (power of two choices).
fn by_latency(list: &mut Vec<Candidate>, unit: &mut dyn FnMut() -> f64) {
    let key = |c: &Candidate| c.latency_ms.unwrap_or(0.0);
    list.sort_by(|a, b| key(a).total_cmp(&key(b)));
    if list.len() > 2 {
        let n = list.len();
        let i = ((unit() * n as f64) as usize).min(n - 1);
        let mut j = ((unit() * (n - 1) as f64) as usize).min(n - 2);
        if j >= i {
            j += 1;
        }
        let first = if key(&list[i]) <= key(&list[j]) { i } else { j };
        let c = list.remove(first);
        list.insert(0, c);
    }
}

/// The wanted tier, then larger ones (closest first), then smaller ones (closest first),
/// then untiered ones; the configured order breaks ties.
fn by_tier(list: &mut [Candidate], want: Tier) {
    let w = tier_rank(want);
    let key = |c: &Candidate| match c.tier.map(tier_rank) {
        Some(r) if r == w => 0,
        Some(r) if r > w => 1 + u16::from(r - w),
        Some(r) => 10 + u16::from(w - r),
        None => 100,
    };
    list.sort_by_key(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(deployment: usize) -> Candidate {
        Candidate {
            deployment,
            weight: 1.0,
            price: None,
            quality: 0.0,
            tier: None,
            latency_ms: None,
        }
    }

    fn seq(values: Vec<f64>) -> impl FnMut() -> f64 {
        let mut it = values.into_iter().cycle();
        move || it.next().unwrap_or(0.0)
    }

    const FACTS: RequestFacts = RequestFacts {
        prompt_tokens: 100,
        max_tokens: Some(100),
        has_tools: false,
        message_count: 1,
    };

    #[test]
    fn fallback_keeps_order() {
        let list = [c(3), c(1), c(2)];
        assert_eq!(
            order(
                Strategy::Fallback,
                &list,
                &FACTS,
                None,
                256,
                &mut seq(vec![0.0])
            ),
            [3, 1, 2]
        );
    }

    #[test]
    fn weighted_follows_weights() {
        let mut a = c(0);
        a.weight = 3.0;
        let b = c(1);
        let mut rng = {
            let mut s = 1u64;
            move || {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64
            }
        };
        let firsts = (0..10_000)
            .filter(|_| order(Strategy::Weighted, &[a, b], &FACTS, None, 256, &mut rng)[0] == 0)
            .count();
        assert!((7_200..7_800).contains(&firsts), "{firsts}");
        let full = order(Strategy::Weighted, &[a, b], &FACTS, None, 256, &mut rng);
        assert_eq!(full.len(), 2);
    }

    #[test]
    fn cost_orders_by_estimated_price() {
        let price = |input: f64, output: f64| Some(TokenPrice { input, output });
        let mut cheap = c(0);
        cheap.price = price(0.15, 0.6);
        let mut dear = c(1);
        dear.price = price(2.5, 10.0);
        let unpriced = c(2);
        // Input-heavy vs output-heavy pricing flips with the request's shape.
        let mut in_heavy = c(3);
        in_heavy.price = price(5.0, 0.1);
        let list = [unpriced, dear, cheap];
        assert_eq!(
            order(
                Strategy::Cost,
                &list,
                &FACTS,
                None,
                256,
                &mut seq(vec![0.0])
            ),
            [0, 1, 2]
        );
        let long_prompt = RequestFacts {
            prompt_tokens: 10_000,
            max_tokens: Some(10),
            ..FACTS
        };
        assert_eq!(
            order(
                Strategy::Cost,
                &[in_heavy, dear],
                &long_prompt,
                None,
                256,
                &mut seq(vec![0.0])
            ),
            [1, 3]
        );
        let long_answer = RequestFacts {
            prompt_tokens: 10,
            max_tokens: Some(10_000),
            ..FACTS
        };
        assert_eq!(
            order(
                Strategy::Cost,
                &[dear, in_heavy],
                &long_answer,
                None,
                256,
                &mut seq(vec![0.0])
            ),
            [3, 1]
        );
    }

    #[test]
    fn latency_prefers_fast_and_spreads_with_two_choices() {
        let lat = |d: usize, ms: f64| Candidate {
            latency_ms: Some(ms),
            ..c(d)
        };
        let list = [lat(0, 300.0), lat(1, 100.0), lat(2, 200.0)];
        // Draws picking indexes 1 (200 ms) and 2 (300 ms) in sorted order: the faster of the two leads.
        let first = order(
            Strategy::Latency,
            &list,
            &FACTS,
            None,
            256,
            &mut seq(vec![0.5, 0.9]),
        );
        assert_eq!(first, [2, 1, 0]);
        let two = order(
            Strategy::Latency,
            &list[..2],
            &FACTS,
            None,
            256,
            &mut seq(vec![0.0]),
        );
        assert_eq!(two, [1, 0]);
        // Unmeasured goes first, to be measured.
        let fresh = order(
            Strategy::Latency,
            &[lat(0, 50.0), c(1)],
            &FACTS,
            None,
            256,
            &mut seq(vec![0.0]),
        );
        assert_eq!(fresh, [1, 0]);
    }

    #[test]
    fn quality_orders_by_rank() {
        let q = |d: usize, r: f64| Candidate { quality: r, ..c(d) };
        assert_eq!(
            order(
                Strategy::Quality,
                &[q(0, 1.0), q(1, 9.0), q(2, 5.0)],
                &FACTS,
                None,
                256,
                &mut seq(vec![0.0])
            ),
            [1, 2, 0]
        );
    }

    #[test]
    fn tier_classifies_and_orders() {
        let rules = TierRules::default();
        let small = RequestFacts {
            prompt_tokens: 100,
            max_tokens: Some(100),
            ..FACTS
        };
        let medium = RequestFacts {
            prompt_tokens: 1000,
            max_tokens: Some(100),
            ..FACTS
        };
        let large = RequestFacts {
            prompt_tokens: 3000,
            max_tokens: None,
            ..FACTS
        };
        assert_eq!(rules.classify(&small, b""), Tier::Small);
        assert_eq!(rules.classify(&medium, b""), Tier::Medium);
        assert_eq!(rules.classify(&large, b""), Tier::Large);
        let tools = RequestFacts {
            has_tools: true,
            ..small
        };
        assert_eq!(rules.classify(&tools, b""), Tier::Medium);
        let long = RequestFacts {
            message_count: 20,
            ..small
        };
        assert_eq!(rules.classify(&long, b""), Tier::Medium);
        let kw = TierRules {
            keywords: vec![("prove".into(), Tier::Large)],
            ..TierRules::default()
        };
        assert_eq!(kw.classify(&small, b"please PROVE this"), Tier::Large);
        assert_eq!(kw.classify(&small, b"hello"), Tier::Small);

        let t = |d: usize, tier: Tier| Candidate {
            tier: Some(tier),
            ..c(d)
        };
        let list = [
            t(0, Tier::Large),
            t(1, Tier::Small),
            c(9),
            t(2, Tier::Medium),
        ];
        let o = |tier| {
            order(
                Strategy::Tier,
                &list,
                &FACTS,
                Some(tier),
                256,
                &mut seq(vec![0.0]),
            )
        };
        assert_eq!(o(Tier::Small), [1, 2, 0, 9]);
        assert_eq!(o(Tier::Medium), [2, 0, 1, 9]);
        assert_eq!(o(Tier::Large), [0, 2, 1, 9]);
    }
}
