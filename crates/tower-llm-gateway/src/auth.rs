//! Caller keys: who may spend the gateway's upstream keys.
//!
//! A caller sends one of the keys the gateway was given (`[gateway]
//! api_keys_env` names the environment variable holding them) as
//! `Authorization: Bearer <key>` (the OpenAI SDKs) or `x-api-key: <key>`
//! (the Anthropic SDKs). Every `/v1/*` path and `/metrics` need it;
//! `/health` answers anyone, with its details only for a caller with a key.
//!
//! The gateway keeps only SHA-256 digests of the keys and compares the
//! digest of what a caller sent with each of them in constant time
//! (`subtle`): how long a refusal takes says nothing about how close a guess
//! was, nor how long the keys are. No key, or any part of one, is ever
//! logged, counted or shown; refusals are logged and counted by reason
//! only (`missing`, `wrong`).

use std::fmt;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use ring::digest::{SHA256, SHA256_OUTPUT_LEN, digest};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::endpoints::ErrorShape;
use crate::gate::{Check, Passage};
use crate::limits::Caller;

/// The header the Anthropic SDKs send their key in.
const X_API_KEY: &str = "x-api-key";

/// The keys callers may send, kept as digests.
///
/// # Clone
///
/// Cheap: clones share one list.
#[derive(Clone)]
pub struct CallerKeys {
    digests: Arc<[[u8; SHA256_OUTPUT_LEN]]>,
}

impl fmt::Debug for CallerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys, nor their digests.
        f.debug_struct("CallerKeys")
            .field("count", &self.len())
            .finish()
    }
}

/// What a request's credentials come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A key the gateway accepts: the index of the (last) accepted key
    /// presented, which is who the caller is for its rate limits.
    Accepted(usize),
    /// No key in `Authorization: Bearer` or `x-api-key`.
    Missing,
    /// Keys, none of them accepted.
    Wrong,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted(_) => "accepted",
            Verdict::Missing => "missing",
            Verdict::Wrong => "wrong",
        }
    }
}

impl CallerKeys {
    /// The keys in `value`, the content of the environment variable `var`:
    /// comma-separated, whitespace around each trimmed, empty entries
    /// ignored. Errors name the variable, never its value.
    pub fn from_env(var: &str, value: Option<String>) -> Result<CallerKeys, String> {
        let Some(value) = value else {
            return Err(format!(
                "[gateway] api_keys_env: the environment variable `{var}` is not set (or not \
                 UTF-8); set it to the keys callers must send, comma-separated"
            ));
        };
        let mut digests = Vec::new();
        for (i, key) in value
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
        {
            // A key must fit in a header value as a caller sends it.
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "[gateway] api_keys_env: key {} in `{var}` has characters other than \
                     visible ASCII, which no caller could send in a header",
                    i + 1
                ));
            }
            digests.push(sha256(key.as_bytes()));
        }
        if digests.is_empty() {
            return Err(format!(
                "[gateway] api_keys_env: the environment variable `{var}` holds no key; set it \
                 to the keys callers must send, comma-separated"
            ));
        }
        Ok(CallerKeys {
            digests: digests.into(),
        })
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no key is accepted: never, [`CallerKeys::from_env`] refuses
    /// an empty list.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `headers` carry an accepted key.
    pub(crate) fn verdict(&self, headers: &HeaderMap) -> Verdict {
        let mut presented = false;
        let mut accepted = Choice::from(0);
        let mut index = 0_u32;
        for key in presented_keys(headers) {
            presented = true;
            let (found, at) = self.accepts(key);
            accepted |= found;
            index.conditional_assign(&at, found);
        }
        match (presented, bool::from(accepted)) {
            (false, _) => Verdict::Missing,
            (true, false) => Verdict::Wrong,
            (true, true) => Verdict::Accepted(index as usize),
        }
    }

    /// Compares with every key, without stopping at a match: whether one
    /// matched, and which (selected in constant time too).
    fn accepts(&self, key: &[u8]) -> (Choice, u32) {
        let presented = sha256(key);
        let mut found = Choice::from(0);
        let mut index = 0_u32;
        for (i, accepted) in self.digests.iter().enumerate() {
            let eq = accepted[..].ct_eq(&presented[..]);
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        (found, index)
    }
}

fn sha256(bytes: &[u8]) -> [u8; SHA256_OUTPUT_LEN] {
    let mut out = [0; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// The keys a request presents: each `Authorization: Bearer` token (the
/// scheme is case-insensitive, RFC 9110 §11.1) and each `x-api-key`.
fn presented_keys(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|value| {
            let value = value.as_bytes();
            let (scheme, token) = value.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| token.trim_ascii())
        });
    let x_api_key = headers
        .get_all(X_API_KEY)
        .iter()
        .map(|value| value.as_bytes().trim_ascii());
    bearer.chain(x_api_key).filter(|key| !key.is_empty())
}

/// The check in front of every route: `/v1/*` (and anything unknown) and
/// `/metrics` need an accepted key; `/health` is open and learns whether
/// the caller had one; `/health/live`, `/health/ready` and the status page
/// `/` are open. (Put in front of them as a [`GateLayer`](crate::gate::GateLayer).)
impl Check for CallerKeys {
    /// Nothing: an answer let through is the route's.
    type After = std::convert::Infallible;

    fn check(&self, request: &mut Request) -> Passage<Self::After> {
        let verdict = self.verdict(request.headers());
        if let Verdict::Accepted(caller) = verdict {
            // Who the caller is, for its limits; its presence tells
            // `/health` that the caller had a key.
            request.extensions_mut().insert(Caller(caller));
            return Passage::Through(None);
        }
        // The probes and the status page are open: an orchestrator has no
        // key, the page is static (it asks `/health` for the details, with
        // the key the person at the browser gives it).
        if matches!(
            request.uri().path(),
            "/health" | "/health/live" | "/health/ready" | "/"
        ) {
            return Passage::Through(None);
        }
        metrics::counter!("tower_llm_gateway_rejected_total", "reason" => "unauthenticated")
            .increment(1);
        // Counted above; logged at debug only, so that anyone who can
        // connect cannot fill the log.
        tracing::debug!(
            path = request.uri().path(),
            key = verdict.as_str(),
            "caller refused: no accepted key"
        );
        Passage::Refused(unauthorized(
            verdict,
            ErrorShape::of_path(request.uri().path()),
        ))
    }

    fn after(after: Self::After, _: &mut Response) {
        match after {}
    }
}

/// A 401 in the endpoint's provider's shape (OpenAI's as OpenAI answers a
/// bad key, Anthropic's `authentication_error` on its endpoints), without
/// echoing any of the key, with the `WWW-Authenticate` challenge of RFC
/// 6750 §3.
fn unauthorized(verdict: Verdict, shape: ErrorShape) -> Response {
    let message = match verdict {
        Verdict::Missing => "no API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
        _ => "the API key is not one this gateway accepts",
    };
    let mut response = match shape {
        ErrorShape::OpenAi => crate::error::error_json_with_code(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            message,
        ),
        ErrorShape::Anthropic => {
            shape.gateway_error(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
        }
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> CallerKeys {
        CallerKeys::from_env("KEYS", Some("sk-alice, sk-bob ,,sk-carol".to_owned())).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_accepted_key_names_the_caller_whichever_header_carries_it() {
        let keys = keys();
        assert_eq!(keys.len(), 3);
        assert_eq!(
            keys.verdict(&headers(&[("authorization", "Bearer sk-alice")])),
            Verdict::Accepted(0)
        );
        assert_eq!(
            keys.verdict(&headers(&[("x-api-key", "sk-carol")])),
            Verdict::Accepted(2)
        );
        // The scheme in any case, the token trimmed.
        assert_eq!(
            keys.verdict(&headers(&[("authorization", "bearer  sk-bob ")])),
            Verdict::Accepted(1)
        );
    }

    #[test]
    fn a_wrong_key_beside_an_accepted_one_is_the_accepted_callers() {
        let keys = keys();
        let both = headers(&[
            ("authorization", "Bearer sk-mallory"),
            ("x-api-key", "sk-bob"),
        ]);
        assert_eq!(keys.verdict(&both), Verdict::Accepted(1));
    }

    #[test]
    fn no_key_and_a_wrong_key_are_told_apart() {
        let keys = keys();
        assert_eq!(keys.verdict(&HeaderMap::new()), Verdict::Missing);
        assert_eq!(
            keys.verdict(&headers(&[("authorization", "Basic sk-alice")])),
            Verdict::Missing
        );
        assert_eq!(
            keys.verdict(&headers(&[("x-api-key", "sk-alic")])),
            Verdict::Wrong
        );
    }

    #[test]
    fn keys_are_never_shown() {
        let shown = format!("{:?}", keys());
        assert!(!shown.contains("sk-"), "{shown}");
        let error = CallerKeys::from_env("KEYS", Some("sk-ok, bad key".to_owned())).unwrap_err();
        assert!(error.contains("key 2") && !error.contains("bad"), "{error}");
    }
}
