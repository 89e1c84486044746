//! The default memory budget: a share of the machine's memory, from `/proc/meminfo` and the
//! cgroup's limit.

/// Share of the machine's memory [`default_memory_budget`] gives the pool, in percent.
pub const DEFAULT_BUDGET_PERCENT: u64 = 50;

/// [`default_memory_budget`] when the machine's memory cannot be read: 8 GiB.
pub const FALLBACK_MEMORY_BUDGET: u64 = 8 << 30;

/// [`DEFAULT_BUDGET_PERCENT`] of the machine's memory: `MemTotal` from `/proc/meminfo`, lowered
/// to the cgroup's memory limit when one is set (containers); [`FALLBACK_MEMORY_BUDGET`] when
/// neither can be read (including off Linux).
pub fn default_memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total(&text));
    let limit = cgroup_memory_limit();
    let memory = match (total, limit) {
        (Some(total), Some(limit)) => Some(total.min(limit)),
        (total, limit) => total.or(limit),
    };
    memory.map_or(FALLBACK_MEMORY_BUDGET, |bytes| {
        bytes / 100 * DEFAULT_BUDGET_PERCENT
    })
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    let scale = match words.next() {
        Some("kB") | Some("KB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(scale)
}

fn cgroup_memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .filter_map(|text| text.trim().parse::<u64>().ok())
    // cgroup v1 reports "no limit" as a huge page-rounded number.
    .find(|&bytes| bytes < (1 << 62))
}
