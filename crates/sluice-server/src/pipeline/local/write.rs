//! What a local model's answers are written as: OpenAI's embeddings list (floats or
//! base64). Chat answers and chunks come from the providers' chunk writer.

use sluice_types::Usage;
use std::fmt::Write;

/// Little-endian `f32`s in standard base64, as OpenAI's `encoding_format: "base64"` answers.
pub(super) fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An embeddings list in OpenAI's shape. Written by hand: each float in its shortest `f32`
/// form (serde_json would widen them to `f64` digits, half again as many bytes).
pub(super) fn embeddings_body(
    vectors: &[Vec<f32>],
    base64: bool,
    model: &str,
    prompt_tokens: u64,
) -> String {
    let mut text =
        String::with_capacity(64 + vectors.len() * (vectors.first().map_or(0, Vec::len) * 12 + 48));
    text.push_str("{\"object\":\"list\",\"data\":[");
    for (index, v) in vectors.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        let _ = write!(
            text,
            "{{\"object\":\"embedding\",\"index\":{index},\"embedding\":"
        );
        if base64 {
            text.push('"');
            text.push_str(&base64_f32(v));
            text.push('"');
        } else {
            floats(&mut text, v);
        }
        text.push('}');
    }
    let _ = write!(
        text,
        "],\"model\":{},\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"total_tokens\":{prompt_tokens}}}}}",
        serde_json::Value::from(model),
    );
    text
}

/// `[x,y,...]`, a non-finite value written as 0.
fn floats(text: &mut String, v: &[f32]) {
    text.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        if x.is_finite() {
            let _ = write!(text, "{x}");
        } else {
            text.push('0');
        }
    }
    text.push(']');
}

/// A local generation's token counts as the gateway's usage.
pub(super) fn usage_of(u: sluice_local::Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens as u64,
        completion_tokens: u.completion_tokens as u64,
        cached_prompt_tokens: u.cached_prompt_tokens as u64,
        ..Usage::default()
    }
}

/// A rerank answer: `results` of `index` and `relevance_score` (and `document` when asked),
/// by descending score, at most `top_n`; usage in tokens.
pub(super) fn rerank_body(
    request: &super::request::RerankRequest,
    scores: &[f32],
    model: &str,
    prompt_tokens: u64,
) -> String {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let top = request.top_n.unwrap_or(order.len()).min(order.len());
    let results: Vec<serde_json::Value> = order[..top]
        .iter()
        .map(|&i| {
            let mut r = serde_json::json!({ "index": i, "relevance_score": scores[i] });
            if request.return_documents {
                r["document"] = request.documents[i].returned.clone();
            }
            r
        })
        .collect();
    serde_json::json!({
        "id": format!("rerank-local-{:016x}", sluice_core::rng::next_u64()),
        "object": "list",
        "model": model,
        "results": results,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })
    .to_string()
}

/// A choice's `logprobs` in OpenAI's shape: `{"content": [{token, logprob, bytes,
/// top_logprobs}]}`, or `null` when they were not asked for.
pub(super) fn logprobs_json(
    asked: bool,
    tokens: &[sluice_local::TokenLogprob],
) -> serde_json::Value {
    if !asked {
        return serde_json::Value::Null;
    }
    let entry = |bytes: &[u8], logprob: f32| {
        serde_json::json!({
            "token": String::from_utf8_lossy(bytes),
            "logprob": logprob,
            "bytes": bytes,
        })
    };
    let content: Vec<serde_json::Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(&t.bytes, t.logprob);
            e["top_logprobs"] = t.top.iter().map(|(b, l)| entry(b, *l)).collect();
            e
        })
        .collect();
    serde_json::json!({ "content": content })
}
