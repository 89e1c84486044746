//! A deterministic mutation fuzzer for tests on the stable toolchain.
//!
//! [`run`] feeds a check every seed of a target's committed corpus (`fuzz/corpus/{target}/`
//! at the workspace root), then inputs made by mutating them (bit flips, JSON and SSE tokens
//! inserted, ranges deleted, repeated or spliced from another seed, truncation) and some
//! random bytes. Every input is a pure function of [`seed`] and its index, so a failure
//! found once is found again. The check runs on a thread of its own, each input under
//! `catch_unwind`: a panic, or an input still running after [`hang_bound`], fails the test
//! with the input written to `target/fuzz-failures/` (and printed, escaped).
//!
//! `SLUICE_FUZZ_ITERS` sets the number of mutated inputs per target (the tests' defaults
//! are a few seconds each), `SLUICE_FUZZ_SEED` the seed, `SLUICE_FUZZ_HANG_MS` the bound.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A small deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// Cut points that split `len` bytes into pieces (sorted, each in `1..len`): how a
    /// stream's reads may fall.
    pub fn splits(&mut self, len: usize) -> Vec<usize> {
        if len < 2 {
            return Vec::new();
        }
        let mut cuts: Vec<usize> = (0..self.below(8))
            .map(|_| 1 + self.below(len - 1))
            .collect();
        if self.one_in(8) {
            // Byte by byte, for short inputs.
            cuts = (1..len.min(512)).collect();
        }
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }
}

/// Tokens worth inserting: JSON's structure and edge values, SSE and multipart framing,
/// broken UTF-8.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\\udc00\\ud800",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"-0",
    b"1e999",
    b"-1e999",
    b"0.0000001",
    b"18446744073709551616",
    b"9223372036854775807",
    b"4294967296",
    b"\"\"",
    b"{}",
    b"[]",
    b"\\u0000",
    b"\x00",
    b"\r\n\r\n",
    b"\n\n",
    b"\r\n",
    b"\n",
    b"data: ",
    b"data:",
    b"event: ",
    b"event: error\n",
    b"data: [DONE]\n\n",
    b"--",
    b"\r\n--",
    b"Content-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n",
    b"\xc3",
    b"\xf0\x9f",
    b"\xff\xfe",
    b"\xe2\x80\xa8",
    b"\"type\":",
    b"\"model\":",
    b"\"stream\":true",
    b"\"content\":",
    b"\"role\":\"tool\"",
    b"\"index\":",
    b"\"usage\":",
    b"\"error\":",
    b"\"tool_calls\":",
    b"\"messages\":",
    b"\"input\":",
    b"[[providers]]\n",
    b"[[models]]\n",
    b"[[routes]]\n",
    b" = ",
    b"'''",
    b"\"\"\"",
];

/// One to four mutations of `input`; `others` are spliced from.
pub fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut out, others);
    }
    out
}

fn mutate_once(rng: &mut Rng, out: &mut Vec<u8>, others: &[Vec<u8>]) {
    let len = out.len();
    let at = rng.below(len + 1);
    match rng.below(12) {
        10 | 11 => replace_value(rng, out),
        0 if len > 0 => {
            let i = rng.below(len);
            out[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            out[i] = [0, 0xff, 0x7f, 0x80, b'"', b'{', b'}', b'\\', b'\n', b'0'][rng.below(10)];
        }
        2 | 3 => {
            let token = TOKENS[rng.below(TOKENS.len())];
            out.splice(at..at, token.iter().copied());
        }
        4 if len > 0 => {
            let end = (at + 1 + rng.below(64)).min(len);
            out.drain(at.min(end)..end);
        }
        5 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(256)).min(len);
            let copy = out[start..end].to_vec();
            for _ in 0..1 + rng.below(3) {
                out.splice(at..at, copy.iter().copied());
            }
        }
        6 if !others.is_empty() => {
            let other = &others[rng.below(others.len())];
            let from = rng.below(other.len() + 1);
            out.truncate(at);
            out.extend_from_slice(&other[from..]);
        }
        7 => out.truncate(at),
        8 => {
            // Deep nesting.
            let open = if rng.one_in(2) { b'[' } else { b'{' };
            let depth = 1 + rng.below(2000);
            out.splice(at..at, std::iter::repeat_n(open, depth));
        }
        _ => {
            let random: Vec<u8> = (0..1 + rng.below(16))
                .map(|_| rng.next_u64() as u8)
                .collect();
            out.splice(at..at, random);
        }
    }
}

/// Values a JSON field may be given instead of its own: every kind, and the edges.
const VALUES: &[&[u8]] = &[
    b"null",
    b"true",
    b"0",
    b"-1",
    b"1.5",
    b"1e999",
    b"18446744073709551616",
    b"\"\"",
    b"\"x\"",
    b"\"\\ud800\"",
    b"[]",
    b"{}",
    b"[null]",
    b"[{}]",
    b"[\"x\"]",
    b"{\"type\":\"x\"}",
    b"{\"type\":\"text\",\"text\":1}",
    b"[[[[[[[[[[]]]]]]]]]]",
];

/// Replaces the value after a random `:` (up to the next `,`, `}` or `]`, or the whole
/// nested value when it opens one) with one of [`VALUES`]: the wrong kinds of value in the
/// right places.
fn replace_value(rng: &mut Rng, out: &mut Vec<u8>) {
    let colons: Vec<usize> = memchr_all(b':', out);
    if colons.is_empty() {
        return;
    }
    let start = colons[rng.below(colons.len())] + 1;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut end = start;
    while end < out.len() {
        let b = out[end];
        if in_string {
            match b {
                b'\\' => end += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth == 0 => break,
                b'}' | b']' => depth -= 1,
                b',' if depth == 0 => break,
                _ => {}
            }
        }
        end += 1;
    }
    let end = end.min(out.len());
    out.splice(start..end, VALUES[rng.below(VALUES.len())].iter().copied());
}

fn memchr_all(needle: u8, hay: &[u8]) -> Vec<usize> {
    hay.iter()
        .enumerate()
        .filter(|&(_, &b)| b == needle)
        .map(|(i, _)| i)
        .collect()
}

/// The seeds of `target` (`fuzz/corpus/{target}/`), in file-name order.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = workspace().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The mutated inputs per target: `SLUICE_FUZZ_ITERS`, else `default`.
pub fn iterations(default: usize) -> usize {
    env_number("SLUICE_FUZZ_ITERS").map_or(default, |n| n as usize)
}

/// The run's seed: `SLUICE_FUZZ_SEED`, else a fixed one.
pub fn seed() -> u64 {
    env_number("SLUICE_FUZZ_SEED").unwrap_or(0x05EE_D0F5_11CE)
}

/// How long one input may run before it counts as a hang: `SLUICE_FUZZ_HANG_MS`, else 10 s
/// (far above any input's time in an unoptimised build).
pub fn hang_bound() -> Duration {
    Duration::from_millis(env_number("SLUICE_FUZZ_HANG_MS").unwrap_or(10_000))
}

/// The inputs of a run: the seeds as they are, then `iterations` mutations (one in twenty
/// random bytes instead).
fn input(rng: &mut Rng, seeds: &[Vec<u8>], i: usize) -> Vec<u8> {
    if i < seeds.len() {
        return seeds[i].clone();
    }
    if rng.one_in(20) {
        return (0..rng.below(256)).map(|_| rng.next_u64() as u8).collect();
    }
    let base = &seeds[rng.below(seeds.len())];
    mutate(rng, base, seeds)
}

/// Where the check is.
struct Progress {
    done: AtomicUsize,
    current: Mutex<Vec<u8>>,
    failure: Mutex<Option<String>>,
}

/// Runs `check` over `target`'s seeds and [`iterations`]`(default_iters)` mutations of
/// them; `check` gets the input and a generator for choices of its own (how to split a
/// stream). Panics, naming the input, when `check` panics or runs past [`hang_bound`].
pub fn run<F>(target: &str, default_iters: usize, check: F)
where
    F: FnMut(&[u8], &mut Rng) + Send + 'static,
{
    let seeds = corpus(target);
    let iters = iterations(default_iters);
    run_on(target, seeds, iters, hang_bound(), check);
}

/// [`run`] over given seeds, with a given bound.
fn run_on<F>(target: &str, seeds: Vec<Vec<u8>>, iters: usize, bound: Duration, check: F)
where
    F: FnMut(&[u8], &mut Rng) + Send + 'static,
{
    let total = seeds.len() + iters;
    let progress = Arc::new(Progress {
        done: AtomicUsize::new(0),
        current: Mutex::new(Vec::new()),
        failure: Mutex::new(None),
    });
    let worker = {
        let progress = Arc::clone(&progress);
        let mut check = check;
        let run_seed = seed() ^ fnv(target.as_bytes());
        std::thread::spawn(move || {
            let mut rng = Rng::new(run_seed);
            for i in 0..total {
                let data = input(&mut rng, &seeds, i);
                let mut own = Rng::new(rng.next_u64());
                *lock(&progress.current) = data.clone();
                let outcome = catch_unwind(AssertUnwindSafe(|| check(&data, &mut own)));
                if let Err(panic) = outcome {
                    *lock(&progress.failure) = Some(panic_message(&panic));
                    return;
                }
                progress.done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    watch(target, total, bound, &progress, worker);
}

/// Waits for the worker, failing on a panic or a hang.
fn watch(
    target: &str,
    total: usize,
    bound: Duration,
    progress: &Progress,
    worker: std::thread::JoinHandle<()>,
) {
    let mut last = (0, std::time::Instant::now());
    loop {
        if worker.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        let done = progress.done.load(Ordering::SeqCst);
        if done != last.0 {
            last = (done, std::time::Instant::now());
        } else if last.1.elapsed() > bound {
            let input = lock(&progress.current).clone();
            fail(
                target,
                "hang",
                &format!("still running after {bound:?}"),
                &input,
            );
        }
    }
    if let Some(message) = lock(&progress.failure).take() {
        let input = lock(&progress.current).clone();
        fail(target, "panic", &message, &input);
    }
    assert_eq!(progress.done.load(Ordering::SeqCst), total, "{target}");
}

fn fail(target: &str, what: &str, message: &str, input: &[u8]) -> ! {
    let dir = workspace().join("target/fuzz-failures");
    let file = dir.join(format!("{target}-{what}-{:016x}.bin", fnv(input)));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, input))
        .map_or_else(
            |e| format!("not saved: {e}"),
            |()| file.display().to_string(),
        );
    panic!(
        "fuzz target {target}: {what}: {message}\ninput ({saved}):\n{}",
        input.escape_ascii()
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// FNV-1a: a target's name into its seed, an input into its file name.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_a_function_of_the_seed() {
        let seeds = vec![b"{\"model\":\"m\"}".to_vec(), b"data: x\n\n".to_vec()];
        let a: Vec<_> = (0..200)
            .scan(Rng::new(7), |r, i| Some(input(r, &seeds, i)))
            .collect();
        let b: Vec<_> = (0..200)
            .scan(Rng::new(7), |r, i| Some(input(r, &seeds, i)))
            .collect();
        assert_eq!(a, b);
        assert_eq!(a[0], seeds[0], "the seeds come first, as they are");
        assert!(a.iter().skip(2).any(|x| x != &seeds[0] && x != &seeds[1]));
    }

    fn seeds() -> Vec<Vec<u8>> {
        vec![b"abc".to_vec(), b"{\"k\":1}".to_vec()]
    }

    #[test]
    fn a_clean_run_sees_every_input() {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        run_on("t", seeds(), 50, Duration::from_secs(10), move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(seen.load(Ordering::SeqCst), 52);
    }

    #[test]
    #[should_panic(expected = "fuzz target t: panic: found")]
    fn a_panicking_check_fails_the_run() {
        run_on("t", seeds(), 500, Duration::from_secs(10), |input, _| {
            assert!(!input.starts_with(b"{"), "found");
        });
    }

    #[test]
    #[should_panic(expected = "fuzz target t: hang")]
    fn a_check_that_never_returns_fails_the_run() {
        run_on("t", seeds(), 10, Duration::from_millis(300), |input, _| {
            if input == b"abc" {
                std::thread::sleep(Duration::from_secs(3600));
            }
        });
    }

    #[test]
    fn splits_fall_inside_the_input() {
        let mut rng = Rng::new(1);
        for len in 0..50 {
            for cut in rng.splits(len) {
                assert!(cut > 0 && cut < len);
            }
        }
    }
}
