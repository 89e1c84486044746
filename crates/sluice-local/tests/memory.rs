//! Unloading gives memory back: on mimalloc (as the `sluice` binary runs), memory freed and
//! then collected by [`return_freed_memory`] leaves resident memory at once, where mimalloc
//! alone would hold it for its purge delay.

use sluice_local::memory::return_freed_memory;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident bytes of this process (`/proc/self/statm`, Linux).
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn freed_model_memory_leaves_the_process_at_once() {
    let Some(before) = resident() else { return };
    // 256 MiB in the sizes a model's tensors and caches come in, every page touched.
    let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8 | 1; 4 << 20]).collect();
    let held = resident().unwrap();
    assert!(held > before + (200 << 20), "the blocks are resident");
    drop(blocks);
    return_freed_memory();
    let after = resident().unwrap();
    assert!(
        after < before + (64 << 20),
        "{} MiB still resident after collecting ({} MiB before, {} MiB held)",
        after >> 20,
        before >> 20,
        held >> 20
    );
}
