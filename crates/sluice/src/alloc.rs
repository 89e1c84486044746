//! The allocator: mimalloc, without transparent huge pages, committing its arenas as they are
//! used, and handing its free memory back when a burst of connections is over.
//!
//! mimalloc asks the kernel for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), so on a
//! kernel whose transparent huge pages are `madvise` or `always` the gateway's memory grows
//! and stays resident 2 MiB at a time: 22 MiB at idle instead of 15, and a 2 MiB page holding
//! one live buffer cannot go back. [`init`] turns huge pages off for the process
//! (`PR_SET_THP_DISABLE`, what mimalloc itself does with `MIMALLOC_ALLOW_THP=0`). And mimalloc
//! purges the pages it freed only when the thread that freed them allocates again: a worker
//! left idle after a burst keeps them. [`release`] is the server's hand-back after a burst
//! (`sluice_server::trim`), `mi_collect(true)` on the worker's thread.

// Unsafe: FFI calls (`prctl`, `getenv`, `mi_option_set`, `mi_collect`, `malloc_trim`), and a constructor
// placed in `.init_array`.
#![allow(unsafe_code)]

use sluice_server::trim::Reach;
use std::ffi::{c_char, c_int, c_ulong};

extern "C" {
    fn prctl(option: c_int, ...) -> c_int;
    fn getenv(name: *const c_char) -> *const c_char;
}

/// `PR_SET_THP_DISABLE` of `<linux/prctl.h>`.
const PR_SET_THP_DISABLE: c_int = 41;

/// `mi_option_arena_eager_commit` of mimalloc's `mi_option_t` (`mimalloc.h`, v2 and v3).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Turns mimalloc's eager commit of its arenas off, unless `MIMALLOC_ARENA_EAGER_COMMIT`
/// says otherwise: on Linux it leaves 3.6 MiB more resident at idle (16.7 MiB against 13.1
/// on a release build that has served nothing). mimalloc reserves its first arena when it
/// initialises, in its own constructor (priority 101), before `main`: so this runs as a
/// constructor of priority 100, before it. It allocates nothing (C's `getenv`).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00100"]
static BEFORE_MIMALLOC: extern "C" fn() = lazy_commit;

extern "C" fn lazy_commit() {
    // SAFETY: `getenv` reads the environment with a NUL-terminated name; nothing else runs
    // yet. `mi_option_set` takes an option number and a value, no pointers, and only
    // writes mimalloc's static table of options.
    unsafe {
        if getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

/// Turns transparent huge pages off for this process (memory already in huge pages stays;
/// everything faulted from now on comes in 4 KiB pages). Call first thing.
pub fn init() {
    // SAFETY: prctl with PR_SET_THP_DISABLE reads only its integer arguments and sets a flag
    // of the process's memory map; a kernel without it answers EINVAL, which is ignored.
    let _ = unsafe {
        prctl(
            PR_SET_THP_DISABLE,
            1 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    fn malloc_trim(pad: usize) -> c_int;
}

/// Hands the memory mimalloc holds free back to the OS: this thread's heap and every delayed
/// purge; with [`Reach::Process`], then the C allocator's (glibc's, which SQLite and other C
/// code allocate from: every arena). A walk of the heaps: called once a burst is over or a
/// worker went idle, never per request.
pub fn release(reach: Reach) {
    // SAFETY: `mi_collect` takes no pointers and touches only mimalloc's own bookkeeping; it
    // is safe to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
    // SAFETY: `malloc_trim` takes an integer and only walks glibc's own arenas under their
    // locks; it is safe from any thread.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if reach == Reach::Process {
        unsafe {
            malloc_trim(0);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = reach;
}
