//! The half-open phase, packed in one word.

/// The half-open phase in one word, so that a probe's permit, its outcome
/// and the phase it belongs to change together in one compare-and-swap:
/// generation (24 bits) | permits left | successes | failures | slow
/// (10 bits each; at most 1000 probes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Phase {
    pub(super) generation: u64,
    pub(super) permits: u64,
    pub(super) successes: u64,
    pub(super) failures: u64,
    pub(super) slow: u64,
}

const FIELD: u64 = 0x3FF;

impl Phase {
    pub(super) fn pack(self) -> u64 {
        ((self.generation & 0xFF_FFFF) << 40)
            | ((self.permits & FIELD) << 30)
            | ((self.successes & FIELD) << 20)
            | ((self.failures & FIELD) << 10)
            | (self.slow & FIELD)
    }

    pub(super) fn unpack(word: u64) -> Phase {
        Phase {
            generation: word >> 40,
            permits: (word >> 30) & FIELD,
            successes: (word >> 20) & FIELD,
            failures: (word >> 10) & FIELD,
            slow: word & FIELD,
        }
    }

    /// A fresh phase after `self`: the next generation, every permit.
    pub(super) fn next(self, probes: u32) -> Phase {
        Phase {
            generation: (self.generation + 1) & 0xFF_FFFF,
            permits: u64::from(probes),
            successes: 0,
            failures: 0,
            slow: 0,
        }
    }
}
