//! Latency at one connection and time to first token on fresh connections, every target
//! measured in turn within each round, added latency taken against the direct leg of the
//! same round.

use crate::args::{Args, Target};
use sluice_testkit::load::{chat_body, nearest_rank, post_request, Conn};
use std::time::{Duration, Instant};

const PATH: &str = "/v1/chat/completions";
const TIMEOUT: Duration = Duration::from_secs(30);

/// One target's window in one round: latencies in µs (sorted), errors.
#[derive(Debug, Default, Clone)]
struct Window {
    latency: Vec<f64>,
    ttft: Vec<f64>,
    errors: usize,
}

impl Window {
    fn pct(v: &[f64], p: f64) -> f64 {
        nearest_rank(v, p).unwrap_or(f64::NAN)
    }
}

pub fn run(args: &Args) -> Result<(), String> {
    let targets = &args.targets;
    if targets.len() < 2 {
        return Err("latency needs the direct target first, then gateways".into());
    }
    let rounds: usize = args.num("rounds", 5)?;
    let window = Duration::from_secs_f64(args.num("window", 3.0)?);
    let ttft_samples: usize = args.num("ttft-samples", 1000)?;
    let reference = args.get("reference");
    let mut all: Vec<Vec<Window>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            let key = (i > 0).then(|| args.key());
            let mut w = keep_alive(t, key, args.model(), window)?;
            fresh_streams(t, key, args.model(), ttft_samples, &mut w);
            eprintln!(
                "round {} {:>10}: {} requests p50 {:.0} µs p99 {:.0} µs; TTFT p50 {:.0} p99 {:.0} µs; {} errors",
                round + 1,
                t.name,
                w.latency.len(),
                Window::pct(&w.latency, 50.0),
                Window::pct(&w.latency, 99.0),
                Window::pct(&w.ttft, 50.0),
                Window::pct(&w.ttft, 99.0),
                w.errors
            );
            all[i].push(w);
        }
    }
    report(targets, &all, reference);
    Ok(())
}

/// Requests one after another on one keep-alive connection for `window` (after a few
/// untimed ones that open the gateway's upstream connection).
fn keep_alive(
    t: &Target,
    key: Option<&str>,
    model: &str,
    window: Duration,
) -> Result<Window, String> {
    let request = post_request(t.addr, PATH, key, &chat_body(model, false));
    let open = || Conn::open(t.addr, TIMEOUT).map_err(|e| format!("{}: {e}", t.name));
    let mut conn = open()?;
    let mut w = Window::default();
    for _ in 0..20 {
        let _ = conn.exchange(&request);
    }
    let end = Instant::now() + window;
    while Instant::now() < end {
        if conn.closed {
            conn = open()?;
        }
        let start = Instant::now();
        match conn.exchange(&request) {
            Ok(a) if a.ok() => w.latency.push(micros(a.end - start)),
            Ok(_) => w.errors += 1,
            Err(_) => {
                w.errors += 1;
                conn = open()?;
            }
        }
    }
    w.latency.sort_by(f64::total_cmp);
    Ok(w)
}

/// `samples` streamed requests, each on a connection of its own, timed from the connect
/// to the first event.
fn fresh_streams(t: &Target, key: Option<&str>, model: &str, samples: usize, w: &mut Window) {
    let request = post_request(t.addr, PATH, key, &chat_body(model, true));
    for _ in 0..samples {
        let start = Instant::now();
        let answer = Conn::open(t.addr, TIMEOUT).and_then(|mut c| c.exchange(&request));
        match answer {
            Ok(a) if a.ok() && a.first_event.is_some() => {
                let first = a.first_event.unwrap_or(a.end);
                w.ttft.push(micros(first - start));
            }
            _ => w.errors += 1,
        }
    }
    w.ttft.sort_by(f64::total_cmp);
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One column: per round, a figure of a target's window.
fn per_round(ws: &[Window], f: impl Fn(&Window) -> f64) -> Vec<f64> {
    ws.iter().map(f).collect()
}

fn report(targets: &[Target], all: &[Vec<Window>], reference: Option<&str>) {
    let direct = &all[0];
    let reference = reference.and_then(|r| targets.iter().position(|t| t.name == r));
    println!("| target | requests | p50 µs | p99 µs | added p50 µs | added p99 µs | p99 / {} | TTFT p50 µs | TTFT p99 µs | added TTFT p50 µs | added TTFT p99 µs | errors |",
        reference.map_or("-", |r| targets[r].name.as_str()));
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (i, t) in targets.iter().enumerate() {
        let ws = &all[i];
        let pick = |p: f64, ttft: bool| {
            move |w: &Window| Window::pct(if ttft { &w.ttft } else { &w.latency }, p)
        };
        let added = |p: f64, ttft: bool| -> String {
            if i == 0 {
                return String::new();
            }
            let mine = per_round(ws, pick(p, ttft));
            let base = per_round(direct, pick(p, ttft));
            let d: Vec<f64> = mine.iter().zip(&base).map(|(a, b)| a - b).collect();
            format!("{:+.0}", median(d))
        };
        let ratio = match reference {
            Some(r) if r != i && i != 0 => {
                let mine = per_round(ws, pick(99.0, false));
                let theirs = per_round(&all[r], pick(99.0, false));
                format!(
                    "{:.2}",
                    median(mine.iter().zip(&theirs).map(|(a, b)| a / b).collect())
                )
            }
            _ => String::new(),
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} |",
            t.name,
            ws.iter().map(|w| w.latency.len()).sum::<usize>(),
            median(per_round(ws, pick(50.0, false))),
            median(per_round(ws, pick(99.0, false))),
            added(50.0, false),
            added(99.0, false),
            ratio,
            median(per_round(ws, pick(50.0, true))),
            median(per_round(ws, pick(99.0, true))),
            added(50.0, true),
            added(99.0, true),
            ws.iter().map(|w| w.errors).sum::<usize>(),
        );
    }
    println!();
    println!("Per round (µs): p99 at c=1, then TTFT p99:");
    for (i, t) in targets.iter().enumerate() {
        let p99: Vec<String> = per_round(&all[i], |w| Window::pct(&w.latency, 99.0))
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect();
        let ttft: Vec<String> = per_round(&all[i], |w| Window::pct(&w.ttft, 99.0))
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect();
        println!("- {}: {} | TTFT {}", t.name, p99.join(" "), ttft.join(" "));
    }
}
