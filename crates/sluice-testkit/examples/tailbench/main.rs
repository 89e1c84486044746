//! tailbench: the measures independent gateway benchmarks publish, taken the way they take
//! them (bench/tail.sh runs it; see BENCHMARKS.md, issue 22).
//!
//! ```text
//! tailbench latency  --target NAME=ADDR ... [--rounds 5] [--window 3] [--ttft-samples 1000]
//!                    [--reference nginx] [--key K] [--model M]
//! tailbench memory   --target NAME=ADDR@PID ... [--levels 64,256,1024,4096] [--busy 3] [--after 10]
//! tailbench coldstart --name NAME --addr ADDR [--runs 10] [--key K] -- COMMAND ARGS...
//! ```
//!
//! `latency`: the first target is the upstream itself (`direct`); each round measures every
//! target in turn for a window (one keep-alive connection, one request at a time, then
//! `--ttft-samples` streamed requests each on a fresh connection, timed from the connect to
//! the first `data:` event); percentiles are nearest-rank; a gateway's added latency is its
//! percentile minus the direct leg's in the same round, and the table shows the median over
//! rounds. `memory`: resident memory of each target's process tree at idle, with N idle
//! keep-alive connections, at its peak while all N send requests back to back (sampled every
//! 10 ms), and `--after` seconds after the last connections closed. `coldstart`: from exec of
//! the command to its first answered (2xx) chat completion, `--runs` times.
#![allow(clippy::print_stdout)]

mod args;
mod coldstart;
mod latency;
mod memory;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprintln!("usage: tailbench latency|memory|coldstart ... (see the source's header)");
        return ExitCode::from(2);
    };
    let result = match args::Args::parse(rest) {
        Err(e) => Err(e),
        Ok(a) => match command.as_str() {
            "latency" => latency::run(&a),
            "memory" => memory::run(&a),
            "coldstart" => coldstart::run(&a),
            other => Err(format!("unknown command `{other}`")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tailbench: {e}");
            ExitCode::FAILURE
        }
    }
}
