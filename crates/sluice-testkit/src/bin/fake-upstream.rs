//! `fake-upstream [--addr 127.0.0.1:PORT] [--fail-rate R]`: runs a [`FakeUpstream`] with
//! the default behavior until Ctrl-C. Request recording is off, so it can serve long
//! benchmark runs. Default address: `127.0.0.1:18081`. With `--fail-rate R`, a share R of
//! requests fails, in turn with a 500, a connection reset, and a hang (fault injection).

use std::net::SocketAddr;
use std::process::ExitCode;

use sluice_testkit::FakeUpstream;

const DEFAULT_ADDR: &str = "127.0.0.1:18081";
const USAGE: &str = "usage: fake-upstream [--addr 127.0.0.1:PORT] [--fail-rate 0.5]";

/// The address to bind and the failure rate, `Ok(None)` for `--help`, or a usage error.
fn parse_args() -> Result<Option<(SocketAddr, f64)>, String> {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut fail_rate = 0.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                addr = args
                    .next()
                    .ok_or_else(|| format!("--addr needs a value\n{USAGE}"))?;
            }
            "--fail-rate" => {
                fail_rate = args
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("--fail-rate needs a number from 0 to 1\n{USAGE}"))?;
            }
            "-h" | "--help" => return Ok(None),
            other => match other.strip_prefix("--addr=") {
                Some(v) => addr = v.to_owned(),
                None => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            },
        }
    }
    addr.parse()
        .map(|a| Some((a, fail_rate)))
        .map_err(|e| format!("invalid address {addr:?}: {e}\n{USAGE}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (addr, fail_rate) = match parse_args() {
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
    if fail_rate > 0.0 {
        use sluice_testkit::Behavior;
        fake.set_chaos(
            fail_rate,
            vec![
                Behavior::new().with_status(500),
                Behavior::new().with_reset(),
                Behavior::new().with_hang(),
            ],
        );
    }
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
