//! Reading a sentence-transformers model directory's files: JSON settings, and the
//! safetensors weights (as `f32`, or only their element count for an estimate).

use std::path::Path;

use super::bert::Weights;
use crate::{Error, ErrorKind, Result};

/// A vocabulary of 30k WordPiece tokens with its maps, roughly.
pub(crate) const TOKENIZER_BYTES: u64 = 8 << 20;

pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
    ErrorKind::Io {
        path: path.to_path_buf(),
        source,
    }
    .into()
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|e| io(path, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::invalid_file(path, e))
}

pub(crate) fn read_optional_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Elements in a safetensors file, from its header (without reading the tensors).
pub(crate) fn safetensors_elements(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| io(path, e))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(Error::invalid_file(path, "safetensors header too large"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|e| io(path, e))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| Error::invalid_file(path, e))?;
    Ok(header
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("shape")?.as_array().cloned())
        .map(|shape| shape.iter().filter_map(|d| d.as_u64()).product::<u64>())
        .sum())
}

/// Every tensor of a safetensors file, as `f32`.
pub(crate) fn load_weights(path: &Path) -> Result<Weights> {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .map_err(|e| Error::invalid_file(path, e))?;
    tensors
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            let data = t
                .to_dtype(candle_core::DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(Error::backend)?;
            Ok((name, (shape, data)))
        })
        .collect()
}

/// Whether `dir` holds an encoder model's files: `config.json`, `tokenizer.json` and
/// `model.safetensors` (an embedding model or a cross-encoder).
pub(crate) fn is_encoder_dir(dir: &Path) -> bool {
    dir.is_dir()
        && dir.join("config.json").is_file()
        && dir.join("tokenizer.json").is_file()
        && dir.join("model.safetensors").is_file()
}

/// Whether `config.json` in `dir` describes a sequence classifier (`architectures` holds a
/// `...ForSequenceClassification`): a cross-encoder, not an embedding model. `false` when the
/// file is unreadable.
pub(crate) fn is_sequence_classifier(dir: &Path) -> bool {
    #[derive(serde::Deserialize)]
    struct Architectures {
        #[serde(default)]
        architectures: Vec<String>,
    }
    read_json::<Architectures>(&dir.join("config.json")).is_ok_and(|c| {
        c.architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"))
    })
}
