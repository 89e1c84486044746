//! Cost simulation: replays recorded traffic through a routing config and prices it.
//!
//! Each recorded request names the model its client sent and the tokens it used. Its
//! *current* cost is the one recorded with it (`cost_usd`), else its tokens at the price of
//! the config's model of that name. Its *projected* cost is what the config would have
//! spent: the name resolves to a route or a model, the route's strategy orders its targets
//! for a request of that size (the completion tokens stand in for `max_tokens`; tier rules,
//! prices, quality ranks and weights apply as they do live; latency routes, which have no
//! measurements here, keep their configured order), and the first target's price is paid.
//! Canary splits are left out: a simulation shows the route's steady state.
//!
//! Totals are scaled to a month: 30 days over the days the traffic spans (its first to its
//! last timestamp, rounded up to whole days), or over `days` when given.

use crate::config::{Config, RouteConfig};
use crate::routing::{self, Candidate, RequestFacts, Strategy, TokenPrice};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One recorded request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Record {
    /// When (Unix seconds).
    #[serde(default)]
    pub ts: Option<f64>,
    /// The model or route the client asked for.
    pub model: String,
    /// The provider that served it, if recorded.
    #[serde(default)]
    pub provider: Option<String>,
    /// Prompt tokens (cached ones included).
    pub prompt_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Prompt tokens read from a prompt cache.
    #[serde(default)]
    pub cached_prompt_tokens: u64,
    /// What it cost, if recorded.
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

/// Nano-USD per USD: sums are kept in integer nano-dollars so that totals are exact.
pub const NANO: f64 = 1e9;

/// Current and projected spend of one provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    /// Requests served by it now.
    pub current_requests: u64,
    /// Nano-USD now.
    pub current_nano: u64,
    /// Requests it would serve.
    pub projected_requests: u64,
    /// Nano-USD it would cost.
    pub projected_nano: u64,
}

/// The outcome of a simulation, per provider, before scaling to a month.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Simulation {
    /// By provider name.
    pub providers: BTreeMap<String, Line>,
    /// By (model asked for, deployment that would serve it): requests.
    pub moves: BTreeMap<(String, String), u64>,
    /// Requests replayed.
    pub requests: u64,
    /// Earliest and latest timestamp seen.
    pub span: Option<(f64, f64)>,
}

impl Simulation {
    /// Factor from the traffic's span to 30 days (`days` overrides the span).
    pub fn monthly_factor(&self, days: Option<f64>) -> f64 {
        let days = days.unwrap_or_else(|| match self.span {
            Some((first, last)) => ((last - first) / 86_400.0).ceil().max(1.0),
            None => 30.0,
        });
        30.0 / days
    }

    /// Total current nano-USD.
    pub fn current_nano(&self) -> u64 {
        self.providers.values().map(|l| l.current_nano).sum()
    }

    /// Total projected nano-USD.
    pub fn projected_nano(&self) -> u64 {
        self.providers.values().map(|l| l.projected_nano).sum()
    }
}

/// Why a record cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulateError(pub String);

/// Replays records through `config`.
pub struct Simulator<'c> {
    config: &'c Config,
    sim: Simulation,
    /// A seeded random source for `weighted` routes, so runs repeat.
    rng: u64,
}

impl<'c> Simulator<'c> {
    /// A simulator for `config`.
    pub fn new(config: &'c Config) -> Self {
        Self {
            config,
            sim: Simulation::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn model(&self, name: &str) -> Option<usize> {
        self.config.models.iter().position(|m| m.name == name)
    }

    /// The deployment the config would send `r` to.
    fn project(&mut self, r: &Record) -> Result<usize, SimulateError> {
        if let Some(m) = self.model(&r.model) {
            return Ok(m);
        }
        let Some(route) = self.config.routes.iter().find(|x| x.name == r.model) else {
            return Err(SimulateError(format!(
                "`{}` is neither a model nor a route of the config",
                r.model
            )));
        };
        let facts = RequestFacts {
            prompt_tokens: r.prompt_tokens,
            max_tokens: Some(r.completion_tokens),
            has_tools: false,
            message_count: 1,
        };
        let candidates = self.candidates(route);
        let tier = (route.strategy == Strategy::Tier).then(|| route.tiers.classify(&facts, b""));
        let strategy = if route.strategy == Strategy::Latency {
            Strategy::Fallback
        } else {
            route.strategy
        };
        let mut draw = {
            let mut values = Vec::with_capacity(candidates.len());
            for _ in 0..candidates.len().max(1) {
                values.push(self.unit());
            }
            values.into_iter().cycle()
        };
        let order = routing::order(
            strategy,
            &candidates,
            &facts,
            tier,
            route.tiers.default_max_tokens,
            &mut || draw.next().unwrap_or(0.0),
        );
        order
            .first()
            .copied()
            .ok_or_else(|| SimulateError(format!("route `{}` has no target", route.name)))
    }

    /// A route's targets as its strategy sees them; no latency is measured here.
    fn candidates(&self, route: &RouteConfig) -> Vec<Candidate> {
        route
            .targets
            .iter()
            .zip(&route.weights)
            .map(|(&d, &weight)| {
                let m = &self.config.models[d];
                Candidate {
                    deployment: d,
                    weight,
                    price: m.price.as_ref().map(TokenPrice::from),
                    quality: m.quality,
                    tier: m.tier,
                    latency_ms: None,
                }
            })
            .collect()
    }

    /// Replays one record.
    pub fn add(&mut self, r: &Record) -> Result<(), SimulateError> {
        let current_model = self.model(&r.model);
        let current_nano = self.current_nano(r, current_model)?;
        let current_provider = r
            .provider
            .clone()
            .or_else(|| {
                current_model.map(|m| {
                    self.config.providers[self.config.models[m].provider]
                        .name
                        .clone()
                })
            })
            .unwrap_or_else(|| "unknown".to_string());
        let d = self.project(r)?;
        let projected_nano = self.projected_nano(r, d, current_model)?;
        let model = &self.config.models[d];
        let projected_provider = self.config.providers[model.provider].name.clone();
        let now = self.sim.providers.entry(current_provider).or_default();
        now.current_requests += 1;
        now.current_nano += current_nano;
        let then = self.sim.providers.entry(projected_provider).or_default();
        then.projected_requests += 1;
        then.projected_nano += projected_nano;
        *self
            .sim
            .moves
            .entry((r.model.clone(), model.name.clone()))
            .or_default() += 1;
        self.sim.requests += 1;
        if let Some(ts) = r.ts {
            self.sim.span = Some(match self.sim.span {
                None => (ts, ts),
                Some((a, b)) => (a.min(ts), b.max(ts)),
            });
        }
        Ok(())
    }

    /// What `r` cost: as recorded, else its tokens at the price of `model`, the config's
    /// model of the name it asked for.
    fn current_nano(&self, r: &Record, model: Option<usize>) -> Result<u64, SimulateError> {
        match (r.cost_usd, model.and_then(|m| self.config.models[m].price.as_ref())) {
            (Some(c), _) => Ok((c * NANO).round() as u64),
            (None, Some(p)) => Ok(p.cost_nano_usd(
                r.prompt_tokens,
                r.cached_prompt_tokens,
                0,
                r.completion_tokens,
            )),
            (None, None) => Err(SimulateError(format!(
                "no current cost for `{}`: record `cost_usd`, or give the config a model of that name with a price",
                r.model
            ))),
        }
    }

    /// What `r` would cost on deployment `d`; its prompt-cache reads stay reads only on the
    /// model that served it (`current_model`).
    fn projected_nano(
        &self,
        r: &Record,
        d: usize,
        current_model: Option<usize>,
    ) -> Result<u64, SimulateError> {
        let model = &self.config.models[d];
        let Some(price) = &model.price else {
            return Err(SimulateError(format!(
                "model `{}` has no price: give it `price = {{ input, output }}`",
                model.name
            )));
        };
        let cached = if current_model == Some(d) {
            r.cached_prompt_tokens
        } else {
            0
        };
        Ok(price.cost_nano_usd(r.prompt_tokens, cached, 0, r.completion_tokens))
    }

    /// The result.
    pub fn finish(self) -> Simulation {
        self.sim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    const CONFIG: &str = r#"
[[providers]]
name = "openai"
type = "openai"
[[providers]]
name = "anthropic"
type = "anthropic"
[[models]]
name = "gpt-4o-2024-08-06"
provider = "openai"
tier = "large"
price = { input = 2.5, output = 2.5 }
[[models]]
name = "gpt-4o-mini"
provider = "openai"
tier = "small"
price = { input = 0.15, output = 0.6 }
[[models]]
name = "claude"
provider = "anthropic"
price = { input = 3.0, output = 3.0 }
[[routes]]
name = "gpt-4o"
strategy = "tier"
targets = ["gpt-4o-mini", "gpt-4o-2024-08-06"]
"#;

    fn rec(model: &str, prompt: u64, completion: u64) -> Record {
        Record {
            model: model.into(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            ..Record::default()
        }
    }

    #[test]
    fn small_requests_move_to_the_small_model() {
        let config = Config::from_toml(CONFIG, &MapEnv::default()).expect("valid");
        let mut s = Simulator::new(&config);
        let mut small = rec("gpt-4o", 200, 100);
        small.cost_usd = Some(300.0 * 2.5 / 1e6);
        small.provider = Some("openai".into());
        s.add(&small).expect("replays");
        let mut large = rec("gpt-4o", 1500, 500);
        large.cost_usd = Some(2000.0 * 2.5 / 1e6);
        large.provider = Some("openai".into());
        s.add(&large).expect("replays");
        s.add(&rec("claude", 400, 100))
            .expect("priced by the config");
        let sim = s.finish();
        let openai = &sim.providers["openai"];
        assert_eq!(openai.current_nano, 2300 * 2500);
        assert_eq!(openai.projected_nano, 200 * 150 + 100 * 600 + 2000 * 2500);
        assert_eq!(sim.providers["anthropic"].current_nano, 500 * 3000);
        assert_eq!(
            sim.moves[&("gpt-4o".to_string(), "gpt-4o-mini".to_string())],
            1
        );
        assert_eq!(sim.monthly_factor(None), 1.0, "no timestamps: a month");
        assert_eq!(sim.monthly_factor(Some(15.0)), 2.0);
    }

    #[test]
    fn unknown_names_and_unpriced_models_are_errors() {
        let config = Config::from_toml(CONFIG, &MapEnv::default()).expect("valid");
        let mut s = Simulator::new(&config);
        assert!(s.add(&rec("nope", 1, 1)).is_err());
        let mut r = rec("gpt-4o", 1, 1);
        assert!(
            s.add(&r).is_err(),
            "no recorded cost and `gpt-4o` is a route"
        );
        r.cost_usd = Some(0.1);
        assert!(s.add(&r).is_ok());
    }

    #[test]
    fn the_span_scales_to_a_month() {
        let sim = Simulation {
            span: Some((0.0, 6.5 * 86_400.0)),
            ..Simulation::default()
        };
        assert!((sim.monthly_factor(None) - 30.0 / 7.0).abs() < 1e-12);
    }
}
