//! A GGUF file's tensor data as a model's matrices read it: mapped from the file, or read into
//! memory ([`Weights`], `[local] mmap`).
//!
//! Mapped, the data is a private copy-on-write mapping of the file. The pages the engine
//! writes (the 32-value formats' tensors, repacked in place at load) become the process's own,
//! as they would be if read; every other page (K-quants, F16, BF16, F32) stays the file's: a
//! page of the page cache, loaded on first use, shared with every other process and model
//! that maps the same file, and dropped by the kernel under pressure rather than swapped. A
//! load then costs no read of those tensors, and a second gateway on the same machine (or the
//! same file loaded again after an eviction) finds them in memory.
//!
//! The mapping's one risk is the mapping's usual one: a file truncated while it is mapped
//! makes a read of the lost pages a `SIGBUS`. Model files are replaced by renaming a new file
//! over the old (as Ollama's content-addressed store, a download tool or `mv` do), which
//! leaves the mapped file intact; README says so, and `mmap = false` reads them instead.

#![allow(unsafe_code)]

use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::file::Weights;

/// The tensor data: the bytes of the file from the tensor data's offset to its end.
pub(crate) enum Blob {
    Read(Vec<u8>),
    Mapped(memmap2::MmapMut),
}

impl Blob {
    /// The data of `path` from byte `start`, `how` says how.
    pub(crate) fn open(path: &Path, start: u64, how: Weights) -> Result<Self> {
        let bad = |reason: String| Error::invalid_file(path, reason);
        let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| bad(format!("cannot stat: {e}")))?
            .len();
        let len = usize::try_from(size.saturating_sub(start))
            .map_err(|_| bad("too large for this machine".into()))?;
        match how {
            // An empty mapping is an error on Linux; an empty data section reads as empty.
            Weights::Mapped if len > 0 => Self::map(&file, start, len)
                .map_err(|e| bad(format!("cannot map the tensor data: {e}"))),
            _ => Self::read(file, start, len)
                .map_err(|e| bad(format!("reading the tensor data: {e}"))),
        }
    }

    fn read(mut file: File, start: u64, len: usize) -> std::io::Result<Self> {
        use std::io::{Read, Seek, SeekFrom};
        let mut data = vec![0u8; len];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut data)?;
        Ok(Self::Read(data))
    }

    fn map(file: &File, start: u64, len: usize) -> std::io::Result<Self> {
        // SAFETY: the mapping is private (copy-on-write): what the engine writes stays in this
        // process. Its bytes are read as plain `u8`s, valid whatever they hold. What a
        // mapping cannot promise, that the file keeps its length while mapped, is the
        // module's documented condition (files are replaced by a rename, which leaves this
        // one whole).
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(len)
                .map_copy(file)?
        };
        Ok(Self::Mapped(map))
    }

    /// Asks the kernel to read the mapped pages ahead, in the background (the first forward
    /// pass reads every weight); nothing for read data.
    pub(crate) fn prefetch(&self) {
        if let Self::Mapped(map) = self {
            // Advice only: a kernel that declines it leaves the pages to load on first use.
            let _ = map.advise(memmap2::Advice::WillNeed);
        }
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self {
            Self::Read(_) => "read",
            Self::Mapped(_) => "mapped",
        };
        write!(f, "Blob({how}, {} bytes)", self.len())
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Read(data) => data,
            Self::Mapped(map) => map,
        }
    }
}

impl DerefMut for Blob {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Read(data) => data,
            Self::Mapped(map) => map,
        }
    }
}
