//! What the built-in detectors cost on a 4 KB chat request: every built-in detector (the
//! issue's worst case) over a realistic body with no personal data, and over one with some
//! to redact. Run by bench/guard.sh: `cargo run --release -p sluice-guard --example cost`.

#![allow(clippy::print_stdout)] // a benchmark program prints its result

use sluice_guard::{check, Action, Builtin, Guardrail};
use std::time::Instant;

fn body(with_pii: bool) -> String {
    let paragraph = "The gateway keeps a tab per request: limits, budget, spend. Version 2.4.1 shipped on 2026-12-04 with 3 fixes; see ticket 48213 and the runbook at https://docs.example.org/runbooks/gateway. Latency p95 stayed under 180 ms at 1,200 requests per second. ";
    let mut text = String::new();
    while text.len() < 3_900 {
        text.push_str(paragraph);
    }
    if with_pii {
        text.push_str(" Contact ann@example.com or +1 415-555-0132, card 4111 1111 1111 1111.");
    }
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text}
        ],
        "temperature": 0.2
    })
    .to_string()
}

fn main() {
    // Detectors by name as arguments (default: every built-in one).
    let mut all: Vec<String> = std::env::args().skip(1).collect();
    if all.is_empty() {
        all = Builtin::ALL.iter().map(|b| b.name().to_string()).collect();
    }
    let guard = Guardrail::new("all", &all, &[], Action::Redact).expect("guardrail");
    for (name, text) in [
        ("clean 4 KB", body(false)),
        ("4 KB with 3 values", body(true)),
    ] {
        let rounds = 20_000;
        // Warm up, then time.
        for _ in 0..1_000 {
            std::hint::black_box(check(&[&guard], &text));
        }
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(check(&[&guard], std::hint::black_box(&text)));
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!(
            "{name:>20} ({} bytes): {per:.2} µs per request, detectors: {}",
            text.len(),
            all.join(" ")
        );
    }
}
