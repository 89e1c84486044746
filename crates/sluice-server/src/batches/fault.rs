//! A test hook that crashes the gateway at one chosen point of a batch, so that tests can
//! show what a crash there costs: with `SLUICE_FAULT_ABORT_AFTER_CHARGE=<line>` set (lines
//! numbered from 0), the process aborts (no destructor, flush or shutdown runs, as under
//! SIGKILL) once that line's spend record is durable and before its result is recorded.
//! Unset (always, in production), it does nothing.

use std::sync::OnceLock;

/// The variable that arms the hook.
const ABORT_AFTER_CHARGE: &str = "SLUICE_FAULT_ABORT_AFTER_CHARGE";

/// Aborts the process if the hook is armed for line `number`.
pub fn after_charge(number: u64) {
    static ARMED: OnceLock<Option<u64>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var(ABORT_AFTER_CHARGE)
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *armed == Some(number) {
        eprintln!("{ABORT_AFTER_CHARGE}={number}: aborting after the line's charge");
        std::process::abort();
    }
}
