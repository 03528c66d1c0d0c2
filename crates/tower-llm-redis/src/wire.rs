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
    /// What the key's answers said it has left (pacing).
    Pace {
        requests: Option<WireBucket>,
        tokens: Option<WireBucket>,
    },
}

/// A pacing bucket as it travels: what is left, and when it is full again
/// (epoch milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WireBucket {
    pub(crate) remaining: u64,
    pub(crate) full_at_ms: u64,
}

/// Which of a key's Redis keys a value was stored under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoredKind {
    Open,
    Cooldown,
    Pace,
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
            WireDecision::Pace { requests, tokens } => Some(pace_value(*requests, *tokens)),
        }
    }

    /// The epoch millisecond until which the decision holds (`None` for
    /// closed).
    pub(crate) fn until_ms(&self) -> Option<u64> {
        match self {
            WireDecision::Open { until_ms } | WireDecision::Cooldown { until_ms, .. } => {
                Some(*until_ms)
            }
            WireDecision::Closed => None,
            WireDecision::Pace { requests, tokens } => {
                requests.iter().chain(tokens).map(|b| b.full_at_ms).max()
            }
        }
    }

    /// A stored value read back (`kind` tells which kind of key held it).
    pub(crate) fn parse_value(kind: StoredKind, value: &str) -> Option<WireDecision> {
        if kind == StoredKind::Pace {
            return parse_pace(value);
        }
        let mut parts = value.split(' ');
        let until_ms = parts.next()?.parse().ok()?;
        if kind == StoredKind::Open {
            return Some(WireDecision::Open { until_ms });
        }
        let cause = cause_from(parts.next()?)?;
        Some(WireDecision::Cooldown { until_ms, cause })
    }
}

/// `remaining:full_at_ms` per bucket, requests then tokens, `-` for none:
/// `3:1765100000000,-`.
fn pace_value(requests: Option<WireBucket>, tokens: Option<WireBucket>) -> String {
    let bucket = |b: Option<WireBucket>| match b {
        Some(b) => format!("{}:{}", b.remaining, b.full_at_ms),
        None => "-".to_owned(),
    };
    format!("{},{}", bucket(requests), bucket(tokens))
}

fn parse_pace(value: &str) -> Option<WireDecision> {
    let bucket = |text: &str| -> Option<Option<WireBucket>> {
        if text == "-" {
            return Some(None);
        }
        let (remaining, full_at_ms) = text.split_once(':')?;
        Some(Some(WireBucket {
            remaining: remaining.parse().ok()?,
            full_at_ms: full_at_ms.parse().ok()?,
        }))
    };
    let (requests, tokens) = value.split_once(',')?;
    let (requests, tokens) = (bucket(requests)?, bucket(tokens)?);
    (requests.is_some() || tokens.is_some()).then_some(WireDecision::Pace { requests, tokens })
}

impl Message {
    /// `replica kind value key`, the key last (it may hold spaces); the
    /// value is `until_ms` (0 for closed) or, for pacing, the buckets.
    pub(crate) fn encode(&self) -> String {
        let (kind, value) = match &self.decision {
            WireDecision::Open { until_ms } => ("open", until_ms.to_string()),
            WireDecision::Cooldown { until_ms, cause } => (
                match cause {
                    CooldownCause::QuotaExhausted => "cooldown_quota",
                    _ => "cooldown_rate",
                },
                until_ms.to_string(),
            ),
            WireDecision::Closed => ("closed", "0".to_owned()),
            WireDecision::Pace { requests, tokens } => ("pace", pace_value(*requests, *tokens)),
        };
        format!("{:x} {kind} {value} {}", self.replica, self.key)
    }

    /// A message read back; `None` for anything malformed (ignored).
    pub(crate) fn decode(text: &str) -> Option<Message> {
        let mut parts = text.splitn(4, ' ');
        let replica = u64::from_str_radix(parts.next()?, 16).ok()?;
        let kind = parts.next()?;
        let value = parts.next()?;
        let key = parts.next().filter(|k| !k.is_empty())?.to_owned();
        let until_ms = || value.parse::<u64>().ok();
        let decision = match kind {
            "open" => WireDecision::Open {
                until_ms: until_ms()?,
            },
            "cooldown_rate" => WireDecision::Cooldown {
                until_ms: until_ms()?,
                cause: CooldownCause::RateLimited,
            },
            "cooldown_quota" => WireDecision::Cooldown {
                until_ms: until_ms()?,
                cause: CooldownCause::QuotaExhausted,
            },
            "closed" => WireDecision::Closed,
            "pace" => parse_pace(value)?,
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

    /// Where a key's pacing view is kept.
    pub(crate) fn pace_key(&self, key: &str) -> String {
        format!("{}:pace:{key}", self.prefix)
    }

    /// The Redis key of `decision` about `key` (`None` for closed, which
    /// deletes the open one).
    pub(crate) fn key_of(&self, key: &str, decision: &WireDecision) -> Option<String> {
        match decision {
            WireDecision::Open { .. } => Some(self.open_key(key)),
            WireDecision::Cooldown { .. } => Some(self.cooldown_key(key)),
            WireDecision::Pace { .. } => Some(self.pace_key(key)),
            WireDecision::Closed => None,
        }
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

    /// A Redis key read back: (what it holds, circuit key), or `None` if
    /// not ours.
    pub(crate) fn parse_key<'a>(&self, redis_key: &'a str) -> Option<(StoredKind, &'a str)> {
        let rest = redis_key.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        [
            ("open:", StoredKind::Open),
            ("cooldown:", StoredKind::Cooldown),
            ("pace:", StoredKind::Pace),
        ]
        .into_iter()
        .find_map(|(name, kind)| rest.strip_prefix(name).map(|key| (kind, key)))
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
            WireDecision::Pace {
                requests: Some(WireBucket {
                    remaining: 0,
                    full_at_ms: 11,
                }),
                tokens: None,
            },
            WireDecision::Pace {
                requests: None,
                tokens: Some(WireBucket {
                    remaining: 4_000,
                    full_at_ms: 12,
                }),
            },
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
            "1 pace -,- k",
            "1 pace 3 k",
            "1 pace 3:x,- k",
        ] {
            assert_eq!(Message::decode(text), None, "{text:?}");
        }
    }

    #[test]
    fn stored_values_round_trip() {
        let open = WireDecision::Open { until_ms: 5 };
        assert_eq!(
            WireDecision::parse_value(StoredKind::Open, &open.value().unwrap()),
            Some(open)
        );
        let cool = WireDecision::Cooldown {
            until_ms: 6,
            cause: CooldownCause::QuotaExhausted,
        };
        assert_eq!(
            WireDecision::parse_value(StoredKind::Cooldown, &cool.value().unwrap()),
            Some(cool)
        );
        let pace = WireDecision::Pace {
            requests: Some(WireBucket {
                remaining: 2,
                full_at_ms: 8,
            }),
            tokens: Some(WireBucket {
                remaining: 900,
                full_at_ms: 9,
            }),
        };
        assert_eq!(pace.until_ms(), Some(9));
        assert_eq!(
            WireDecision::parse_value(StoredKind::Pace, &pace.value().unwrap()),
            Some(pace)
        );
        assert_eq!(WireDecision::parse_value(StoredKind::Cooldown, "6"), None);
        assert_eq!(WireDecision::parse_value(StoredKind::Open, "soon"), None);
    }

    #[test]
    fn keys_are_read_back_under_their_prefix_only() {
        let names = Names::new("gw[1]");
        assert_eq!(
            names.parse_key(&names.open_key("a/b")),
            Some((StoredKind::Open, "a/b"))
        );
        assert_eq!(
            names.parse_key(&names.cooldown_key("a:b")),
            Some((StoredKind::Cooldown, "a:b"))
        );
        assert_eq!(
            names.parse_key(&names.pace_key("a")),
            Some((StoredKind::Pace, "a"))
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
