//! The text syntax of fault plans, shared by tests and the `llm-sim` binary.
//!
//! ```text
//! plan   := fault                        every request gets it ("ok" = healthy)
//!         | "always=" fault
//!         | "script=" fault,… [";then=" fault]   one per request, then healthy (or `then`)
//!         | "cycle=" fault,…                      the script, over and over
//!         | "rate=" p:fault,… [";then=" fault] [";seed=" n] [";per_request"]
//!                                         seeded random mix (per_request: drawn by
//!                                         body and arrival count, not arrival order)
//! fault  := base ("+latency=" delay | "+tokens=" delay | "+first=" delay
//!                | "+prefill=" ("continue" | "ignore" | "refuse"))*
//! base   := "ok" | "stall" | "reset" | "close" | "truncate"
//!         | "error@" n [":" failure] | "drop@" n | "stall@" n [":silent"]
//!         | "refuse_prefill"                  (= "ok+prefill=refuse")
//!         | failure
//! failure:= status (429 → rate_limited@1s, 529 → overloaded, 5xx, 400, 401, 404, any other)
//!         | "rate_limited" ["@" duration] | "rate_limited_ms@" duration
//!         | "rate_limited_date@" duration | "rate_limited_reset@" duration
//!         | "quota" | "overloaded" | "context_length" | "content_filter"
//!         | "unauthorized" | "not_found" | "invalid_request"
//! delay  := duration | duration ".." duration (uniform) | duration "~" duration (median~p99)
//! duration := number ("us" | "ms" | "s" | "m" | "h")
//! ```

use std::error::Error;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::delay::Delay;
use crate::failure::{Failure, RetryHint};
use crate::fault::Fault;
use crate::plan::FaultPlan;

/// A fault or plan that does not parse, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    input: String,
    reason: String,
}

impl ParseError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        ParseError {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }

    /// Why it did not parse.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid fault `{}`: {}", self.input, self.reason)
    }
}

impl Error for ParseError {}

impl FromStr for FaultPlan {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut parts = s.split(';');
        let head = parts.next().unwrap_or_default().trim();
        let mut then = None;
        let mut seed = None;
        let mut per_request = false;
        for option in parts {
            let option = option.trim();
            if option == "per_request" {
                per_request = true;
            } else if let Some(fault) = option.strip_prefix("then=") {
                then = Some(fault.parse::<Fault>()?);
            } else if let Some(n) = option.strip_prefix("seed=") {
                seed = Some(
                    n.parse::<u64>()
                        .map_err(|_| ParseError::new(s, "seed must be an unsigned integer"))?,
                );
            } else {
                return Err(ParseError::new(
                    s,
                    format!("unknown option `{option}` (expected then=, seed= or per_request)"),
                ));
            }
        }
        let plan = if let Some(mix) = head.strip_prefix("rate=") {
            let mut plan = FaultPlan::random(seed.unwrap_or(0));
            let mut total = 0.0;
            // `rate=` alone: no faults drawn (what an empty mix displays as,
            // `FaultPlan::random(seed)` with latencies only, say).
            let entries = mix.split(',').filter(|_| !mix.trim().is_empty());
            for entry in entries {
                let (p, fault) = entry.split_once(':').ok_or_else(|| {
                    ParseError::new(s, format!("`{entry}` is not probability:fault"))
                })?;
                let p: f64 = p
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=1.0).contains(p))
                    .ok_or_else(|| {
                        ParseError::new(s, format!("`{p}` is not a probability between 0 and 1"))
                    })?;
                total += p;
                if total > 1.0 + 1e-9 {
                    return Err(ParseError::new(s, "probabilities add up to more than 1"));
                }
                plan = plan.with(p, fault.parse()?);
            }
            if per_request {
                plan = plan.per_request();
            }
            plan
        } else if seed.is_some() {
            return Err(ParseError::new(s, "seed= only applies to rate= plans"));
        } else if per_request {
            return Err(ParseError::new(
                s,
                "per_request only applies to rate= plans",
            ));
        } else if let Some(list) = head.strip_prefix("script=") {
            FaultPlan::script(parse_list(list)?)
        } else if let Some(list) = head.strip_prefix("cycle=") {
            if then.is_some() {
                return Err(ParseError::new(
                    s,
                    "a cycle never ends, so then= has no effect",
                ));
            }
            FaultPlan::script(parse_list(list)?).cycle()
        } else {
            let fault = head.strip_prefix("always=").unwrap_or(head);
            if then.is_some() {
                return Err(ParseError::new(
                    s,
                    "then= applies to script= and rate= plans",
                ));
            }
            FaultPlan::always(fault.parse()?)
        };
        Ok(match then {
            Some(fault) => plan.then(fault),
            None => plan,
        })
    }
}

fn parse_list(list: &str) -> Result<Vec<Fault>, ParseError> {
    list.split(',').map(str::parse).collect()
}

impl FromStr for Fault {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut parts = s.split('+');
        let base = parts.next().unwrap_or_default().trim();
        let mut fault = parse_base(base).map_err(|reason| ParseError::new(s, reason))?;
        for modifier in parts {
            let modifier = modifier.trim();
            if let Some(delay) = modifier.strip_prefix("latency=") {
                fault = fault.with_latency(parse_delay(delay).map_err(|r| ParseError::new(s, r))?);
            } else if let Some(delay) = modifier.strip_prefix("tokens=") {
                fault =
                    fault.with_token_delay(parse_delay(delay).map_err(|r| ParseError::new(s, r))?);
            } else if let Some(delay) = modifier.strip_prefix("first=") {
                fault = fault
                    .with_first_token_delay(parse_delay(delay).map_err(|r| ParseError::new(s, r))?);
            } else if let Some(mode) = modifier.strip_prefix("prefill=") {
                fault = fault.with_prefill(mode.parse().map_err(|r| ParseError::new(s, r))?);
            } else {
                return Err(ParseError::new(
                    s,
                    format!(
                        "unknown modifier `{modifier}` (expected latency=, tokens=, first= or prefill=)"
                    ),
                ));
            }
        }
        Ok(fault)
    }
}

fn parse_base(base: &str) -> Result<Fault, String> {
    let (name, arg) = match base.split_once('@') {
        Some((name, arg)) => (name, Some(arg)),
        None => (base, None),
    };
    let count = |arg: Option<&str>| -> Result<usize, String> {
        let arg =
            arg.ok_or_else(|| format!("`{name}` needs @n, the number of content events first"))?;
        arg.parse()
            .map_err(|_| format!("`{arg}` is not a number of events"))
    };
    let wait = |arg: Option<&str>| -> Result<Duration, String> {
        parse_duration(arg.ok_or_else(|| format!("`{name}` needs @duration"))?)
    };
    let no_arg = |fault: Fault| -> Result<Fault, String> {
        match arg {
            None => Ok(fault),
            Some(_) => Err(format!("`{name}` takes no @argument")),
        }
    };
    match name {
        "ok" | "healthy" => no_arg(Fault::ok()),
        "stall" => match arg.and_then(|arg| arg.strip_suffix(":silent")) {
            Some(n) => Ok(Fault::stream_stall_silent_after(count(Some(n))?)),
            None if arg.is_some() => Ok(Fault::stream_stall_after(count(arg)?)),
            None => Ok(Fault::stall()),
        },
        "reset" => no_arg(Fault::reset()),
        "close" => no_arg(Fault::close()),
        "truncate" => no_arg(Fault::stream_without_terminal()),
        "refuse_prefill" => no_arg(Fault::refuse_prefill()),
        "drop" => Ok(Fault::stream_drop_after(count(arg)?)),
        "error" => {
            let arg = arg.ok_or("`error` needs @n, the number of content events first")?;
            let (n, failure) = match arg.split_once(':') {
                Some((n, failure)) => {
                    let fault = parse_base(failure)?;
                    let failure = fault.failure().cloned();
                    (
                        n,
                        failure.ok_or_else(|| format!("`{fault}` is not a provider error"))?,
                    )
                }
                None => (arg, Failure::Overloaded),
            };
            let n = n
                .parse()
                .map_err(|_| format!("`{n}` is not a number of events"))?;
            Ok(Fault::stream_error_after_with(n, failure))
        }
        "rate_limited" if arg.is_none() => Ok(Fault::rate_limited_without_hint()),
        "rate_limited" => Ok(Fault::rate_limited(wait(arg)?)),
        "rate_limited_ms" => Ok(Fault::rate_limited_with(
            wait(arg)?,
            RetryHint::Milliseconds,
        )),
        "rate_limited_date" => Ok(Fault::rate_limited_with(wait(arg)?, RetryHint::HttpDate)),
        "rate_limited_reset" => Ok(Fault::rate_limited_with(
            wait(arg)?,
            RetryHint::ResetHeadersOnly,
        )),
        _ => no_arg(Fault::fail(parse_failure(name)?)),
    }
}

fn parse_failure(name: &str) -> Result<Failure, String> {
    Ok(match name {
        "quota" => Failure::QuotaExhausted,
        "overloaded" => Failure::Overloaded,
        "context_length" => Failure::ContextLengthExceeded,
        "content_filter" => Failure::ContentFiltered,
        "unauthorized" => Failure::Unauthorized,
        "not_found" => Failure::ModelNotFound,
        "invalid_request" => Failure::InvalidRequest("The request could not be processed.".into()),
        status if status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()) => {
            let code: u16 = status
                .parse()
                .map_err(|_| format!("`{status}` is not a status"))?;
            if !(400..=599).contains(&code) {
                return Err(format!("status {code} is not an error status (400–599)"));
            }
            match Fault::status(code).action {
                crate::fault::Action::Fail(failure) => failure,
                _ => Failure::Status(code),
            }
        }
        other => return Err(format!("unknown fault `{other}`")),
    })
}

impl FromStr for Delay {
    type Err = ParseError;

    /// `250ms`, `10ms..30ms` (uniform), `50ms~500ms` (median~p99, long tail).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_delay(s).map_err(|reason| ParseError::new(s, reason))
    }
}

fn parse_delay(s: &str) -> Result<Delay, String> {
    if let Some((min, max)) = s.split_once("..") {
        Ok(Delay::uniform(parse_duration(min)?, parse_duration(max)?))
    } else if let Some((median, p99)) = s.split_once('~') {
        Ok(Delay::long_tail(
            parse_duration(median)?,
            parse_duration(p99)?,
        ))
    } else {
        Ok(Delay::fixed(parse_duration(s)?))
    }
}

/// Parses `250ms`, `1.5s`, `2m`, `1h`, `500us`, exactly (no floating point).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration like 250ms or 2s");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let unit_nanos: u128 = match unit {
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" => return Err(format!("`{s}` needs a unit (us, ms, s, m, h)")),
        other => return Err(format!("unknown unit `{other}` in `{s}`")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 9 {
        return Err(bad());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| bad())?
    };
    let nanos = whole
        .checked_mul(unit_nanos)
        .and_then(|n| {
            n.checked_add(fraction_value * unit_nanos / 10u128.pow(fraction.len() as u32))
        })
        .ok_or_else(|| format!("`{s}` is out of range"))?;
    let secs =
        u64::try_from(nanos / 1_000_000_000).map_err(|_| format!("`{s}` is out of range"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// A duration in the largest unit that holds it exactly: `2s`, `250ms`,
/// `1.5s`, `1500us`.
pub(crate) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0ms".to_owned();
    }
    for (size, unit) in [
        (3_600_000_000_000u128, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
    ] {
        if nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    if nanos > 1_000_000_000 && nanos.is_multiple_of(1_000_000) {
        // Fractional seconds read better than thousands of milliseconds.
        let millis = format!("{:03}", d.subsec_millis());
        return format!("{}.{}s", d.as_secs(), millis.trim_end_matches('0'));
    }
    if nanos.is_multiple_of(1_000_000) {
        return format!("{}ms", nanos / 1_000_000);
    }
    format!("{}us", nanos.div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for text in ["250ms", "2s", "1.5s", "3m", "1h", "1500us", "0ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unit"));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert!(parse_duration("99999999999999999999999h").is_err());
        assert_eq!(parse_duration("1.1s").unwrap(), Duration::from_millis(1100));
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
    }
}
