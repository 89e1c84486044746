//! From the `model` a client sent to the deployments to try: the name resolved (a route, a
//! model, or an upstream model on a passthrough provider), the routing headers read, and
//! the plan, ordered by the route's strategy, with its canary and policies. A model is a
//! route of one target.

use super::registry::{Deployment, Index, Name, Route};
use http::{HeaderMap, HeaderValue};
use sluice_core::config::{RouteConfig, Tier};
use sluice_core::retry::RetryPolicy;
use sluice_core::routing::{self, Candidate, Priority, RequestFacts, Strategy};
use sluice_core::{rng, Error, ErrorKind};
use sluice_providers::Provider;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the client's `model` named.
#[derive(Debug, Clone, Copy)]
pub enum Resolved<'u> {
    /// A configured model.
    Model(usize),
    /// A route.
    Route(usize),
    /// A passthrough provider's catch-all deployment, with the upstream id to send.
    Passthrough {
        /// The catch-all deployment.
        deployment: usize,
        /// Upstream model id.
        upstream: &'u str,
    },
}

/// One deployment to try.
#[derive(Debug, Clone, Copy)]
pub struct Step<'u> {
    /// Index into [`AppState::deployments`].
    pub deployment: usize,
    /// Upstream id when the request supplies it (passthrough).
    pub upstream: Option<&'u str>,
    /// This step is a canary candidate.
    pub canary: bool,
}

/// How one request is served: the deployments to try, in order, and the policies.
#[derive(Debug, Clone)]
pub struct Plan<'u> {
    /// Deployments to try, in order.
    pub steps: Vec<Step<'u>>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Total deadline.
    pub timeout: Option<Duration>,
    /// First-byte deadline per deployment.
    pub first_token_timeout: Option<Duration>,
    /// The route, if one was named.
    pub route: Option<usize>,
}

/// Per-request routing inputs read from headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides<'h> {
    /// `x-sluice-priority`.
    pub priority: Option<Priority>,
    /// `x-sluice-tier`.
    pub tier: Option<Tier>,
    /// `x-sluice-route-key`, else the bearer token, else `user`.
    pub route_key: Option<&'h [u8]>,
}

/// Reads the routing headers; `user` is the body's `user` field.
pub fn overrides<'h>(
    headers: &'h HeaderMap,
    user: Option<&'h str>,
) -> Result<Overrides<'h>, Error> {
    let bad = |message: String| -> Error {
        ErrorKind::InvalidRequest {
            message,
            param: None,
        }
        .into()
    };
    let priority = match headers.get("x-sluice-priority") {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(Priority::parse).ok_or_else(|| {
            bad("`x-sluice-priority` must be `cost`, `speed` or `quality`".into())
        })?),
    };
    let tier = match headers.get("x-sluice-tier") {
        None => None,
        Some(v) => Some(match v.to_str().map(|s| s.trim().to_ascii_lowercase()) {
            Ok(s) if s == "small" => Tier::Small,
            Ok(s) if s == "medium" => Tier::Medium,
            Ok(s) if s == "large" => Tier::Large,
            _ => {
                return Err(bad(
                    "`x-sluice-tier` must be `small`, `medium` or `large`".into()
                ))
            }
        }),
    };
    let route_key = headers
        .get("x-sluice-route-key")
        .map(HeaderValue::as_bytes)
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .and_then(|v| v.strip_prefix(b"Bearer "))
        })
        .or(user.map(str::as_bytes));
    Ok(Overrides {
        priority,
        tier,
        route_key,
    })
}

/// The names a request is resolved and planned against (borrowed from the state).
pub(super) struct Names<'a> {
    pub index: &'a Index,
    pub passthrough: &'a [usize],
    pub providers: &'a [Arc<Provider>],
    pub deployments: &'a [Deployment],
    pub routes: &'a [Route],
    /// `[routing]`'s retry policy, for a model named alone.
    pub retry: RetryPolicy,
}

impl Names<'_> {
    /// Resolves the `model` a client sent: a route or configured model, else
    /// `provider/model` on a passthrough provider, else any name on the only passthrough
    /// provider.
    pub(super) fn resolve<'u>(&self, model: &'u str) -> Result<Resolved<'u>, Error> {
        match self.index.get(model) {
            Some(Name::Model(i)) => return Ok(Resolved::Model(*i)),
            Some(Name::Route(i)) => return Ok(Resolved::Route(*i)),
            None => {}
        }
        if let Some((prefix, rest)) = model.split_once('/') {
            if let Some(&d) = self
                .passthrough
                .iter()
                .find(|&&d| self.providers[self.deployments[d].provider].name() == prefix)
            {
                return Ok(Resolved::Passthrough {
                    deployment: d,
                    upstream: rest,
                });
            }
        }
        if let [d] = self.passthrough[..] {
            return Ok(Resolved::Passthrough {
                deployment: d,
                upstream: model,
            });
        }
        Err(ErrorKind::ModelNotFound {
            model: model.to_string(),
        }
        .into())
    }

    /// Whether a Responses API request for `resolved` may be answered by a native upstream
    /// (an `openai` provider with `responses = "native"` among its deployments).
    pub fn may_answer_natively(&self, resolved: Resolved<'_>) -> bool {
        let native = |d: usize| self.providers[self.deployments[d].provider].responses_native();
        match resolved {
            Resolved::Model(d) | Resolved::Passthrough { deployment: d, .. } => native(d),
            Resolved::Route(r) => {
                let route = &self.routes[r];
                route.config.targets.iter().any(|&d| native(d))
                    || route
                        .canary
                        .as_ref()
                        .is_some_and(|c| native(c.config.target))
            }
        }
    }

    /// The deployments to try for one request, in order, with the policies that apply.
    pub(super) fn plan<'u>(
        &self,
        resolved: Resolved<'u>,
        facts: &RequestFacts,
        body: &[u8],
        overrides: &Overrides<'_>,
        stream: bool,
    ) -> Plan<'u> {
        let single = |deployment, upstream| Plan {
            steps: vec![Step {
                deployment,
                upstream,
                canary: false,
            }],
            retry: self.retry,
            timeout: None,
            first_token_timeout: None,
            route: None,
        };
        let route_index = match resolved {
            Resolved::Model(d) => return single(d, None),
            Resolved::Passthrough {
                deployment,
                upstream,
            } => return single(deployment, Some(upstream)),
            Resolved::Route(r) => r,
        };
        let route = &self.routes[route_index];
        let rc = &route.config;
        let candidates = self.candidates(rc, stream);
        let mut order = order(rc, &candidates, facts, body, overrides);
        let mut steps: Vec<Step<'u>> = Vec::with_capacity(order.len() + 1);
        if let Some(canary) = &route.canary {
            let candidate = canary.config.target;
            let now = Instant::now();
            let selected = match overrides.route_key {
                Some(key) => canary.selects(key, now),
                // No key: split request by request.
                None => rng::unit() * 100.0 < canary.percent(now),
            };
            order.retain(|&d| d != candidate);
            if selected {
                steps.push(Step {
                    deployment: candidate,
                    upstream: None,
                    canary: true,
                });
            }
        }
        steps.extend(order.into_iter().map(|deployment| Step {
            deployment,
            upstream: None,
            canary: false,
        }));
        Plan {
            steps,
            retry: rc.retry,
            timeout: rc.timeout,
            first_token_timeout: rc.first_token_timeout,
            route: Some(route_index),
        }
    }

    /// A route's targets as the strategies see them: price, quality, tier, and the latency
    /// that matters (to the first byte for a stream, to the end otherwise).
    fn candidates(&self, rc: &RouteConfig, stream: bool) -> Vec<Candidate> {
        rc.targets
            .iter()
            .zip(&rc.weights)
            .map(|(&d, &weight)| {
                let dep = &self.deployments[d];
                let (first, second) = if stream {
                    (&dep.ttft, &dep.total)
                } else {
                    (&dep.total, &dep.ttft)
                };
                Candidate {
                    deployment: d,
                    weight,
                    price: dep
                        .price
                        .as_ref()
                        .map(sluice_core::routing::TokenPrice::from),
                    quality: dep.quality,
                    tier: dep.tier,
                    latency_ms: first.get().or_else(|| second.get()),
                }
            })
            .collect()
    }
}

/// The order of a route's `candidates` for one request: by the route's strategy or the
/// request's priority, within the request's tier first when a tier applies.
fn order(
    rc: &RouteConfig,
    candidates: &[Candidate],
    facts: &RequestFacts,
    body: &[u8],
    overrides: &Overrides<'_>,
) -> Vec<usize> {
    let strategy = overrides.priority.map_or(rc.strategy, Priority::strategy);
    let tier = match (rc.strategy, overrides.tier) {
        (_, Some(t)) => Some(t),
        (Strategy::Tier, None) => Some(rc.tiers.classify(facts, body)),
        _ => None,
    };
    let max_tokens = rc.tiers.default_max_tokens;
    match (tier, strategy != Strategy::Tier) {
        (Some(t), true) => {
            // A tier route with a priority override: the request's tier first, ordered by
            // the priority; the other tiers after, likewise.
            let (same, rest): (Vec<Candidate>, Vec<Candidate>) =
                candidates.iter().partition(|c| c.tier == Some(t));
            let mut unit = rng::unit;
            let mut o = routing::order(strategy, &same, facts, None, max_tokens, &mut unit);
            o.extend(routing::order(
                strategy, &rest, facts, None, max_tokens, &mut unit,
            ));
            o
        }
        _ => routing::order(
            strategy,
            candidates,
            facts,
            tier,
            max_tokens,
            &mut rng::unit,
        ),
    }
}
