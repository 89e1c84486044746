//! A raw walk over a GGUF header, for what candle's reader does not say: which tensor holds a
//! type it does not know (it reports only the type id); and the primitive reads discovery uses
//! to find `general.architecture` without reading the whole header.

use std::io::{Read, Seek, SeekFrom};

/// Stop walking after this many key-value pairs or tensors (a corrupt count).
const MAX_ENTRIES: u64 = 1 << 24;

/// Bytes of a scalar GGUF value type; `None` for strings and arrays.
pub(crate) fn scalar_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

pub(crate) fn read_u32(reader: &mut impl Read) -> std::io::Result<u32> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

pub(crate) fn read_u64(reader: &mut impl Read) -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    reader.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

fn invalid(reason: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason)
}

pub(crate) fn read_string(reader: &mut impl Read, max: u64) -> std::io::Result<String> {
    let len = read_u64(reader)?;
    if len > max {
        return Err(invalid("string too long"));
    }
    let mut bytes = vec![0u8; len as usize];
    reader.read_exact(&mut bytes)?;
    String::from_utf8(bytes).map_err(invalid)
}

/// Skips `bytes`: reads short runs (cheap on a `BufReader`), seeks past long ones.
pub(crate) fn skip(reader: &mut (impl Read + Seek), bytes: u64) -> std::io::Result<()> {
    if bytes <= 4096 {
        let copied = std::io::copy(&mut reader.by_ref().take(bytes), &mut std::io::sink())?;
        if copied < bytes {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(());
    }
    let offset = i64::try_from(bytes).map_err(invalid)?;
    reader.seek(SeekFrom::Current(offset)).map(drop)
}

/// Skips one metadata value of type `kind`.
fn skip_value(reader: &mut (impl Read + Seek), kind: u32, depth: u32) -> std::io::Result<()> {
    match kind {
        8 => {
            let len = read_u64(reader)?;
            skip(reader, len)
        }
        9 if depth < 4 => {
            let element = read_u32(reader)?;
            let count = read_u64(reader)?;
            match scalar_size(element) {
                Some(size) => skip(reader, count.saturating_mul(size)),
                None => (0..count.min(MAX_ENTRIES))
                    .try_for_each(|_| skip_value(reader, element, depth + 1)),
            }
        }
        scalar => skip(
            reader,
            scalar_size(scalar).ok_or_else(|| invalid("bad type"))?,
        ),
    }
}

/// A tensor's entry in the header: its name, its type id and where that id lies in the file.
pub(crate) struct TensorEntry {
    pub(crate) name: String,
    pub(crate) type_id: u32,
    pub(crate) type_offset: u64,
}

/// Every tensor's [`TensorEntry`], walking the whole header from the start (an empty list when
/// it is not GGUF v2 or later).
pub(crate) fn tensor_entries(reader: &mut (impl Read + Seek)) -> std::io::Result<Vec<TensorEntry>> {
    reader.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic)?;
    let version = read_u32(reader)?;
    if &magic != b"GGUF" || version < 2 {
        return Ok(Vec::new());
    }
    let tensors = read_u64(reader)?;
    let keys = read_u64(reader)?;
    for _ in 0..keys.min(MAX_ENTRIES) {
        skip_value(reader, 8, 0)?;
        let kind = read_u32(reader)?;
        skip_value(reader, kind, 0)?;
    }
    let mut entries = Vec::new();
    for _ in 0..tensors.min(MAX_ENTRIES) {
        let name = read_string(reader, 1 << 16)?;
        let dims = read_u32(reader)?;
        skip(reader, u64::from(dims.min(8)) * 8)?;
        let type_offset = reader.stream_position()?;
        let type_id = read_u32(reader)?;
        read_u64(reader)?;
        entries.push(TensorEntry {
            name,
            type_id,
            type_offset,
        });
    }
    Ok(entries)
}

/// ggml's name of a tensor type id (`ggml.h`'s `ggml_type`).
pub(crate) fn ggml_type_name(id: u32) -> String {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
    ];
    NAMES
        .get(id as usize)
        .map_or_else(|| format!("type id {id}"), |name| (*name).to_owned())
}
