//! Opening a GGUF file and reading its header, checked against the file's length.

use std::io::{Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;

use super::raw;
use crate::error::{Error, ErrorKind, Result};

/// Reads a GGUF header (metadata and tensor infos), returning it with the file's size.
pub(crate) fn read_header(path: &Path) -> Result<(Content, u64)> {
    let mut file = open(path)?;
    let size = file
        .get_ref()
        .metadata()
        .map_err(|source| ErrorKind::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let content = read_content(path, &mut file)?;
    Ok((content, size))
}

/// Opens a GGUF file, buffered.
pub(crate) fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|source| ErrorKind::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(std::io::BufReader::new(file))
}

/// Reads the header of the file at `path` from `reader`, and checks that every tensor lies
/// inside the file.
pub(crate) fn read_content<R: Read + Seek>(path: &Path, reader: &mut R) -> Result<Content> {
    let content = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(reader)))
        .map_err(|payload| crate::error::panic_error("GGUF header reader", payload.as_ref()))?
        .map_err(|e| unreadable(path, reader, e))?;
    // The reader checks sizes against the file length for strings and arrays but not for
    // tensor data: check that every tensor lies inside the file.
    let end = reader
        .seek(std::io::SeekFrom::End(0))
        .map_err(|source| ErrorKind::Io {
            path: path.to_path_buf(),
            source,
        })?;
    for (name, info) in &content.tensor_infos {
        let bytes = stored_bytes(info.ggml_dtype, info.shape.elem_count() as u64);
        let tensor_end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|start| start.checked_add(bytes));
        if tensor_end.is_none_or(|tensor_end| tensor_end > end) {
            return Err(Error::invalid_file(
                path,
                format!(
                    "tensor `{name}` extends past the end of the file ({end} bytes): truncated?"
                ),
            ));
        }
    }
    Ok(content)
}

/// Why candle could not read the header: a tensor type it does not know (named, with its
/// tensor), else an invalid file.
fn unreadable<R: Read + Seek>(path: &Path, reader: &mut R, error: candle_core::Error) -> Error {
    // The type ids candle's reader knows (`GgmlDType::from_u32`).
    let known = |id: u32| matches!(id, 0..=3 | 6..=15 | 30);
    let entries = raw::tensor_entries(reader).unwrap_or_default();
    match entries.into_iter().find(|t| !known(t.type_id)) {
        Some(t) => ErrorKind::UnsupportedTensorType {
            tensor: t.name,
            dtype: raw::ggml_type_name(t.type_id),
        }
        .into(),
        None => Error::invalid_file(path, error),
    }
}

/// Bytes `elements` values of `dtype` take in the file.
pub(crate) fn stored_bytes(dtype: GgmlDType, elements: u64) -> u64 {
    elements / dtype.block_size() as u64 * dtype.type_size() as u64
}

/// How the native engine brings a model's weights into memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Weights {
    /// Mapped from the file, copy-on-write: the tensors the engine uses as the file stores
    /// them (K-quants, F16, BF16, F32) stay the file's pages, loaded on first use and shared
    /// with every other mapping of the file; the 32-value formats' tensors, repacked at load,
    /// become the process's own (the default; llama.cpp maps its files too).
    #[default]
    Mapped,
    /// Read whole into the process's own memory.
    Read,
}
