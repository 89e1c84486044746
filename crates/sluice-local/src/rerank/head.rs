//! [`Head`]: what `BertForSequenceClassification` puts on the encoder: the pooler (a dense
//! layer and `tanh` on the `[CLS]` token's state) and the classifier (a dense layer to the
//! logits), then the cross-encoder's [`Activation`]. Dropout is off at inference.

use super::activation::Activation;
use crate::embed::bert::Weights;
use crate::{Error, Result};

/// A dense layer on one row: `[outputs, inputs]` weight (PyTorch's layout) and bias.
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Dense {
    fn take(weights: &mut Weights, name: &str, outputs: usize, inputs: usize) -> Result<Self> {
        let mut tensor = |suffix: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let full = format!("{name}.{suffix}");
            let (found, data) = weights
                .remove(&full)
                .ok_or_else(|| Error::invalid_metadata(&full, "tensor missing"))?;
            if found != shape {
                return Err(Error::invalid_metadata(
                    &full,
                    format!("shape {found:?}, expected {shape:?}"),
                ));
            }
            Ok(data)
        };
        Ok(Self {
            weight: tensor("weight", &[outputs, inputs])?,
            bias: tensor("bias", &[outputs])?,
            inputs,
        })
    }

    /// `W · x + b`, summed in `f64` (one row: cost is nothing, precision is free).
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.inputs)
            .zip(&self.bias)
            .map(|(row, b)| {
                let dot: f64 = row
                    .iter()
                    .zip(x)
                    .map(|(w, v)| f64::from(*w) * f64::from(*v))
                    .sum();
                (dot + f64::from(*b)) as f32
            })
            .collect()
    }

    fn floats(&self) -> usize {
        self.weight.len() + self.bias.len()
    }
}

/// The pooler, the one-label classifier and the activation.
pub(super) struct Head {
    pooler: Dense,
    classifier: Dense,
    activation: Activation,
}

// === impl Head ===

impl Head {
    /// Takes `pooler.dense.*` (with the encoder's `bert.` prefix where the file has it) and
    /// `classifier.*` out of `weights`, for a model of width `hidden` and one label.
    pub(super) fn take(
        weights: &mut Weights,
        hidden: usize,
        activation: Activation,
    ) -> Result<Self> {
        let pooler = if weights.contains_key("bert.pooler.dense.weight") {
            "bert.pooler.dense"
        } else {
            "pooler.dense"
        };
        Ok(Self {
            pooler: Dense::take(weights, pooler, hidden, hidden)?,
            classifier: Dense::take(weights, "classifier", 1, hidden)?,
            activation,
        })
    }

    /// The score of one pair from its `[CLS]` state.
    pub(super) fn score(&self, cls: &[f32]) -> f32 {
        let pooled: Vec<f32> = self.pooler.apply(cls).into_iter().map(f32::tanh).collect();
        let logit = self.classifier.apply(&pooled)[0];
        self.activation.apply(logit)
    }

    pub(super) fn activation(&self) -> Activation {
        self.activation
    }

    /// Bytes of weights held.
    pub(super) fn weight_bytes(&self) -> u64 {
        ((self.pooler.floats() + self.classifier.floats()) * 4) as u64
    }
}
