//! OpenAI embeddings: what a request asks for, and the answer — one
//! vector per input, a pure function of the input's text, as floats or
//! as base64 (what the official SDKs ask for by default: openai-python's
//! `embeddings.create` sends `encoding_format: "base64"` and decodes it).

use std::fmt::Write as _;

use serde_json::Value;

use crate::api::Exchange;
use crate::delay::{key, unit};
use crate::wire::{push_json_str, unix_secs};

/// The length of a vector when the request does not say (`dimensions`).
pub(crate) const DEFAULT_DIMENSIONS: usize = 16;

/// The longest vector the simulator writes (OpenAI's largest model has
/// 3,072 dimensions).
const MAX_DIMENSIONS: usize = 4096;

/// What an embeddings request asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct EmbeddingAsk {
    /// One key per input (its text's hash), in order.
    pub(crate) inputs: Vec<u64>,
    /// The vectors' length.
    pub(crate) dimensions: usize,
    /// Base64 of little-endian `f32`s instead of a JSON array.
    pub(crate) base64: bool,
}

impl EmbeddingAsk {
    /// Reads `input` (a string, an array of strings, an array of token
    /// ids, an array of arrays of token ids), `dimensions` and
    /// `encoding_format`. `None` when `input` is missing or of another
    /// shape (the provider's 400).
    pub(crate) fn read(
        input: Option<&Value>,
        dimensions: Option<usize>,
        format: Option<&str>,
    ) -> Option<EmbeddingAsk> {
        let inputs = match input? {
            Value::String(text) => vec![hash(text.as_bytes())],
            Value::Array(items) if items.is_empty() => return None,
            Value::Array(items) if items.iter().all(Value::is_number) => {
                vec![hash(Value::Array(items.clone()).to_string().as_bytes())]
            }
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Some(hash(text.as_bytes())),
                    Value::Array(tokens) if tokens.iter().all(Value::is_number) => {
                        Some(hash(item.to_string().as_bytes()))
                    }
                    _ => None,
                })
                .collect::<Option<Vec<u64>>>()?,
            _ => return None,
        };
        Some(EmbeddingAsk {
            inputs,
            dimensions: dimensions
                .unwrap_or(DEFAULT_DIMENSIONS)
                .clamp(1, MAX_DIMENSIONS),
            base64: format == Some("base64"),
        })
    }
}

/// FNV-1a: a stable key for an input's text.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The unit vector of `dimensions` for the input keyed `input`: the same
/// text always gets the same vector.
pub(crate) fn vector(input: u64, dimensions: usize) -> Vec<f32> {
    let raw: Vec<f64> = (0..dimensions as u64)
        .map(|i| unit(key(input, i, 11)) * 2.0 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// The whole answer: `{"object":"list","data":[{"object":"embedding",
/// "index":i,"embedding":[…]}],"model":…,"usage":{…}}`.
pub(crate) fn body(ex: &Exchange<'_>, ask: &EmbeddingAsk) -> String {
    let mut buf = String::with_capacity(128 + ask.inputs.len() * (40 + ask.dimensions * 12));
    buf.push_str("{\"object\":\"list\",\"data\":[");
    for (i, input) in ask.inputs.iter().enumerate() {
        if i > 0 {
            buf.push(',');
        }
        let _ = write!(
            buf,
            "{{\"object\":\"embedding\",\"index\":{i},\"embedding\":"
        );
        let values = vector(*input, ask.dimensions);
        if ask.base64 {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            buf.push('"');
            push_base64(&mut buf, &bytes);
            buf.push('"');
        } else {
            buf.push('[');
            for (j, v) in values.iter().enumerate() {
                if j > 0 {
                    buf.push(',');
                }
                let _ = write!(buf, "{v}");
            }
            buf.push(']');
        }
        buf.push('}');
    }
    buf.push_str("],\"model\":");
    push_json_str(&mut buf, ex.model);
    let _ = write!(
        buf,
        ",\"usage\":{{\"prompt_tokens\":{p},\"total_tokens\":{p}}},\"created\":{}}}",
        unix_secs(ex.now),
        p = ex.prompt_tokens
    );
    buf
}

/// Standard base64 with padding (RFC 4648 §4).
fn push_base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = String::new();
            push_base64(&mut out, input.as_bytes());
            assert_eq!(out, expected, "{input}");
        }
    }

    #[test]
    fn one_vector_per_input_and_the_same_text_gets_the_same_vector() {
        let ask = EmbeddingAsk::read(Some(&json!(["a", "b", "a"])), Some(4), None).unwrap();
        assert_eq!(ask.inputs.len(), 3);
        assert_eq!(ask.inputs[0], ask.inputs[2]);
        assert_ne!(ask.inputs[0], ask.inputs[1]);
        let v = vector(ask.inputs[0], 4);
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        // A token array is one input; an array of them, one each.
        let tokens = EmbeddingAsk::read(Some(&json!([1, 2, 3])), None, None).unwrap();
        assert_eq!(tokens.inputs.len(), 1);
        assert_eq!(tokens.dimensions, DEFAULT_DIMENSIONS);
        let batches = EmbeddingAsk::read(Some(&json!([[1, 2], [3]])), None, None).unwrap();
        assert_eq!(batches.inputs.len(), 2);
        assert!(EmbeddingAsk::read(None, None, None).is_none());
        assert!(EmbeddingAsk::read(Some(&json!([])), None, None).is_none());
        assert!(EmbeddingAsk::read(Some(&json!({"text": "a"})), None, None).is_none());
    }
}
