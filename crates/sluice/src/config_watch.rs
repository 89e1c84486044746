//! `[server] watch_config_ms`: `sluice serve` reads its config file at that interval and
//! reloads it when its content changed, as SIGHUP would. Content, not timestamps: a
//! Kubernetes ConfigMap volume updates its files by swapping a symlink to a new directory
//! (the file's own mtime can stay), and an editor's save that changes nothing reloads
//! nothing. A change is acted on once two reads a tick apart agree: a save that truncates the
//! file and then writes it is read half-written now and then (an empty file is a config
//! without routes), and one tick later the same. A file that cannot be read for a moment (the
//! swap) is read again at the next tick; a changed file the reload refuses is not tried
//! again until it changes once more (the refusal is logged and counted once).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

/// What the file held when last read: a hash of its bytes.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// What the watcher knows between reads: the content last acted on (or started with), and a
/// different content read at the previous tick, waiting for a second read to agree.
#[derive(Debug)]
struct Seen {
    applied: Option<u64>,
    pending: Option<u64>,
}

impl Seen {
    /// Whether content `now`, read at this tick, is a change to act on.
    fn read(&mut self, now: u64) -> bool {
        if self.applied == Some(now) {
            self.pending = None;
            return false;
        }
        if self.pending.replace(now) != Some(now) {
            return false;
        }
        self.applied = Some(now);
        self.pending = None;
        true
    }
}

/// Watches `path` every `every` on the current runtime, calling `reload` when the file's
/// content, read the same at two ticks in a row, differs from `baseline` (the fingerprint of
/// the text the running config was loaded from) or from what it was when last acted on. The
/// baseline is the loaded text, not a first read of the watcher's own: the task may first run
/// after the file has already changed, and that change would then never be seen.
pub fn spawn(
    path: PathBuf,
    every: Duration,
    baseline: Option<u64>,
    reload: impl Fn() + Send + 'static,
) {
    tokio::spawn(async move {
        let mut seen = Seen {
            applied: baseline,
            pending: None,
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = match tokio::fs::read(&path).await {
                Ok(bytes) => fingerprint(&bytes),
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "config file not readable now; reading it again at the next tick");
                    continue;
                }
            };
            if seen.read(now) {
                tracing::info!(path = %path.display(), "config file changed: reloading");
                reload();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    #[test]
    fn a_change_counts_once_two_reads_agree_and_a_half_written_save_does_not() {
        let (a, b, empty) = (fingerprint(b"a"), fingerprint(b"b"), fingerprint(b""));
        let mut seen = Seen {
            applied: Some(a),
            pending: None,
        };
        assert!(!seen.read(a), "the content it started with");
        assert!(!seen.read(empty), "truncated by a save, read once");
        assert!(!seen.read(b), "written: read once");
        assert!(seen.read(b), "read the same a tick later");
        assert!(!seen.read(b), "acted on once");
        assert!(!seen.read(empty), "the same content saved again: truncated");
        assert!(!seen.read(b), "and written: what was acted on");
        assert!(!seen.read(empty), "a pending change");
        assert!(!seen.read(b), "back before it was read twice");
        assert!(!seen.read(b));
        let mut unread = Seen {
            applied: None,
            pending: None,
        };
        assert!(!unread.read(a), "a file missing at the start, read once");
        assert!(unread.read(a), "and twice");
    }

    /// Writes `content` to `path` the way a ConfigMap update or an atomic save does: into a
    /// file beside it, renamed over it.
    fn swap(path: &std::path::Path, content: &str) {
        let next = path.with_extension("next");
        std::fs::write(&next, content).unwrap();
        std::fs::rename(&next, path).unwrap();
    }

    /// Watches `path` every 20 ms from a config loaded from `loaded`, counting its reloads.
    fn watch_counting(path: &std::path::Path, loaded: &[u8]) -> Arc<AtomicUsize> {
        let reloads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reloads);
        spawn(
            path.to_path_buf(),
            Duration::from_millis(20),
            Some(fingerprint(loaded)),
            move || {
                counted.fetch_add(1, SeqCst);
            },
        );
        reloads
    }

    /// Twenty ticks or more of the watcher's 20 ms.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    #[tokio::test]
    async fn a_change_of_content_reloads_once_and_an_unchanged_rewrite_does_not() {
        let dir = std::env::temp_dir().join(format!("sluice-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        std::fs::write(&path, "a").unwrap();
        let reloads = watch_counting(&path, b"a");
        settle().await;
        assert_eq!(
            reloads.load(SeqCst),
            0,
            "the starting content is the baseline"
        );
        swap(&path, "b");
        settle().await;
        assert_eq!(reloads.load(SeqCst), 1);
        swap(&path, "b");
        settle().await;
        assert_eq!(reloads.load(SeqCst), 1, "the same content again");
        std::fs::remove_file(&path).unwrap();
        settle().await;
        assert_eq!(reloads.load(SeqCst), 1, "a missing file is skipped");
        swap(&path, "b");
        settle().await;
        assert_eq!(reloads.load(SeqCst), 1, "back as it was");
        swap(&path, "c");
        settle().await;
        assert_eq!(reloads.load(SeqCst), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_change_made_before_the_watcher_first_reads_is_still_a_change() {
        let dir = std::env::temp_dir().join(format!("sluice-watch-early-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        // The gateway loaded "a"; the file became "b" before the watcher's task ever ran.
        swap(&path, "b");
        let reloads = watch_counting(&path, b"a");
        settle().await;
        assert_eq!(reloads.load(SeqCst), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
