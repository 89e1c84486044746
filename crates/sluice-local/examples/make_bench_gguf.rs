//! Writes the GGUF files of the local chat benchmarks (`chat_bench`, `bench/local-batch.sh`
//! against llama.cpp): models with random weights at the scale of real small models, in
//! llama.cpp's tensor mix for the dtype (see `TestDType`). Same seed, same bytes.
//!
//! ```text
//! cargo run --release -p sluice-local --example make_bench_gguf -- [OUT_DIR] [--shape SHAPE] [DTYPE...]
//! ```
//!
//! Shapes (`--shape`, default `llama-246m`):
//! - `llama-246m`: TinyLlama scaled down: hidden 1024, 16 layers, 16 heads / 4 KV heads (head
//!   dim 64), FFN 2816, vocabulary 32000, context 2048; about 246M parameters.
//! - `qwen2-494m`: Qwen2.5 0.5B's shape: qwen2 architecture, hidden 896, 24 layers, 14 heads /
//!   2 KV heads (head dim 64), FFN 4864, vocabulary 151936 (embedding tied to the output),
//!   q/k/v biases, context 4096; about 494M parameters.
//! - `llama-1100m`: TinyLlama 1.1B's shape: hidden 2048, 22 layers, 32 heads / 4 KV heads,
//!   FFN 5632, vocabulary 32000, context 2048; about 1.1B parameters.
//!
//! `OUT_DIR` defaults to `target/bench-gguf`; the dtypes (`q4_0`, `q8_0`, `q4_k_m`, `f16`,
//! `f32`) to `q4_0 q8_0 q4_k_m`. Files are named `bench-<shape>-<dtype>.gguf`; an existing
//! file is kept (delete it to rewrite). Prints one line per file: path, bytes, seconds.

#![allow(clippy::print_stdout)] // a benchmark helper prints what it wrote

use std::path::PathBuf;
use std::time::Instant;

use sluice_local::testing::{TestArch, TestDType, TestModel};

/// The benchmark model of shape `shape` at `dtype`.
fn bench_model(shape: &str, dtype: TestDType) -> Option<TestModel> {
    let (arch, layers, hidden, heads, kv_heads, ffn, vocab, context_length) = match shape {
        "llama-246m" => (TestArch::Llama, 16, 1024, 16, 4, 2816, 32_000, 2048),
        "qwen2-494m" => (TestArch::Qwen2, 24, 896, 14, 2, 4864, 151_936, 4096),
        "llama-1100m" => (TestArch::Llama, 22, 2048, 32, 4, 5632, 32_000, 2048),
        _ => return None,
    };
    let model = TestModel {
        layers,
        hidden,
        heads,
        kv_heads,
        ffn,
        context_length,
        seed: 2024,
        ..TestModel::tiny(arch, dtype)
    };
    Some(model.with_vocab_size(vocab))
}

fn parse_dtype(name: &str) -> Option<(TestDType, &'static str)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "q4_0" => (TestDType::Q4_0, "q4_0"),
        "q8_0" => (TestDType::Q8_0, "q8_0"),
        "q4_k_m" | "q4km" => (TestDType::Q4KM, "q4_k_m"),
        "f16" => (TestDType::F16, "f16"),
        "f32" => (TestDType::F32, "f32"),
        _ => return None,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let dir = match args.peek() {
        Some(a) if !a.starts_with("--") && parse_dtype(a).is_none() => {
            PathBuf::from(args.next().unwrap_or_default())
        }
        _ => PathBuf::from("target/bench-gguf"),
    };
    let mut shape = "llama-246m".to_owned();
    let mut names = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--shape" {
            shape = args.next().ok_or("--shape needs a value")?;
        } else {
            names.push(arg);
        }
    }
    if names.is_empty() {
        names = vec!["q4_0".into(), "q8_0".into(), "q4_k_m".into()];
    }
    std::fs::create_dir_all(&dir)?;
    for name in names {
        let (dtype, label) = parse_dtype(&name).ok_or_else(|| format!("unknown dtype {name}"))?;
        let model = bench_model(&shape, dtype).ok_or_else(|| format!("unknown shape {shape}"))?;
        let path = dir.join(format!("bench-{shape}-{label}.gguf"));
        if path.exists() {
            println!("{} exists, kept", path.display());
            continue;
        }
        let started = Instant::now();
        let partial = path.with_extension("gguf.partial");
        model.write(&partial)?;
        std::fs::rename(&partial, &path)?;
        let bytes = std::fs::metadata(&path)?.len();
        println!(
            "{} {bytes} bytes {:.1}s",
            path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
