//! [`AttemptEnd`]: how a layer that ends an attempt tells the layers below
//! why, so that a cut attempt is not mistaken for a caller that went away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::classification::{Classification, Phase};
use crate::kind::ErrorKind;

/// Why the layer that made an attempt ended it before the layers below
/// saw its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The attempt's own time limit ran out.
    AttemptTimeout,
    /// The deadline over every attempt ran out during this one.
    Deadline,
    /// The layer found a failure of this kind that the layers below had not
    /// reported yet (a stream's first-content guard read an error event).
    Failed(ErrorKind),
}

impl EndReason {
    /// The kind of failure the attempt ended with: a timeout for a time
    /// limit that ran out.
    pub fn kind(self) -> ErrorKind {
        match self {
            EndReason::AttemptTimeout | EndReason::Deadline => ErrorKind::Timeout,
            EndReason::Failed(kind) => kind,
        }
    }

    /// The failure as a classification, for a layer that counts outcomes.
    pub fn classification(self) -> Classification {
        let message = match self {
            EndReason::AttemptTimeout => "the attempt timeout ended the attempt",
            EndReason::Deadline => "the deadline ended the attempt",
            EndReason::Failed(_) => "the layer above ended the attempt on a failure",
        };
        Classification::new(self.kind())
            .with_phase(Phase::Local)
            .with_message(message)
    }

    /// 0 is "not ended"; then the two limits, then every kind (a kind
    /// that could not be encoded reads back as unknown).
    fn encode(self) -> u8 {
        match self {
            EndReason::AttemptTimeout => 1,
            EndReason::Deadline => 2,
            EndReason::Failed(kind) => ErrorKind::ALL
                .iter()
                .position(|k| *k == kind)
                .and_then(|i| u8::try_from(i + 3).ok())
                .unwrap_or(u8::MAX),
        }
    }

    fn decode(code: u8) -> Option<EndReason> {
        match code {
            0 => None,
            1 => Some(EndReason::AttemptTimeout),
            2 => Some(EndReason::Deadline),
            n => Some(EndReason::Failed(
                ErrorKind::ALL
                    .get(usize::from(n - 3))
                    .copied()
                    .unwrap_or(ErrorKind::Unknown),
            )),
        }
    }
}

/// A cell that the layer making an attempt (retry) puts in the attempt's
/// request extensions, and sets when it ends the attempt itself (an attempt
/// timeout, the deadline, a failure its first-content guard read) before it
/// drops the attempt's future or body. A layer below that counts outcomes
/// (the circuit breaker) takes it from the request: a call dropped with the
/// cell set failed for the reason given; dropped with it unset, its caller
/// went away, which says nothing about the target.
///
/// Without it, an upstream that never answers would never be counted by a
/// breaker below a retry with an attempt timeout: every attempt would just
/// be dropped.
///
/// ```
/// use tower_llm_classify::{AttemptEnd, EndReason, ErrorKind};
///
/// let mut request = http::Request::new(());
/// let end = AttemptEnd::new();
/// request.extensions_mut().insert(end.clone());
///
/// // Below: the layer that counts outcomes keeps the cell.
/// let seen = request.extensions_mut().remove::<AttemptEnd>().unwrap();
/// assert_eq!(seen.reason(), None); // a drop now would be the caller's
///
/// // Above: the attempt timeout fires; say so, then drop the attempt.
/// end.end(EndReason::AttemptTimeout);
/// assert_eq!(seen.reason().map(EndReason::kind), Some(ErrorKind::Timeout));
/// ```
///
/// # Clone
///
/// Clones share the cell (an `Arc`).
#[derive(Clone, Debug, Default)]
pub struct AttemptEnd {
    reason: Arc<AtomicU8>,
}

impl AttemptEnd {
    /// A cell not set.
    pub fn new() -> Self {
        AttemptEnd::default()
    }

    /// Says why the attempt is being ended; call it before dropping the
    /// attempt's future or body. The first reason given stays.
    pub fn end(&self, reason: EndReason) {
        let _ =
            self.reason
                .compare_exchange(0, reason.encode(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// Why the attempt was ended by the layer that made it, if it was.
    pub fn reason(&self) -> Option<EndReason> {
        EndReason::decode(self.reason.load(Ordering::Acquire))
    }

    /// Readies the cell for the next attempt: cleared in place when no
    /// clone of it is left anywhere (no allocation), else replaced by a new
    /// one, so a late reader of the previous attempt never sees the next
    /// attempt's reason.
    pub fn renew(&mut self) {
        match Arc::get_mut(&mut self.reason) {
            Some(reason) => *reason.get_mut() = 0,
            None => *self = AttemptEnd::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_the_cell() {
        let reasons = [EndReason::AttemptTimeout, EndReason::Deadline]
            .into_iter()
            .chain(ErrorKind::ALL.into_iter().map(EndReason::Failed));
        for reason in reasons {
            let end = AttemptEnd::new();
            end.end(reason);
            assert_eq!(end.reason(), Some(reason));
        }
    }

    #[test]
    fn the_first_reason_stays() {
        let end = AttemptEnd::new();
        end.end(EndReason::Deadline);
        end.end(EndReason::Failed(ErrorKind::Overloaded));
        assert_eq!(end.reason(), Some(EndReason::Deadline));
    }

    #[test]
    fn renewing_clears_in_place_only_when_nobody_else_holds_the_cell() {
        let mut end = AttemptEnd::new();
        end.end(EndReason::AttemptTimeout);
        end.renew();
        assert_eq!(end.reason(), None);
        let late_reader = end.clone();
        end.end(EndReason::Deadline);
        end.renew();
        assert_eq!(end.reason(), None);
        assert_eq!(
            late_reader.reason(),
            Some(EndReason::Deadline),
            "the previous attempt's reader keeps its reason"
        );
        end.end(EndReason::AttemptTimeout);
        assert_eq!(late_reader.reason(), Some(EndReason::Deadline));
    }
}
