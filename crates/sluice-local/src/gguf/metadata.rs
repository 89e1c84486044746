//! Typed reads of GGUF metadata keys and tensor infos, with errors that name the key.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};

use crate::error::{Error, ErrorKind, Result};

pub(crate) fn string<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a str> {
    match md.get(key) {
        None => Err(ErrorKind::MissingMetadata(key.to_owned()).into()),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::invalid_metadata(
            key,
            format!("expected a string, found {:?}", other.value_type()),
        )),
    }
}

/// A `u32` key read by candle, whose accessors accept only `Value::U32`.
pub(crate) fn strict_u32(md: &HashMap<String, Value>, key: &str) -> Result<usize> {
    match md.get(key) {
        None => Err(ErrorKind::MissingMetadata(key.to_owned()).into()),
        Some(Value::U32(v)) => Ok(*v as usize),
        Some(other) => Err(Error::invalid_metadata(
            key,
            format!("expected a u32, found {:?}", other.value_type()),
        )),
    }
}

/// Any non-negative integer value.
pub(crate) fn lenient_u64(value: &Value) -> Option<u64> {
    match *value {
        Value::U8(v) => Some(v.into()),
        Value::U16(v) => Some(v.into()),
        Value::U32(v) => Some(v.into()),
        Value::U64(v) => Some(v),
        Value::I8(v) => u64::try_from(v).ok(),
        Value::I16(v) => u64::try_from(v).ok(),
        Value::I32(v) => u64::try_from(v).ok(),
        Value::I64(v) => u64::try_from(v).ok(),
        _ => None,
    }
}

pub(crate) fn tensor<'a>(
    content: &'a Content,
    name: &str,
) -> Result<&'a candle_core::quantized::gguf_file::TensorInfo> {
    content
        .tensor_infos
        .get(name)
        .ok_or_else(|| Error::invalid_metadata(name, "tensor missing from the file"))
}
