//! Serving a request on a model sluice runs itself (see `crate::local` for the runtime): a
//! lease on the loaded model (loading it first if need be), the chat submitted to the
//! model's bounded queue or the inputs to its embedding batcher, and the answer as an
//! OpenAI `chat.completion`, an embeddings list, or `chat.completion.chunk` events as
//! tokens come, written by the providers' one chunk writer; a legacy text completion's raw
//! prompt (`text.rs`) to the same queue, answered as a `text_completion` or its events.
//!
//! When the model cannot take the request (its queue is full, or the memory it needs is
//! held by models in use, or it can never fit the budget) the answer is 503
//! `model_overloaded` with `Retry-After`, which is retryable: a route falls back to its
//! next target.

mod calls;
mod choice;
mod errors;
mod refs;
mod request;
mod stream;
mod text;
mod text_stream;
mod tools;
mod whole;
mod write;

use errors::{invalid, model_error, model_error_on, pool_error, wrong_kind};
use request::{chat_request, embedding_request, rerank_request};
use stream::LocalStream;
use text::{text_request, LocalText};
use text_stream::LocalTextStream;
use write::usage_of;

use super::answer::Answer;
use crate::state::AppState;
use bytes::Bytes;
use sluice_core::{Error, ErrorKind};
use sluice_local::pool::ModelKind;
use sluice_local::ChatModel;
use sluice_providers::chunks::ChunkWriter;
use sluice_providers::text_completion::{TextChoice, TextWriter};
use sluice_types::Usage;

fn runtime(state: &AppState) -> Result<&crate::local::LocalRuntime, Error> {
    state.local.as_deref().ok_or_else(|| {
        ErrorKind::Internal {
            message: "no local runtime".into(),
        }
        .into()
    })
}

/// Serves one chat request on local model `upstream`; `model` is what the client asked for.
pub async fn chat(
    state: &AppState,
    upstream: &str,
    model: &str,
    body: &Bytes,
    stream: bool,
) -> Result<Answer, Error> {
    let local = runtime(state)?;
    let request::LocalChat {
        mut request,
        include_usage,
        keep_alive,
        tools,
        n,
    } = chat_request(body, &local.grammars)?;
    check_n(n, local.max_n)?;
    let lease = local
        .pool
        .acquire(upstream, keep_alive)
        .await
        .map_err(|e| pool_error(&e))?;
    let chat: &ChatModel = lease
        .as_chat()
        .ok_or_else(|| wrong_kind(model, ModelKind::Embedding))?;
    let tool_call = tools::prepare(tools, chat.tool_format(), &mut request, &local.grammars)?;
    let logprobs = request.logprobs.is_some();
    let generations = submit(chat, &request, n as usize)?;
    let measured = local.metrics.model(upstream).cloned();
    let mut writer = ChunkWriter::new(model, "local");
    writer.id = format!("chatcmpl-local-{:016x}", sluice_core::rng::next_u64());
    if !stream {
        let mut done = Vec::with_capacity(generations.len());
        for generation in generations {
            done.push(generation.collect().await.map_err(|e| model_error(&e))?);
        }
        drop(lease);
        if let Some(m) = &measured {
            for d in &done {
                m.queue_wait.observe(d.queue_wait);
            }
        }
        let answer = whole::Whole {
            id: &writer.id,
            model,
            shape: tool_call.as_ref(),
            logprobs,
        };
        let (body, usage) = answer.body(&done);
        return Ok(Answer::json(Bytes::from(body), Some(usage)));
    }
    let prompt_tokens = generations.first().map_or(0, |g| g.prompt_tokens()) as u64;
    let events = generations
        .into_iter()
        .map(sluice_local::Generation::into_receiver)
        .collect();
    let shape = stream::Shape {
        calls: tool_call,
        logprobs,
        include_usage,
    };
    let stream = LocalStream::new(lease, events, writer, shape, measured);
    Ok(Answer::Stream(Box::new(
        stream.prompt_tokens(prompt_tokens),
    )))
}

/// `n` generations of the same request, queued together (the `i`th with `seed + i` when a
/// seed is given).
fn submit(
    chat: &ChatModel,
    request: &sluice_local::ChatRequest,
    n: usize,
) -> Result<Vec<sluice_local::Generation>, Error> {
    (0..n)
        .map(|i| {
            let mut one = request.clone();
            one.sampling.seed = request.sampling.seed.map(|s| s.wrapping_add(i as u64));
            chat.submit(one).map_err(|e| model_error(&e))
        })
        .collect()
}

/// Serves one legacy text completion on local chat model `upstream`; `model` is what the
/// client asked for. The prompt is tokenized as it is (no chat template) and joins the same
/// queue and batches as chat requests.
pub async fn text_completion(
    state: &AppState,
    upstream: &str,
    model: &str,
    body: &Bytes,
    stream: bool,
) -> Result<Answer, Error> {
    let local = runtime(state)?;
    let LocalText {
        request,
        include_usage,
        keep_alive,
        echo,
    } = text_request(body)?;
    let lease = lease_of(state, upstream, model, ModelKind::Chat, keep_alive).await?;
    let chat: &ChatModel = lease
        .as_chat()
        .ok_or_else(|| wrong_kind(model, lease.kind()))?;
    let generation = chat
        .submit(request)
        .map_err(|e| model_error_on(&e, "prompt"))?;
    let measured = local.metrics.model(upstream).cloned();
    let writer = TextWriter::new(model, "local", sluice_core::rng::next_u64());
    if stream {
        return Ok(Answer::Stream(Box::new(LocalTextStream::new(
            lease,
            generation.into_receiver(),
            writer,
            include_usage,
            echo,
            measured,
        ))));
    }
    let done = generation
        .collect()
        .await
        .map_err(|e| model_error_on(&e, "prompt"))?;
    drop(lease);
    if let Some(m) = &measured {
        m.queue_wait.observe(done.queue_wait);
    }
    let usage = usage_of(done.usage);
    let text = match echo {
        Some(prompt) => prompt + &done.text,
        None => done.text,
    };
    let choice = TextChoice::first(&text, Some(done.finish_reason.as_str()));
    let body = writer.whole(&[choice], &usage);
    Ok(Answer::json(Bytes::from(body), Some(usage)))
}

/// Refuses an `n` above `[local] max_n`.
fn check_n(n: u64, max: usize) -> Result<(), Error> {
    if n > max as u64 {
        let why = format!("`n` is at most {max} on local models (`[local] max_n`)");
        return Err(invalid(why, "n"));
    }
    Ok(())
}

/// A lease on local model `upstream` (loaded first if need be), which must be of `kind`
/// (`model`: what the client asked for, named in the refusal).
async fn lease_of(
    state: &AppState,
    upstream: &str,
    model: &str,
    kind: ModelKind,
    keep_alive: Option<sluice_local::pool::KeepAlive>,
) -> Result<sluice_local::pool::Lease<sluice_local::pool::LocalModel>, Error> {
    let local = runtime(state)?;
    if let Some(other) = local
        .pool
        .spec(upstream)
        .map(|s| s.kind)
        .filter(|&k| k != kind)
    {
        return Err(wrong_kind(model, other));
    }
    local
        .pool
        .acquire(upstream, keep_alive)
        .await
        .map_err(|e| pool_error(&e))
}

/// Records that a request to local model `upstream` waited `wait` in its queue for its
/// batch (`sluice_local_queue_wait_seconds`, the model's `kind`).
fn waited(state: &AppState, upstream: &str, wait: std::time::Duration) {
    if let Some(m) = state
        .local
        .as_deref()
        .and_then(|l| l.metrics.model(upstream))
    {
        m.queue_wait.observe(wait);
    }
}

/// Serves one embeddings request on local model `upstream`; `model` is what the client asked
/// for. The inputs join the model's next batch.
pub async fn embeddings(
    state: &AppState,
    upstream: &str,
    model: &str,
    body: &Bytes,
) -> Result<Answer, Error> {
    let request = embedding_request(body)?;
    let lease = lease_of(
        state,
        upstream,
        model,
        ModelKind::Embedding,
        request.keep_alive,
    )
    .await?;
    let embedder = lease
        .as_embedder()
        .ok_or_else(|| wrong_kind(model, lease.kind()))?;
    let dimensions = embedder.model().dimensions();
    if let Some(d) = request.dimensions.filter(|&d| d != dimensions as u64) {
        return Err(invalid(
            format!("this model's embeddings have {dimensions} dimensions; `dimensions` cannot change that (asked {d})"),
            "dimensions",
        ));
    }
    let (texts, base64) = (request.texts, request.base64);
    let out = embedder
        .submit(texts)
        .map_err(|e| model_error(&e))?
        .await
        .map_err(|e| model_error(&e))?;
    waited(state, upstream, out.queue_wait);
    drop(lease);
    let usage = Usage {
        prompt_tokens: out.prompt_tokens as u64,
        ..Usage::default()
    };
    let text = write::embeddings_body(&out.vectors, base64, model, usage.prompt_tokens);
    Ok(Answer::json(Bytes::from(text), Some(usage)))
}

/// The embedding of `text` by local embedding model `upstream` (`model`: its name in the
/// config), for the semantic cache.
pub async fn embed_text(
    state: &AppState,
    upstream: &str,
    model: &str,
    text: String,
) -> Result<Vec<f32>, Error> {
    let lease = lease_of(state, upstream, model, ModelKind::Embedding, None).await?;
    let embedder = lease
        .as_embedder()
        .ok_or_else(|| wrong_kind(model, lease.kind()))?;
    let out = embedder
        .submit(vec![text])
        .map_err(|e| model_error(&e))?
        .await
        .map_err(|e| model_error(&e))?;
    waited(state, upstream, out.queue_wait);
    out.vectors.into_iter().next().ok_or_else(|| {
        ErrorKind::Internal {
            message: "the embedding model returned no vector".into(),
        }
        .into()
    })
}

/// The scores of (`query`, document) for each of `documents` by local cross-encoder
/// `upstream` (`model`: its name in the config), for the semantic cache's reranker check.
pub async fn rerank_texts(
    state: &AppState,
    upstream: &str,
    model: &str,
    query: String,
    documents: Vec<String>,
) -> Result<Vec<f32>, Error> {
    let lease = lease_of(state, upstream, model, ModelKind::Rerank, None).await?;
    let reranker = lease
        .as_reranker()
        .ok_or_else(|| wrong_kind(model, lease.kind()))?;
    let out = reranker
        .submit(query, documents)
        .map_err(|e| model_error(&e))?
        .await
        .map_err(|e| model_error(&e))?;
    waited(state, upstream, out.queue_wait);
    Ok(out.scores)
}

/// Serves one rerank request on local cross-encoder `upstream`; `model` is what the client
/// asked for. The (query, document) pairs join the model's next batch; the answer is the
/// shape Cohere, Jina and vLLM share, sorted by score.
pub async fn rerank(
    state: &AppState,
    upstream: &str,
    model: &str,
    body: &Bytes,
) -> Result<Answer, Error> {
    let request = rerank_request(body)?;
    let lease = lease_of(
        state,
        upstream,
        model,
        ModelKind::Rerank,
        request.keep_alive,
    )
    .await?;
    let reranker = lease
        .as_reranker()
        .ok_or_else(|| wrong_kind(model, lease.kind()))?;
    let documents: Vec<String> = request.documents.iter().map(|d| d.text.clone()).collect();
    let out = reranker
        .submit(request.query.clone(), documents)
        .map_err(|e| model_error(&e))?
        .await
        .map_err(|e| model_error(&e))?;
    waited(state, upstream, out.queue_wait);
    drop(lease);
    let usage = Usage {
        prompt_tokens: out.prompt_tokens as u64,
        ..Usage::default()
    };
    let text = write::rerank_body(&request, &out.scores, model, usage.prompt_tokens);
    Ok(Answer::json(Bytes::from(text), Some(usage)))
}
