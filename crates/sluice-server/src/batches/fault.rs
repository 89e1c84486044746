//! A test hook that crashes the gateway at one chosen point of a batch, so that tests can
//! show what a crash there costs: with `SLUICE_FAULT_ABORT_AFTER_CHARGE=<line>` set (lines
//! numbered from 0), the process aborts (no destructor, flush or shutdown runs, as under
//! SIGKILL) once that line's spend record is durable and before its result is recorded.
//! Compiled only into debug builds (the tests run the debug binary): a release build
//! ignores the variable, so one left set in a production unit cannot crash-loop the
//! gateway. Either way the executor's start warns when the variable is set.

/// The variable that arms the hook.
const ABORT_AFTER_CHARGE: &str = "SLUICE_FAULT_ABORT_AFTER_CHARGE";

/// The line the hook is armed for, from the variable's value (spaces around it allowed).
fn parse(value: Option<&str>) -> Option<u64> {
    value?.trim().parse().ok()
}

/// Warns, once at the executor's start, when the variable is set.
pub fn announce() {
    let Ok(value) = std::env::var(ABORT_AFTER_CHARGE) else {
        return;
    };
    match (cfg!(debug_assertions), parse(Some(&value))) {
        (true, Some(line)) => tracing::warn!(
            line,
            "{ABORT_AFTER_CHARGE} is set: this (debug) build aborts after charging that batch line"
        ),
        (true, None) => {
            tracing::warn!(value, "{ABORT_AFTER_CHARGE} is not a line number: ignored")
        }
        (false, _) => tracing::warn!("{ABORT_AFTER_CHARGE} is set: ignored by a release build"),
    }
}

/// Aborts the process if the hook is armed for line `number` (debug builds only).
#[cfg(debug_assertions)]
pub fn after_charge(number: u64) {
    static ARMED: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| parse(std::env::var(ABORT_AFTER_CHARGE).ok().as_deref()));
    if *armed == Some(number) {
        eprintln!("{ABORT_AFTER_CHARGE}={number}: aborting after the line's charge");
        std::process::abort();
    }
}

/// Does nothing: release builds carry no fault hook.
#[cfg(not(debug_assertions))]
pub fn after_charge(_number: u64) {}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_line_number_arms_the_hook_and_anything_else_does_not() {
        assert_eq!(parse(Some("10")), Some(10));
        assert_eq!(parse(Some(" 10 \n")), Some(10));
        assert_eq!(parse(Some("ten")), None);
        assert_eq!(parse(None), None);
    }
}
