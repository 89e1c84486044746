//! The cache's semantic stage, after an exact miss: a chat request whose last user message
//! is worded differently from one answered before, in an otherwise identical request, is
//! answered from that entry.
//!
//! - **The context**: the request with its last user message blanked, keyed like the exact
//!   cache (target, scope, every other field): a hit may differ from its entry only in the
//!   wording of that message.
//! - **Bypassed**: conversations with tool calls or tool results (tools merely offered are
//!   part of the context), `n` above 1, a last message that is not the user's or has parts
//!   other than text, and requests the exact cache does not look up (`no-cache`,
//!   non-deterministic where the policy says so).
//! - **Match**: the message's embedding (the policy's embedding model: a local one in
//!   process, any other model or route through the pipeline, see [`remote`]) against
//!   the context's stored questions, most similar first, from `threshold` on; served only
//!   when [`same_question`] agrees and, where a reranker is configured, when the
//!   cross-encoder scores the pair at or above `rerank_threshold` ([`confirm`]).
//! - **Miss**: the embedding waits in the store plan and joins the index (and the store,
//!   beside the entry) when the answer is stored.

use crate::cache::entry::Answer as Entry;
use crate::cache::index_record::Question;
use crate::cache::same_question::same_question;
use crate::cache::semantic::{normalise, Candidate};
use crate::cache::Cache;
use crate::state::AppState;
use serde_json::Value;
use sluice_core::config::{RerankCheck, SemanticPolicy};
use sluice_core::{Error, ErrorKind, Operation};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

mod remote;

pub use remote::{OwnEmbeddings, Parent};

/// What the stage found.
pub enum Probe {
    /// A stored answer to the same question in other words.
    Hit { entry: Entry, similarity: f32 },
    /// Nothing: index the answer under this question once it is stored.
    Miss(Question),
}

/// Looks the request up by meaning; `None` when it bypasses the stage (or the embedding
/// failed, which is logged: the request goes on as an exact miss).
pub async fn probe(
    state: &Arc<AppState>,
    cache: &Cache,
    policy: &SemanticPolicy,
    (operation, body): (Operation, &[u8]),
    (target, scope): (&str, Option<&str>),
    (parent, own): (Parent<'_>, OwnEmbeddings),
) -> Option<Probe> {
    if operation != Operation::Chat {
        return None;
    }
    let (question, context_body) = split(body)?;
    let context =
        sluice_core::cache::request_key(Operation::Chat, target, scope, &context_body).ok()?;
    let vector = match embed((state, own), &policy.model, question.clone(), parent).await {
        Ok(v) => normalise(v),
        Err(e) => {
            tracing::warn!(error = %e, model = %policy.model, "semantic cache: embedding failed");
            return None;
        }
    };
    let refused = &cache.metrics.semantic_refused;
    let mut candidates = cache
        .similar(&context.key, &vector, policy.threshold, |stored| {
            let same = same_question(stored, &question).is_ok();
            refused.fetch_add(u64::from(!same), Relaxed);
            same
        })
        .await;
    if let Some(check) = &policy.reranker {
        if !candidates.is_empty() {
            candidates = confirm(state, cache, check, &question, candidates).await;
        }
    }
    for c in candidates {
        if let Some(entry) = cache.indexed(&c.found.key).await {
            return Some(Probe::Hit {
                entry,
                similarity: c.found.similarity,
            });
        }
    }
    Some(Probe::Miss(Question {
        context: context.key,
        vector,
        text: question,
    }))
}

/// The candidates the reranker scores as the same question as `question` (at or above the
/// check's threshold), in their order; the others are counted as refused. A reranker that
/// fails refuses them all (logged): a hit is served only when the check could agree.
async fn confirm(
    state: &AppState,
    cache: &Cache,
    check: &RerankCheck,
    question: &str,
    candidates: Vec<Candidate>,
) -> Vec<Candidate> {
    let documents = candidates.iter().map(|c| c.question.clone()).collect();
    let scores = match rerank(state, &check.model, question.to_owned(), documents).await {
        Ok(scores) if scores.len() == candidates.len() => scores,
        other => {
            let error = other.err().map_or_else(
                || String::from("not one score per candidate"),
                |e| e.to_string(),
            );
            tracing::warn!(model = %check.model, %error, "semantic cache: the reranker failed; candidates refused");
            vec![f32::NEG_INFINITY; candidates.len()]
        }
    };
    let (kept, refused): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .zip(scores)
        .partition(|(_, score)| *score >= check.threshold);
    cache
        .metrics
        .semantic_rerank_refused
        .fetch_add(refused.len() as u64, Relaxed);
    kept.into_iter().map(|(c, _)| c).collect()
}

/// The last user message's text, and the body with that message's content blanked; `None`
/// for a request the stage does not take.
fn split(body: &[u8]) -> Option<(String, Vec<u8>)> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    // Tools offered stay in the context (an entry is found only among requests offering the
    // same tools); a conversation that has used them bypasses the stage.
    if map.get("n").and_then(Value::as_u64).unwrap_or(1) > 1 {
        return None;
    }
    let messages = map.get_mut("messages")?.as_array_mut()?;
    let tool_turns = messages.iter().any(|m| {
        m.get("role").and_then(Value::as_str) == Some("tool")
            || m.get("tool_calls").is_some_and(|t| !t.is_null())
            || m.get("function_call").is_some_and(|t| !t.is_null())
    });
    if tool_turns {
        return None;
    }
    let last = messages.last_mut()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let question = text_of(last.get("content")?)?;
    if question.trim().is_empty() {
        return None;
    }
    last["content"] = Value::String(String::new());
    Some((question, serde_json::to_vec(&map).ok()?))
}

/// A message's text: a string, or text parts only.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p.get("text").and_then(Value::as_str),
                _ => None,
            })
            .collect::<Option<Vec<&str>>>()
            .map(|texts| texts.join("\n")),
        _ => None,
    }
}

fn unusable(model: &str, why: &str) -> Error {
    ErrorKind::Unavailable {
        message: format!("the semantic cache's model `{model}` {why}"),
    }
    .into()
}

/// The upstream name of `model` when it is a model sluice runs itself; `None` for any other
/// model or route.
fn local_upstream<'s>(state: &'s AppState, model: &str) -> Option<&'s str> {
    match state.resolve(model) {
        Ok(crate::state::Resolved::Model(d)) => {
            let d = &state.deployments[d];
            state.providers[d.provider]
                .is_local()
                .then_some(&*d.upstream)
        }
        _ => None,
    }
}

/// The embedding of `text` by the config's model `model`: in process for a model sluice runs
/// itself, else through the pipeline as a `/v1/embeddings` request of the gateway's own.
async fn embed(
    (state, own): (&Arc<AppState>, OwnEmbeddings),
    model: &str,
    text: String,
    parent: Parent<'_>,
) -> Result<Vec<f32>, Error> {
    let Some(upstream) = local_upstream(state, model) else {
        return remote::embed((state, own), model, text, parent).await;
    };
    #[cfg(feature = "local")]
    {
        super::local::embed_text(state, upstream, model, text).await
    }
    #[cfg(not(feature = "local"))]
    {
        let _ = (upstream, text);
        Err(unusable(model, "needs a build with local models"))
    }
}

/// The scores of (`query`, each document) by the config's reranker `model`, a cross-encoder
/// sluice runs itself.
async fn rerank(
    state: &AppState,
    model: &str,
    query: String,
    documents: Vec<String>,
) -> Result<Vec<f32>, Error> {
    let upstream =
        local_upstream(state, model).ok_or_else(|| unusable(model, "is not a local model"))?;
    #[cfg(feature = "local")]
    {
        super::local::rerank_texts(state, upstream, model, query, documents).await
    }
    #[cfg(not(feature = "local"))]
    {
        let _ = (upstream, query, documents);
        Err(unusable(model, "needs a build with local models"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(body: serde_json::Value) -> Option<String> {
        split(body.to_string().as_bytes()).map(|(q, _)| q)
    }

    #[test]
    fn takes_the_last_user_message_and_blanks_it_in_the_context() {
        let a = serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"}]});
        let (q, context) = split(a.to_string().as_bytes()).unwrap();
        assert_eq!(q, "What is the capital of France?");
        let mut b = a.clone();
        b["messages"][1]["content"] = serde_json::json!("Tell me France's capital.");
        assert_eq!(split(b.to_string().as_bytes()).unwrap().1, context);
        // Text parts are joined.
        let parts = serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
        assert_eq!(question(parts).as_deref(), Some("a\nb"));
    }

    #[test]
    fn tools_offered_are_part_of_the_context() {
        let plain = serde_json::json!({"messages": [{"role": "user", "content": "x"}]});
        let mut offered = plain.clone();
        offered["tools"] = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
        let (q, with_tools) = split(offered.to_string().as_bytes()).unwrap();
        assert_eq!(q, "x");
        assert_ne!(split(plain.to_string().as_bytes()).unwrap().1, with_tools);
    }

    #[test]
    fn tool_turns_n_and_other_last_roles_bypass() {
        for body in [
            serde_json::json!({"n": 2, "messages": [{"role": "user", "content": "x"}]}),
            serde_json::json!({"messages": [{"role": "assistant", "tool_calls": [{}]}, {"role": "tool", "content": "r"}, {"role": "user", "content": "x"}]}),
            serde_json::json!({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
            serde_json::json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]}),
            serde_json::json!({"messages": [{"role": "user", "content": "  "}]}),
        ] {
            assert_eq!(question(body.clone()), None, "{body}");
        }
    }
}
