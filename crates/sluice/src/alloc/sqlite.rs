//! SQLite's memory from mimalloc. SQLite (the spend log, the cache's disk tier, the files,
//! responses and routing stores) allocates with the C library's `malloc` unless told
//! otherwise, and glibc's arenas fragment under its mix: page-cache pages (about 4.2 KiB,
//! long-lived, at most 2,000 KiB a file: its default `cache_size`) among short-lived buffers
//! of every size (bound values, blobs read, cursors). In a 12-minute soak (BENCHMARKS.md, "The
//! 30-minute soak") SQLite's live heap stayed at 10.9 MiB from the second minute on
//! (heaptrack) while glibc's arena around it grew 0.1 MiB a minute and did not stop. mimalloc
//! keeps each size class in pages of its own and reuses them, as it does for the rest of the
//! gateway.
//!
//! SQLite takes its allocator only before it initialises (at the first connection), so
//! [`use_mimalloc`] runs first thing in `main`.

use libmimalloc_sys as mi;
use rusqlite::ffi;
use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

// SQLite's `sqlite3_mem_methods` contract: `xMalloc` and `xRealloc` get a size above zero,
// `xRealloc` and `xFree` a pointer `xMalloc` or `xRealloc` returned (never null for `xFree`),
// `xSize` such a pointer; allocations must be 8-byte aligned (mimalloc's are 16).

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    // SAFETY: `mi_malloc` takes any size and returns null when it cannot allocate, which
    // SQLite handles as out of memory.
    unsafe { mi::mi_malloc(usize::try_from(n).unwrap_or(0)) }
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    // SAFETY: SQLite frees only what `x_malloc` or `x_realloc` returned, once.
    unsafe { mi::mi_free(p) }
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: `p` came from `x_malloc` or `x_realloc` (SQLite's contract); on failure
    // `mi_realloc` returns null and leaves `p` allocated, as SQLite expects.
    unsafe { mi::mi_realloc(p, usize::try_from(n).unwrap_or(0)) }
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    // SAFETY: `p` is null or a live allocation of mimalloc's (SQLite's contract).
    let size = unsafe { mi::mi_usable_size(p) };
    c_int::try_from(size).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    // SAFETY: `mi_good_size` only computes a size class.
    let good = unsafe { mi::mi_good_size(usize::try_from(n).unwrap_or(0)) };
    c_int::try_from(good).unwrap_or(n)
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

/// Makes SQLite allocate from mimalloc; `false` when SQLite refused because it had already
/// initialised (it then stays on the C library's `malloc`). The first call decides; later
/// calls return its answer.
pub fn use_mimalloc() -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: `SQLITE_CONFIG_MALLOC` takes a pointer to a `sqlite3_mem_methods`, which
        // SQLite copies before returning; the functions it names are valid for the process.
        // Before SQLite initialises nothing else reads its configuration; after, it answers
        // `SQLITE_MISUSE` and changes nothing.
        let rc =
            unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, std::ptr::from_ref(&methods)) };
        rc == ffi::SQLITE_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_allocates_from_mimalloc() {
        // Nothing in this test process opened SQLite before.
        assert!(use_mimalloc());
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(100000)), (randomblob(300));",
        )
        .unwrap();
        let n: i64 = conn
            .query_row("SELECT sum(length(x)) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 100_300);
        // SAFETY: a plain allocation and its free through SQLite's own API.
        unsafe {
            let p = ffi::sqlite3_malloc(1000);
            assert!(!p.is_null());
            assert!(
                mi::mi_is_in_heap_region(p),
                "SQLite allocated outside mimalloc"
            );
            assert!(ffi::sqlite3_msize(p) >= 1000);
            ffi::sqlite3_free(p);
        }
        assert!(use_mimalloc(), "later calls give the first answer");
    }
}
