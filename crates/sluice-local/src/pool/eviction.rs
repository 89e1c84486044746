//! [`plan_eviction`]: which idle models to unload so that a new one fits in the budget.

use std::time::Instant;

/// A model holding part of the budget, as [`plan_eviction`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// Bytes it holds (or has reserved while loading).
    pub bytes: u64,
    /// Its last use.
    pub last_used: Instant,
    /// Leased or loading: never evicted.
    pub in_use: bool,
    /// Pinned: never evicted.
    pub pinned: bool,
}

/// Why [`plan_eviction`] found no way to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// `need` exceeds the budget left beside the pinned models.
    TooLarge {
        /// Bytes needed.
        need: u64,
        /// The whole budget.
        budget: u64,
        /// Bytes held by pinned models.
        pinned: u64,
    },
    /// Only models in use could make room.
    Busy {
        /// Bytes needed.
        need: u64,
        /// Bytes free plus bytes of evictable models.
        available: u64,
    },
}

/// Which residents to unload so that `need` more bytes fit in `budget`; indexes into
/// `residents`, in eviction order (empty: it fits already).
///
/// Only idle, unpinned residents are candidates. They are taken least recently used first,
/// the larger first among equally old ones, until enough is free; then victims made
/// unnecessary by later (larger) ones are dropped from the plan, most recently used first, so
/// the set is minimal. Fails with [`PlanError::TooLarge`] when `need` exceeds the budget left
/// beside pinned models (nothing else can help) and [`PlanError::Busy`] when evicting every
/// candidate would not be enough.
pub fn plan_eviction(
    residents: &[Resident],
    need: u64,
    budget: u64,
) -> Result<Vec<usize>, PlanError> {
    let pinned: u64 = residents.iter().filter(|r| r.pinned).map(|r| r.bytes).sum();
    if need > budget.saturating_sub(pinned) {
        return Err(PlanError::TooLarge {
            need,
            budget,
            pinned,
        });
    }
    let used: u64 = residents.iter().map(|r| r.bytes).sum();
    let excess = (used + need).saturating_sub(budget);
    if excess == 0 {
        return Ok(Vec::new());
    }
    let mut candidates: Vec<usize> = (0..residents.len())
        .filter(|&i| !residents[i].in_use && !residents[i].pinned)
        .collect();
    candidates.sort_by(|&a, &b| {
        let (a, b) = (&residents[a], &residents[b]);
        a.last_used.cmp(&b.last_used).then(b.bytes.cmp(&a.bytes))
    });
    let mut victims = Vec::new();
    let mut freed = 0u64;
    for index in candidates {
        if freed >= excess {
            break;
        }
        freed += residents[index].bytes;
        victims.push(index);
    }
    if freed < excess {
        let evictable: u64 = residents
            .iter()
            .filter(|r| !r.in_use && !r.pinned)
            .map(|r| r.bytes)
            .sum();
        return Err(PlanError::Busy {
            need,
            available: budget.saturating_sub(used - evictable),
        });
    }
    drop_unneeded(residents, &mut victims, freed - excess);
    Ok(victims)
}

/// Drops from `victims` (in eviction order) those made unnecessary by the later ones, most
/// recently used first, while evicting all of them frees `surplus` bytes more than needed. The
/// last victim is always needed; earlier ones may not be once it is in.
fn drop_unneeded(residents: &[Resident], victims: &mut Vec<usize>, mut surplus: u64) {
    let mut position = victims.len().saturating_sub(1);
    while position > 0 {
        position -= 1;
        let bytes = residents[victims[position]].bytes;
        if bytes <= surplus {
            surplus -= bytes;
            victims.remove(position);
        }
    }
}
