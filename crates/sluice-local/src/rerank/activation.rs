//! [`Activation`]: what sentence-transformers' `CrossEncoder` applies to the classifier's
//! logit, and how it decides (as of sentence-transformers 6.2).
//!
//! In order, the first that names one wins:
//!
//! 1. `config_sentence_transformers.json`'s `activation_fn` (written by
//!    `CrossEncoder.save_pretrained`, e.g. `torch.nn.modules.activation.Sigmoid`);
//! 2. `config.json`'s `sentence_transformers.activation_fn`;
//! 3. `config.json`'s `sbert_ce_default_activation_function` (files saved before 4.0);
//! 4. `Sigmoid` for one label (the only count a reranker takes).
//!
//! A path outside `torch.` is custom code, which sentence-transformers skips (with a warning)
//! unless `trust_remote_code` is set; so does this. A `torch.` path other than the ones below is
//! refused by name ([`ErrorKind::UnsupportedActivation`]).

use crate::{ErrorKind, Result};

/// The activation applied to a cross-encoder's logit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `torch.nn.Sigmoid`: a score in (0, 1). The default for one label.
    Sigmoid,
    /// `torch.nn.Identity`: the raw logit.
    Identity,
    /// `torch.nn.Tanh`: a score in (-1, 1).
    Tanh,
}

// === impl Activation ===

impl Activation {
    /// The activation `torch_path` names, if it is one of `torch.nn`'s supported ones; `None`
    /// for a path outside `torch.` (skipped, as sentence-transformers does by default).
    pub fn from_torch_path(torch_path: &str) -> Result<Option<Self>> {
        if !torch_path.starts_with("torch.") {
            tracing::warn!(
                activation = torch_path,
                "cross-encoder activation outside `torch.` is custom code: using the default, \
                 as sentence-transformers does without `trust_remote_code`"
            );
            return Ok(None);
        }
        let activation = match torch_path {
            "torch.nn.Sigmoid" | "torch.nn.modules.activation.Sigmoid" => Self::Sigmoid,
            "torch.nn.Identity" | "torch.nn.modules.linear.Identity" => Self::Identity,
            "torch.nn.Tanh" | "torch.nn.modules.activation.Tanh" => Self::Tanh,
            other => return Err(ErrorKind::UnsupportedActivation(other.to_owned()).into()),
        };
        Ok(Some(activation))
    }

    /// The first of `candidates` (in the order above; `None` where a file does not say) that
    /// names an activation, else `Sigmoid`.
    pub fn resolve<'a>(candidates: impl IntoIterator<Item = Option<&'a str>>) -> Result<Self> {
        for path in candidates.into_iter().flatten() {
            if let Some(activation) = Self::from_torch_path(path)? {
                return Ok(activation);
            }
        }
        Ok(Self::Sigmoid)
    }

    /// Applies it to a logit.
    pub fn apply(self, logit: f32) -> f32 {
        match self {
            Self::Sigmoid => 1.0 / (1.0 + (-logit).exp()),
            Self::Identity => logit,
            Self::Tanh => logit.tanh(),
        }
    }

    /// `Sigmoid`, `Identity` or `Tanh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sigmoid => "Sigmoid",
            Self::Identity => "Identity",
            Self::Tanh => "Tanh",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_that_names_one_wins() {
        let resolve = |c: &[Option<&str>]| Activation::resolve(c.iter().copied()).expect("known");
        assert_eq!(resolve(&[]), Activation::Sigmoid);
        assert_eq!(resolve(&[None, None, None]), Activation::Sigmoid);
        assert_eq!(
            resolve(&[
                Some("torch.nn.modules.linear.Identity"),
                Some("torch.nn.Tanh")
            ]),
            Activation::Identity
        );
        assert_eq!(resolve(&[None, Some("torch.nn.Tanh")]), Activation::Tanh);
        // Custom code is skipped, not run and not refused.
        assert_eq!(
            resolve(&[Some("my_package.MyActivation"), Some("torch.nn.Identity")]),
            Activation::Identity
        );
        assert_eq!(
            resolve(&[Some("my_package.MyActivation")]),
            Activation::Sigmoid
        );
    }

    #[test]
    fn other_torch_activations_are_refused_by_name() {
        let error = Activation::resolve([Some("torch.nn.modules.activation.ReLU")])
            .expect_err("ReLU is not applied");
        assert!(
            matches!(error.kind(), ErrorKind::UnsupportedActivation(name) if name == "torch.nn.modules.activation.ReLU"),
            "{error}"
        );
        assert!(error.is_unsupported());
    }

    #[test]
    fn apply() {
        assert!((Activation::Sigmoid.apply(0.0) - 0.5).abs() < 1e-7);
        assert!((Activation::Sigmoid.apply(2.0) - 0.880_797).abs() < 1e-6);
        assert_eq!(Activation::Identity.apply(-3.25), -3.25);
        assert!((Activation::Tanh.apply(0.5) - 0.462_117_16).abs() < 1e-6);
    }
}
