//! Reading settings from environment variables, the same way in every
//! layer crate: a missing variable is `None`, a bad one an error that names
//! the variable and quotes the value.

use std::str::FromStr;

/// The value of variable `name` as a `T`, from `lookup` (the process
/// environment, or a map in tests).
///
/// ```
/// use tower_llm_classify::env::parse_var;
///
/// let lookup = |name: &str| (name == "TIMEOUT_MS").then(|| " 250 ".to_owned());
/// assert_eq!(parse_var::<u64>("TIMEOUT_MS", &lookup), Ok(Some(250)));
/// assert_eq!(parse_var::<u64>("OTHER", &lookup), Ok(None));
/// let bad = |_: &str| Some("soon".to_owned());
/// assert_eq!(parse_var::<u64>("TIMEOUT_MS", &bad).unwrap_err(), "TIMEOUT_MS: `soon` is not a valid value");
/// ```
pub fn parse_var<T: FromStr>(
    name: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<T>, String> {
    match lookup(name) {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|_| format!("{name}: `{text}` is not a valid value")),
    }
}
