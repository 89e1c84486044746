//! `sluice cost simulate`: replays recorded traffic through a routing config and prints the
//! current and projected monthly cost by provider, side by side, and the saving.

use anyhow::Context;
use sluice_core::config::Config;
use sluice_core::simulate::{Record, Simulation, Simulator};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sluice cost`.
#[derive(Debug, clap::Args)]
pub struct CostArgs {
    #[command(subcommand)]
    command: CostCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CostCommand {
    /// Replay recorded traffic through a routing config: current and projected monthly cost.
    Simulate(SimulateArgs),
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// Recorded traffic: a spend log (the SQLite ledger file, e.g. `.sluice/ledger.sqlite`,
    /// or a `postgres://` URL), or JSONL, one request per line with `model`,
    /// `prompt_tokens`, `completion_tokens`, and optionally `ts` (Unix seconds), `provider`,
    /// `cached_prompt_tokens`, `cost_usd`.
    #[arg(long)]
    log: PathBuf,
    /// With a spend log: replay the records of this period only (`7d`, `30d`; default all).
    #[arg(long)]
    since: Option<String>,
    /// The routing config to project (secrets it refers to need not be set).
    #[arg(long, short)]
    config: PathBuf,
    /// Days the traffic covers (default: its first to last timestamp, rounded up; 30 without
    /// timestamps).
    #[arg(long)]
    days: Option<f64>,
}

/// Runs `sluice cost ...`.
pub fn run(args: CostArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CostCommand::Simulate(a) => simulate(&a),
    }
}

/// USD with cents, from nano-USD scaled by `factor`, rounded half up.
fn usd(nano: u64, factor: f64) -> String {
    let cents = (nano as f64 * factor / 1e7).round() as u64;
    format!("${}.{:02}", thousands(cents / 100), cents % 100)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn signed_usd(before: u64, after: u64, factor: f64) -> String {
    if after > before {
        format!("+{}", usd(after - before, factor))
    } else if after < before {
        format!("-{}", usd(before - after, factor))
    } else {
        usd(0, factor)
    }
}

fn simulate(a: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_file(&a.config, &super::LenientEnv)
        .with_context(|| format!("invalid config `{}`", a.config.display()))?;
    let mut sim = Simulator::new(&config);
    if let Some(ledger) = spend_log(&a.log)? {
        let since = match &a.since {
            Some(s) => sluice_store::ledger::since(s, sluice_store::unix_now_ms())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            None => 0,
        };
        let records = super::runtime()?
            .block_on(ledger.export(since))
            .context("cannot read the spend log")?;
        for r in records.iter().filter(|r| r.status < 400) {
            // The client's name for the model: the route it asked for, else the model.
            let Some(model) = r.route.clone().or_else(|| r.model.clone()) else {
                continue;
            };
            let record = Record {
                ts: Some(r.ts_ms as f64 / 1000.0),
                model,
                provider: r.provider.clone(),
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                cached_prompt_tokens: r.cached_tokens,
                cost_usd: Some(r.cost_nano_usd as f64 / 1e9),
            };
            sim.add(&record)
                .map_err(|e| anyhow::anyhow!("spend record `{}`: {}", r.request_id, e.0))?;
        }
        let sim = sim.finish();
        print(&sim, a)?;
        return Ok(ExitCode::SUCCESS);
    }
    let file = std::fs::File::open(&a.log)
        .with_context(|| format!("cannot open `{}`", a.log.display()))?;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read `{}`", a.log.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line)
            .with_context(|| format!("`{}` line {}", a.log.display(), n + 1))?;
        sim.add(&record)
            .map_err(|e| anyhow::anyhow!("`{}` line {}: {}", a.log.display(), n + 1, e.0))?;
    }
    let sim = sim.finish();
    print(&sim, a)?;
    Ok(ExitCode::SUCCESS)
}

/// The spend log at `log`, if it is one: a `postgres://` URL, or a SQLite file.
fn spend_log(log: &std::path::Path) -> anyhow::Result<Option<sluice_store::Ledger>> {
    sluice_store::open::ledger_at(log).with_context(|| {
        if sluice_store::open::is_database_url(&log.to_string_lossy()) {
            "cannot open the PostgreSQL spend log".to_string()
        } else {
            format!("cannot open the spend log `{}`", log.display())
        }
    })
}

fn print(sim: &Simulation, a: &SimulateArgs) -> anyhow::Result<()> {
    let factor = sim.monthly_factor(a.days);
    let days = 30.0 / factor;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Replayed {} requests from {} ({days} days, scaled to 30) through {}\n",
        thousands(sim.requests),
        a.log.display(),
        a.config.display()
    )?;
    let header = [
        "provider",
        "requests now",
        "monthly now",
        "requests then",
        "monthly then",
        "change",
    ];
    let mut rows: Vec<[String; 6]> = sim
        .providers
        .iter()
        .map(|(name, l)| {
            [
                name.clone(),
                thousands(l.current_requests),
                usd(l.current_nano, factor),
                thousands(l.projected_requests),
                usd(l.projected_nano, factor),
                signed_usd(l.current_nano, l.projected_nano, factor),
            ]
        })
        .collect();
    let (now, then) = (sim.current_nano(), sim.projected_nano());
    rows.push([
        "total".to_string(),
        thousands(sim.requests),
        usd(now, factor),
        thousands(sim.requests),
        usd(then, factor),
        signed_usd(now, then, factor),
    ]);
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 6], out: &mut dyn Write| -> std::io::Result<()> {
        let mut s = format!("{:<w$}", cells[0], w = widths[0]);
        for (i, c) in cells.iter().enumerate().skip(1) {
            s.push_str(&format!("  {:>w$}", c, w = widths[i]));
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(header, &mut out)?;
    for r in &rows {
        line(
            [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]].map(String::as_str),
            &mut out,
        )?;
    }
    writeln!(out, "\nWhere the requests go:")?;
    for ((from, to), n) in &sim.moves {
        writeln!(out, "  {from} -> {to}: {}", thousands(*n))?;
    }
    let saving = now.saturating_sub(then);
    let percent = if now == 0 {
        0.0
    } else {
        saving as f64 * 100.0 / now as f64
    };
    writeln!(out)?;
    writeln!(out, "Current monthly cost:   {}", usd(now, factor))?;
    writeln!(out, "Projected monthly cost: {}", usd(then, factor))?;
    if then <= now {
        writeln!(
            out,
            "Saving:                 {} per month ({percent:.1}%)",
            usd(saving, factor)
        )?;
    } else {
        writeln!(
            out,
            "Extra cost:             {} per month",
            usd(then - now, factor)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_rounded_half_up_with_thousands() {
        assert_eq!(usd(117_875_000_000, 1.0), "$117.88");
        assert_eq!(usd(117_874_999_999, 1.0), "$117.87");
        assert_eq!(usd(1_234_567_000_000_000, 1.0), "$1,234,567.00");
        assert_eq!(usd(0, 1.0), "$0.00");
        assert_eq!(signed_usd(10_000_000_000, 7_000_000_000, 1.0), "-$3.00");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
    }
}
