//! `[server] watch_config_ms`: `sluice serve` reads its config file at that interval and
//! reloads it when its content changed, as SIGHUP would. Content, not timestamps: a
//! Kubernetes ConfigMap volume updates its files by swapping a symlink to a new directory
//! (the file's own mtime can stay), and an editor's save that changes nothing reloads
//! nothing. A file that cannot be read for a moment (the swap, a half-written save) is
//! read again at the next tick; a changed file the reload refuses is not tried again until
//! it changes once more (the refusal is logged and counted once).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

/// What the file held when last read: a hash of its bytes.
fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Watches `path` every `every` on the current runtime, calling `reload` when the file's
/// content differs from what it was at the previous successful read (the first read sets
/// the baseline: the config the gateway started with was read just before).
pub fn spawn(path: PathBuf, every: Duration, reload: impl Fn() + Send + 'static) {
    tokio::spawn(async move {
        let mut seen = tokio::fs::read(&path).await.ok().map(|b| fingerprint(&b));
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
            if seen.replace(now) != Some(now) {
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

    /// Ten ticks or more of the watcher's 20 ms.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    #[tokio::test]
    async fn a_change_of_content_reloads_once_and_an_unchanged_rewrite_does_not() {
        let dir = std::env::temp_dir().join(format!("sluice-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        std::fs::write(&path, "a").unwrap();
        let reloads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reloads);
        spawn(path.clone(), Duration::from_millis(20), move || {
            counted.fetch_add(1, SeqCst);
        });
        settle().await;
        assert_eq!(
            reloads.load(SeqCst),
            0,
            "the starting content is the baseline"
        );
        std::fs::write(&path, "b").unwrap();
        settle().await;
        assert_eq!(reloads.load(SeqCst), 1);
        std::fs::write(&path, "b").unwrap();
        settle().await;
        assert_eq!(reloads.load(SeqCst), 1, "the same content again");
        std::fs::remove_file(&path).unwrap();
        settle().await;
        assert_eq!(reloads.load(SeqCst), 1, "a missing file is skipped");
        std::fs::write(&path, "b").unwrap();
        settle().await;
        assert_eq!(reloads.load(SeqCst), 1, "back as it was");
        std::fs::write(&path, "c").unwrap();
        settle().await;
        assert_eq!(reloads.load(SeqCst), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
