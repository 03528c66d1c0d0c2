//! What crosses Redis: key names, values and messages, with instants as
//! wall-clock milliseconds since the Unix epoch (each replica turns them
//! back into its own `Instant`: monotonic clocks differ between hosts).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tower_llm_circuit::{CooldownCause, KeyDecision};

/// A decision as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WireDecision {
    /// Open until this epoch millisecond.
    Open { until_ms: u64 },
    /// Cooling down until this epoch millisecond.
    Cooldown { until_ms: u64, cause: CooldownCause },
    /// Closed again.
    Closed,
}

/// A message on the channel: who said it, about which key, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) replica: u64,
    pub(crate) key: String,
    pub(crate) decision: WireDecision,
}

/// Milliseconds since the epoch, now (0 for a clock before 1970).
pub(crate) fn epoch_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `until` as epoch milliseconds, rounded up (a peer never ends a state
/// before this replica does).
pub(crate) fn to_epoch_ms(until: Instant) -> u64 {
    let left = until.saturating_duration_since(Instant::now());
    let left_ms = u64::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    epoch_ms_now().saturating_add(left_ms)
}

/// Epoch milliseconds as this replica's instant; `None` when already past.
pub(crate) fn from_epoch_ms(until_ms: u64) -> Option<Instant> {
    let left = until_ms.checked_sub(epoch_ms_now()).filter(|ms| *ms > 0)?;
    Instant::now().checked_add(Duration::from_millis(left))
}

/// The time to live of a value that holds until `until_ms`; `None` when
/// already past.
pub(crate) fn ttl_ms(until_ms: u64) -> Option<u64> {
    until_ms.checked_sub(epoch_ms_now()).filter(|ms| *ms > 0)
}

fn cause_name(cause: CooldownCause) -> &'static str {
    match cause {
        CooldownCause::QuotaExhausted => "quota",
        _ => "rate",
    }
}

fn cause_from(name: &str) -> Option<CooldownCause> {
    match name {
        "quota" => Some(CooldownCause::QuotaExhausted),
        "rate" => Some(CooldownCause::RateLimited),
        _ => None,
    }
}

impl WireDecision {
    /// A decision of this replica, as it travels.
    pub(crate) fn from_decision(decision: &KeyDecision) -> Option<WireDecision> {
        match decision {
            KeyDecision::Opened { until, .. } => Some(WireDecision::Open {
                until_ms: to_epoch_ms(*until),
            }),
            KeyDecision::CoolingDown { until, cause, .. } => Some(WireDecision::Cooldown {
                until_ms: to_epoch_ms(*until),
                cause: *cause,
            }),
            KeyDecision::Closed { .. } => Some(WireDecision::Closed),
            _ => None,
        }
    }

    /// The value stored under the key's Redis key (`None` for closed:
    /// the key is deleted).
    pub(crate) fn value(&self) -> Option<String> {
        match self {
            WireDecision::Open { until_ms } => Some(until_ms.to_string()),
            WireDecision::Cooldown { until_ms, cause } => {
                Some(format!("{until_ms} {}", cause_name(*cause)))
            }
            WireDecision::Closed => None,
        }
    }

    /// A stored value read back (`open` tells which kind of key held it).
    pub(crate) fn parse_value(open: bool, value: &str) -> Option<WireDecision> {
        let mut parts = value.split(' ');
        let until_ms = parts.next()?.parse().ok()?;
        if open {
            return Some(WireDecision::Open { until_ms });
        }
        let cause = cause_from(parts.next()?)?;
        Some(WireDecision::Cooldown { until_ms, cause })
    }
}

impl Message {
    /// `replica kind until_ms key`, the key last (it may hold spaces).
    pub(crate) fn encode(&self) -> String {
        let (kind, until_ms) = match &self.decision {
            WireDecision::Open { until_ms } => ("open", *until_ms),
            WireDecision::Cooldown { until_ms, cause } => (
                match cause {
                    CooldownCause::QuotaExhausted => "cooldown_quota",
                    _ => "cooldown_rate",
                },
                *until_ms,
            ),
            WireDecision::Closed => ("closed", 0),
        };
        format!("{:x} {kind} {until_ms} {}", self.replica, self.key)
    }

    /// A message read back; `None` for anything malformed (ignored).
    pub(crate) fn decode(text: &str) -> Option<Message> {
        let mut parts = text.splitn(4, ' ');
        let replica = u64::from_str_radix(parts.next()?, 16).ok()?;
        let kind = parts.next()?;
        let until_ms: u64 = parts.next()?.parse().ok()?;
        let key = parts.next().filter(|k| !k.is_empty())?.to_owned();
        let decision = match kind {
            "open" => WireDecision::Open { until_ms },
            "cooldown_rate" => WireDecision::Cooldown {
                until_ms,
                cause: CooldownCause::RateLimited,
            },
            "cooldown_quota" => WireDecision::Cooldown {
                until_ms,
                cause: CooldownCause::QuotaExhausted,
            },
            "closed" => WireDecision::Closed,
            _ => return None,
        };
        Some(Message {
            replica,
            key,
            decision,
        })
    }
}

/// The names under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    /// The pub/sub channel.
    pub(crate) fn channel(&self) -> String {
        format!("{}:decisions", self.prefix)
    }

    /// Where an open key's `until` is kept.
    pub(crate) fn open_key(&self, key: &str) -> String {
        format!("{}:open:{key}", self.prefix)
    }

    /// Where a cooling key's `until` is kept.
    pub(crate) fn cooldown_key(&self, key: &str) -> String {
        format!("{}:cooldown:{key}", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every key under the prefix, the
    /// prefix's glob characters escaped.
    pub(crate) fn pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        pattern
    }

    /// A Redis key read back: (open?, circuit key), or `None` if not ours.
    pub(crate) fn parse_key<'a>(&self, redis_key: &'a str) -> Option<(bool, &'a str)> {
        let rest = redis_key.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        if let Some(key) = rest.strip_prefix("open:") {
            Some((true, key))
        } else {
            rest.strip_prefix("cooldown:").map(|key| (false, key))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_with_spaces_in_its_key() {
        for decision in [
            WireDecision::Open { until_ms: 42 },
            WireDecision::Cooldown {
                until_ms: 7,
                cause: CooldownCause::QuotaExhausted,
            },
            WireDecision::Cooldown {
                until_ms: 9,
                cause: CooldownCause::RateLimited,
            },
            WireDecision::Closed,
        ] {
            let message = Message {
                replica: 0xabc,
                key: "openai/gpt 4o".into(),
                decision,
            };
            assert_eq!(Message::decode(&message.encode()), Some(message));
        }
    }

    #[test]
    fn malformed_messages_are_ignored() {
        for text in [
            "",
            "zz open 1 k",
            "1 open x k",
            "1 shut 1 k",
            "1 open 1 ",
            "1 open 1",
        ] {
            assert_eq!(Message::decode(text), None, "{text:?}");
        }
    }

    #[test]
    fn stored_values_round_trip() {
        let open = WireDecision::Open { until_ms: 5 };
        assert_eq!(
            WireDecision::parse_value(true, &open.value().unwrap()),
            Some(open)
        );
        let cool = WireDecision::Cooldown {
            until_ms: 6,
            cause: CooldownCause::QuotaExhausted,
        };
        assert_eq!(
            WireDecision::parse_value(false, &cool.value().unwrap()),
            Some(cool)
        );
        assert_eq!(WireDecision::parse_value(false, "6"), None);
        assert_eq!(WireDecision::parse_value(true, "soon"), None);
    }

    #[test]
    fn keys_are_read_back_under_their_prefix_only() {
        let names = Names::new("gw[1]");
        assert_eq!(names.parse_key(&names.open_key("a/b")), Some((true, "a/b")));
        assert_eq!(
            names.parse_key(&names.cooldown_key("a:b")),
            Some((false, "a:b"))
        );
        assert_eq!(names.parse_key("gw[1]:decisions"), None);
        assert_eq!(names.parse_key("gw[1]x:open:a"), None);
        assert_eq!(names.pattern(), "gw\\[1\\]:*");
    }

    #[test]
    fn a_future_instant_crosses_and_a_past_one_does_not() {
        let ms = to_epoch_ms(Instant::now() + Duration::from_secs(30));
        assert!(ms > epoch_ms_now());
        assert!(from_epoch_ms(ms).is_some_and(|back| back > Instant::now()));
        assert!(ttl_ms(ms).is_some());
        assert_eq!(from_epoch_ms(epoch_ms_now().saturating_sub(1)), None);
        assert_eq!(ttl_ms(0), None);
    }
}
