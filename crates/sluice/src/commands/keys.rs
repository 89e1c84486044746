//! `sluice keys create|list|show|update|revoke`: virtual keys, in the config's key store
//! (the SQLite ledger in the data directory, or PostgreSQL at `storage.database_url`), so
//! they work whether or not a gateway is running. A running gateway trusts its copy of a
//! key for `keys.cache_ttl_ms` (5 s): a change made here reaches it within that time; the
//! admin API (`/admin/keys`) changes the gateway it is sent to at once.

use anyhow::{bail, Context};
use serde_json::{Map, Value};
use sluice_server::admin_keys;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sluice keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    /// Config file (TOML). Default: `$SLUICE_CONFIG`, else the defaults (`./.sluice`).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Make a key; prints its secret once.
    Create {
        #[command(flatten)]
        settings: Settings,
        /// Use this secret instead of a new random one (a key moved from another gateway).
        #[arg(long)]
        secret: Option<String>,
    },
    /// Every key with its limits, budget and spend.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One key, as JSON.
    Show {
        /// Key id or name.
        id: String,
    },
    /// Change a key's settings.
    Update {
        /// Key id or name.
        id: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Revoke a key: requests with it get 401 from then on.
    Revoke {
        /// Key id or name.
        id: String,
    },
}

/// A key's settings on the command line (every one optional; `none` clears a limit).
#[derive(Debug, clap::Args)]
struct Settings {
    /// Name.
    #[arg(long)]
    name: Option<String>,
    /// Models and routes the key may use, comma-separated (`all` for every one).
    #[arg(long)]
    models: Option<String>,
    /// The config's `[[guardrails]]` applied to the key's requests besides the model's and
    /// route's, comma-separated (`none` for none of its own).
    #[arg(long)]
    guardrails: Option<String>,
    /// Requests per minute (`none`: no limit).
    #[arg(long)]
    rpm: Option<String>,
    /// Tokens per minute (`none`: no limit).
    #[arg(long)]
    tpm: Option<String>,
    /// Requests in flight at once (`none`: no limit).
    #[arg(long)]
    max_concurrent: Option<String>,
    /// Budget in USD per period (`none`: no budget).
    #[arg(long)]
    budget_usd: Option<String>,
    /// Budget period: day, month or total.
    #[arg(long)]
    budget_period: Option<String>,
    /// Metadata: a JSON object.
    #[arg(long)]
    metadata: Option<String>,
    /// Expire after this long (`30d`, `12h`).
    #[arg(long)]
    expires_in: Option<String>,
}

fn limit(v: &str) -> anyhow::Result<Value> {
    if v == "none" {
        return Ok(Value::Null);
    }
    Ok(Value::from(v.parse::<u64>().with_context(|| {
        format!("`{v}` is not a positive integer (or `none`)")
    })?))
}

impl Settings {
    fn spec(&self) -> anyhow::Result<Map<String, Value>> {
        let mut m = Map::new();
        if let Some(n) = &self.name {
            m.insert("name".into(), Value::from(n.as_str()));
        }
        if let Some(models) = &self.models {
            let list: Vec<Value> = if models == "all" {
                Vec::new()
            } else {
                models
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Value::from)
                    .collect()
            };
            m.insert("models".into(), Value::Array(list));
        }
        if let Some(guardrails) = &self.guardrails {
            let list: Vec<Value> = guardrails
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "none")
                .map(Value::from)
                .collect();
            m.insert("guardrails".into(), Value::Array(list));
        }
        for (k, v) in [
            ("rpm", &self.rpm),
            ("tpm", &self.tpm),
            ("max_concurrent", &self.max_concurrent),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), limit(v)?);
            }
        }
        if let Some(b) = &self.budget_usd {
            let v = if b == "none" {
                Value::Null
            } else {
                Value::from(
                    b.parse::<f64>()
                        .with_context(|| format!("`{b}` is not an amount in USD"))?,
                )
            };
            m.insert("budget_usd".into(), v);
        }
        if let Some(p) = &self.budget_period {
            m.insert("budget_period".into(), Value::from(p.as_str()));
        }
        if let Some(meta) = &self.metadata {
            let v: Value = serde_json::from_str(meta).context("`--metadata` is not JSON")?;
            m.insert("metadata".into(), v);
        }
        if let Some(e) = &self.expires_in {
            m.insert("expires_in".into(), Value::from(e.as_str()));
        }
        Ok(m)
    }
}

fn spent_nano(v: &Value) -> u64 {
    (v.as_f64().unwrap_or(0.0) * 1e9).round() as u64
}

fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs `sluice keys ...`.
pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let config = super::offline_config(args.config)?;
    let ledger = super::open_ledger(&config)?;
    let known = |g: &str| config.guardrails.iter().any(|c| c.name == g);
    let now = sluice_store::unix_now_ms();
    super::runtime()?.block_on(async move {
        let mut out = std::io::stdout().lock();
        match args.command {
            KeysCommand::Create {
                settings: s,
                secret,
            } => {
                let mut spec = s.spec()?;
                if let Some(secret) = secret {
                    spec.insert("key".into(), Value::from(secret));
                }
                if s.name.is_none() {
                    bail!("a key needs a name: --name NAME");
                }
                let spec =
                    admin_keys::NewKeySpec::from_json(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
                spec.settings
                    .check_guardrails(known)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let (key, secret) = admin_keys::create(&ledger, &spec, now)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                writeln!(out, "created key `{}` ({})", key.name, key.id)?;
                writeln!(out, "{secret}")?;
                writeln!(
                    out,
                    "This secret is shown once: sluice keeps only its hash."
                )?;
            }
            KeysCommand::List { json } => {
                let keys = ledger.keys().await.context("cannot read the keys")?;
                let mut views = Vec::with_capacity(keys.len());
                for k in &keys {
                    let spent = admin_keys::logged_spend(&ledger, k, now).await;
                    views.push(admin_keys::key_json(k, spent, now));
                }
                if json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&views)?)?;
                } else {
                    let header = [
                        "ID", "NAME", "STATUS", "MODELS", "RPM", "TPM", "CONC", "BUDGET", "SPENT",
                        "KEY",
                    ];
                    let rows: Vec<Vec<String>> = views
                        .iter()
                        .map(|v| {
                            let models = v["models"]
                                .as_array()
                                .filter(|a| !a.is_empty())
                                .map_or("all".into(), |a| {
                                    a.iter().map(opt).collect::<Vec<_>>().join(",")
                                });
                            let budget = match v["budget_usd"].as_f64() {
                                Some(b) => format!("${b:.2}/{}", opt(&v["budget_period"])),
                                None => "-".into(),
                            };
                            vec![
                                opt(&v["id"]),
                                opt(&v["name"]),
                                opt(&v["status"]),
                                models,
                                opt(&v["rpm"]),
                                opt(&v["tpm"]),
                                opt(&v["max_concurrent"]),
                                budget,
                                format!("${}", admin_keys::usd(spent_nano(&v["spend_usd"]))),
                                opt(&v["hint"]),
                            ]
                        })
                        .collect();
                    super::spend::table(&mut out, &header, &rows)?;
                }
            }
            KeysCommand::Show { id } => {
                let k = admin_keys::find(&ledger, &id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let spent = admin_keys::logged_spend(&ledger, &k, now).await;
                let v = admin_keys::key_json(&k, spent, now);
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            }
            KeysCommand::Update { id, settings } => {
                let spec = admin_keys::KeySpec::from_json(settings.spec()?)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                spec.check_guardrails(known)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let k = admin_keys::update(&ledger, &id, &spec, now)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                writeln!(out, "updated key `{}` ({})", k.name, k.id)?;
            }
            KeysCommand::Revoke { id } => {
                let k = admin_keys::revoke(&ledger, &id, now)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                writeln!(out, "revoked key `{}` ({})", k.name, k.id)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
