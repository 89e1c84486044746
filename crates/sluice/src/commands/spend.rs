//! `sluice spend report`: spend grouped by key, model, provider, route or day, from the config's
//! spend log (the SQLite ledger in the data directory, or PostgreSQL).

use anyhow::Context;
use sluice_server::admin_keys;
use sluice_store::Dimension;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sluice spend`.
#[derive(Debug, clap::Args)]
pub struct SpendArgs {
    #[command(subcommand)]
    command: SpendCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SpendCommand {
    /// Requests, tokens and USD per group, highest spend first (by day: oldest first).
    Report {
        /// Group by `key`, `model`, `provider`, `route` or `day`.
        #[arg(long, default_value = "key")]
        by: String,
        /// How far back (`24h`, `7d`, `30d`).
        #[arg(long, default_value = "7d")]
        since: String,
        /// Config file (TOML). Default: `$SLUICE_CONFIG`, else the defaults (`./.sluice`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Writes rows as a left-aligned table (numbers right-aligned).
pub fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let numeric = |s: &str| {
        s.starts_with('$') || (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == ','))
    };
    let line = |out: &mut dyn Write, cells: &[String]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = w.saturating_sub(c.chars().count());
            if i > 0 && numeric(c) {
                text.push_str(&" ".repeat(pad));
                text.push_str(c);
            } else {
                text.push_str(c);
                text.push_str(&" ".repeat(pad));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    line(out, &head)?;
    for r in rows {
        line(out, r)?;
    }
    Ok(())
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs `sluice spend ...`.
pub fn run(args: SpendArgs) -> anyhow::Result<ExitCode> {
    let SpendCommand::Report {
        by,
        since,
        config,
        json,
    } = args.command;
    let by = Dimension::parse(&by)
        .with_context(|| format!("`--by {by}`: expected key, model, provider, route or day"))?;
    let config = super::offline_config(config)?;
    let ledger = super::open_ledger(&config)?;
    let now = sluice_store::unix_now_ms();
    let from = sluice_store::ledger::since(&since, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    super::runtime()?.block_on(async move {
        let report = ledger
            .report(by, from, now)
            .await
            .context("cannot read the spend log")?;
        let mut out = std::io::stdout().lock();
        if json {
            let v = admin_keys::report_json(by, from, &report);
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        let group = match by {
            Dimension::Key => "KEY",
            Dimension::Model => "MODEL",
            Dimension::Provider => "PROVIDER",
            Dimension::Route => "ROUTE",
            Dimension::Day => "DAY",
        };
        let header = [
            group,
            "REQUESTS",
            "ERRORS",
            "PROMPT",
            "COMPLETION",
            "CACHED",
            "CACHE_WRITE",
            "REASONING",
            "COST_USD",
        ];
        let mut rows: Vec<Vec<String>> = report
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.group.clone(),
                    thousands(r.requests),
                    thousands(r.errors),
                    thousands(r.prompt_tokens),
                    thousands(r.completion_tokens),
                    thousands(r.cached_tokens),
                    thousands(r.cache_write_tokens),
                    thousands(r.reasoning_tokens),
                    format!("${}", admin_keys::usd(r.cost_nano_usd)),
                ]
            })
            .collect();
        let total: u64 = report.rows.iter().map(|r| r.cost_nano_usd).sum();
        let requests: u64 = report.rows.iter().map(|r| r.requests).sum();
        rows.push(vec![
            "TOTAL".into(),
            thousands(requests),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            format!("${}", admin_keys::usd(total)),
        ]);
        writeln!(
            out,
            "spend since {since} by {}{}",
            group.to_lowercase(),
            if report.from_rollups {
                " (daily roll-ups: the period reaches past the raw log's retention)"
            } else {
                ""
            }
        )?;
        table(&mut out, &header, &rows)?;
        Ok(ExitCode::SUCCESS)
    })
}
