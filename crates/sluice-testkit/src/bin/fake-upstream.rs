//! `fake-upstream [--addr 127.0.0.1:PORT]`: runs a [`FakeUpstream`] with the
//! default behavior until Ctrl-C. Request recording is off, so it can serve
//! long benchmark runs. Default address: `127.0.0.1:18081`.

use std::net::SocketAddr;
use std::process::ExitCode;

use sluice_testkit::FakeUpstream;

const DEFAULT_ADDR: &str = "127.0.0.1:18081";
const USAGE: &str = "usage: fake-upstream [--addr 127.0.0.1:PORT]";

/// The address to bind, `Ok(None)` for `--help`, or a usage error.
fn parse_args() -> Result<Option<SocketAddr>, String> {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                addr = args
                    .next()
                    .ok_or_else(|| format!("--addr needs a value\n{USAGE}"))?;
            }
            "-h" | "--help" => return Ok(None),
            other => match other.strip_prefix("--addr=") {
                Some(v) => addr = v.to_owned(),
                None => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            },
        }
    }
    addr.parse()
        .map(Some)
        .map_err(|e| format!("invalid address {addr:?}: {e}\n{USAGE}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let fake = match FakeUpstream::start_on(addr).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-upstream: cannot bind {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    fake.set_recording(false);
    eprintln!("fake-upstream listening on {}", fake.base_url());
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("fake-upstream: cannot wait for Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "fake-upstream: shutting down after {} requests on {} connections",
        fake.request_count(),
        fake.connections_accepted()
    );
    fake.shutdown().await;
    ExitCode::SUCCESS
}
