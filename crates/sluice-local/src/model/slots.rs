//! candle's sequence slots: one OS thread per slot, each owning a copy of the model state
//! (weights `Arc`-shared for llama and phi3; a full copy for qwen2, whose `ModelWeights` is not
//! `Clone`) and its KV cache, generating one request at a time.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_phi3, quantized_qwen2};

use super::queue::{lock, Shared};
use super::sequence::{Job, Next, Sequence, PREFILL_CHUNK};
use crate::error::{panic_error, Error, ErrorKind, Result};
use crate::gguf::file::{open, read_content};
use crate::gguf::Architecture;

/// One slot's model state (weights + KV cache).
pub(super) enum Weights {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
}

// === impl Weights ===

impl Weights {
    /// Loads `parallel` slots' states from the file.
    pub(super) fn load_slots(
        path: &Path,
        architecture: Architecture,
        device: &Device,
        parallel: usize,
    ) -> Result<Vec<Self>> {
        let first = Self::load(path, architecture, device)?;
        let mut slots = Vec::with_capacity(parallel);
        for _ in 1..parallel {
            slots.push(match &first {
                Self::Llama(w) => Self::Llama(w.clone()),
                Self::Phi3(w) => Self::Phi3(w.clone()),
                Self::Qwen2(_) => Self::load(path, architecture, device)?,
            });
        }
        slots.push(first);
        Ok(slots)
    }

    fn load(path: &Path, architecture: Architecture, device: &Device) -> Result<Self> {
        let mut reader = open(path)?;
        let content = read_content(path, &mut reader)?;
        let loaded = std::panic::catch_unwind(AssertUnwindSafe(|| match architecture {
            Architecture::Llama => {
                quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
                    .map(Self::Llama)
            }
            Architecture::Qwen2 => {
                quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)
                    .map(Self::Qwen2)
            }
            // candle's phi3 takes the rope base as 10000 (Phi-3 and 3.5 mini's).
            Architecture::Phi3 => {
                quantized_phi3::ModelWeights::from_gguf(false, content, &mut reader, device)
                    .map(Self::Phi3)
            }
            // `Chosen::decide` keeps these off candle.
            Architecture::Gemma2 | Architecture::Gemma3 => Err(candle_core::Error::Msg(format!(
                "candle has no `{}` implementation here",
                architecture.as_str()
            ))),
        }))
        .map_err(|payload| panic_error("model loader", payload.as_ref()))?;
        loaded.map_err(|e| Error::invalid_file(path, format!("cannot load the weights: {e}")))
    }

    /// Runs `tokens` at `position ..` and returns the last one's logits.
    fn forward(&mut self, tokens: &[u32], position: usize, device: &Device) -> Result<Vec<f32>> {
        let input = Tensor::new(tokens, device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(Error::backend)?;
        let logits = match self {
            Self::Llama(w) => w.forward(&input, position),
            Self::Qwen2(w) => w.forward(&input, position),
            Self::Phi3(w) => w.forward(&input, position),
        };
        logits
            .and_then(|l| l.squeeze(0))
            .and_then(|l| l.to_dtype(candle_core::DType::F32))
            .and_then(|l| l.to_vec1())
            .map_err(Error::backend)
    }
}

/// A slot thread: takes requests off the queue one at a time until the model is dropped.
pub(super) fn slot_loop(shared: &Shared, mut weights: Weights) {
    while let Some(job) = super::queue::next_job(shared) {
        let tx = job.tx.clone();
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| generate(shared, &mut weights, job)));
        // Free the slot before the caller hears the result, so a follow-up request is admitted.
        lock(&shared.queue).busy -= 1;
        match result {
            Ok(Some((sequence, Ok(reason)))) => sequence.finish(reason),
            Ok(Some((sequence, Err(error)))) => sequence.fail(error),
            Ok(None) => {}
            Err(payload) => {
                let _ = tx.send(Err(panic_error("generation", payload.as_ref())));
            }
        }
    }
}

type Outcome = Option<(Sequence, Result<super::types::FinishReason>)>;

/// Runs one request; `None` when the caller went away (cancelled).
fn generate(shared: &Shared, weights: &mut Weights, job: Job) -> Outcome {
    let mut sequence = Sequence::start(job, shared.context_length, 0, &shared.tokenizer);
    let device = &shared.device;
    let mut position = 0;
    let mut logits = Vec::new();
    for chunk in sequence.prompt().to_vec().chunks(PREFILL_CHUNK) {
        match weights.forward(chunk, position, device) {
            Ok(l) => logits = l,
            Err(e) => return Some((sequence, Err(e))),
        }
        position += chunk.len();
    }
    loop {
        let next = match sequence.step(&shared.tokenizer, std::mem::take(&mut logits)) {
            Ok(next) => next,
            Err(e) => return Some((sequence, Err(e))),
        };
        match next {
            Next::Finished(reason) => return Some((sequence, Ok(reason))),
            Next::Cancelled => return None,
            Next::Feed(token) => {
                if lock(&shared.queue).closed {
                    return Some((sequence, Err(ErrorKind::Unloaded.into())));
                }
                match weights.forward(&[token], position, device) {
                    Ok(l) => logits = l,
                    Err(e) => return Some((sequence, Err(e))),
                }
                position += 1;
            }
        }
    }
}
