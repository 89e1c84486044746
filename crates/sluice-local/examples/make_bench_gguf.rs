//! Writes the GGUF files of the local chat benchmark (`chat_bench` against llama.cpp): a
//! llama-architecture model with random weights at the scale of a small real model (TinyLlama
//! scaled down): hidden 1024, 16 layers, 16 heads / 4 KV heads (head dim 64), FFN 2816,
//! vocabulary 32000, context 2048; about 246M parameters. Same seed, same bytes.
//!
//! ```text
//! cargo run --release -p sluice-local --example make_bench_gguf -- [OUT_DIR] [DTYPE...]
//! ```
//!
//! `OUT_DIR` defaults to `target/bench-gguf`; the dtypes (`q4_0`, `q8_0`, `q4_k_m`, `f16`,
//! `f32`) to `q4_0 q8_0 q4_k_m`. Files are named `bench-llama-246m-<dtype>.gguf`; an existing
//! file is kept (delete it to rewrite). Prints one line per file: path, bytes, seconds.

#![allow(clippy::print_stdout)] // a benchmark helper prints what it wrote

use std::path::PathBuf;
use std::time::Instant;

use sluice_local::testing::{TestArch, TestDType, TestModel};

/// The benchmark model at `dtype`.
fn bench_model(dtype: TestDType) -> TestModel {
    TestModel {
        layers: 16,
        hidden: 1024,
        heads: 16,
        kv_heads: 4,
        ffn: 2816,
        context_length: 2048,
        seed: 2024,
        ..TestModel::tiny(TestArch::Llama, dtype)
    }
    .with_vocab_size(32_000)
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
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "target/bench-gguf".into()));
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = vec!["q4_0".into(), "q8_0".into(), "q4_k_m".into()];
    }
    std::fs::create_dir_all(&dir)?;
    for name in names {
        let (dtype, label) = parse_dtype(&name).ok_or_else(|| format!("unknown dtype {name}"))?;
        let model = bench_model(dtype);
        let path = dir.join(format!("bench-llama-246m-{label}.gguf"));
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
