//! The command line: `--name value` options, repeated `--target`s, and after `--` a command.

use std::net::SocketAddr;

/// One target: a name, where it listens, and the process to read memory from.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
}

#[derive(Debug, Default)]
pub struct Args {
    pub targets: Vec<Target>,
    options: Vec<(String, String)>,
    /// What follows `--`.
    pub command: Vec<String>,
}

impl Args {
    pub fn parse(argv: &[String]) -> Result<Self, String> {
        let mut out = Self::default();
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            if a == "--" {
                out.command = it.cloned().collect();
                break;
            }
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument `{a}`"))?;
            let value = it
                .next()
                .ok_or_else(|| format!("`--{name}` needs a value"))?;
            if name == "target" {
                out.targets.push(target(value)?);
            } else {
                out.options.push((name.to_string(), value.clone()));
            }
        }
        Ok(out)
    }

    /// The last value of `--name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `--name` parsed, or `default`.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("bad `--{name} {v}`")),
        }
    }

    /// A comma-separated list of numbers.
    pub fn list(&self, name: &str, default: &[usize]) -> Result<Vec<usize>, String> {
        match self.get(name) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .split(',')
                .map(|x| x.trim().parse().map_err(|_| format!("bad `--{name} {v}`")))
                .collect(),
        }
    }

    pub fn key(&self) -> &str {
        self.get("key").unwrap_or("sk-bench-1234")
    }

    pub fn model(&self) -> &str {
        self.get("model").unwrap_or("fake-model")
    }
}

/// `NAME=ADDR` or `NAME=ADDR@PID`.
fn target(spec: &str) -> Result<Target, String> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("target `{spec}`: NAME=ADDR[@PID]"))?;
    let (addr, pid) = match rest.split_once('@') {
        Some((a, p)) => (
            a,
            Some(p.parse().map_err(|_| format!("bad pid in `{spec}`"))?),
        ),
        None => (rest, None),
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("bad address in `{spec}`"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("target `{spec}`: loopback addresses only"));
    }
    Ok(Target {
        name: name.to_string(),
        addr,
        pid,
    })
}
