//! What every contender is to the harness: something that sends one chat
//! completion to a simulated provider and says what the caller got.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// What a caller ended up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A complete answer: HTTP 200, a whole JSON completion or a stream
    /// that reached its terminal event (`data: [DONE]`). `content` is the
    /// assistant text the caller received (for a stream, every
    /// `delta.content` in order), to check for lost or duplicated content.
    Ok { content: String },
    /// Anything else: an error status (with the status), a transport
    /// error, or a body that broke or ended early (`status` is then the
    /// head's status, if one came). `partial` is the content received
    /// before the failure (streams).
    Err {
        status: Option<u16>,
        partial: String,
    },
}

/// A boxed future of an outcome.
pub(crate) type Call<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One contender, built for one scenario run: its client and layers are
/// created once and shared by every call of the run.
pub(crate) trait Contender: Send + Sync {
    /// Sends `body` (an OpenAI chat completion request, `stream` true or
    /// false inside) as `POST {primary}/v1/chat/completions`, reads the
    /// whole answer and reports it.
    fn call(&self, body: Bytes) -> Call<'_>;
}

/// What a run gives a contender to build itself with.
pub(crate) struct Setup {
    /// The primary simulator's base URL (`http://127.0.0.1:PORT`).
    pub(crate) primary: String,
    /// A healthy backup's, where the scenario has one (only contenders
    /// that can fall back use it).
    pub(crate) backup: Option<String>,
    /// A limit on each attempt, where the scenario asks for one; each
    /// contender applies it the way its own stack does.
    pub(crate) attempt_timeout: Option<std::time::Duration>,
}

/// How to build a contender for a run.
pub(crate) type Build = fn(&Setup) -> Box<dyn Contender>;

/// Reads an answer's body into an outcome: JSON (`choices[0].message.content`)
/// or SSE (`data:` lines; complete only with `data: [DONE]`).
pub(crate) fn outcome_of(status: u16, body: Result<Bytes, ()>, stream: bool) -> Outcome {
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(()) => {
            return Outcome::Err {
                status: Some(status),
                partial: String::new(),
            };
        }
    };
    if status != 200 {
        return Outcome::Err {
            status: Some(status),
            partial: String::new(),
        };
    }
    if stream {
        let (content, done) = sse_content(&bytes);
        if done {
            Outcome::Ok { content }
        } else {
            Outcome::Err {
                status: Some(status),
                partial: content,
            }
        }
    } else {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(json) => match json["choices"][0]["message"]["content"].as_str() {
                Some(content) => Outcome::Ok {
                    content: content.to_owned(),
                },
                None => Outcome::Err {
                    status: Some(status),
                    partial: String::new(),
                },
            },
            Err(_) => Outcome::Err {
                status: Some(status),
                partial: String::new(),
            },
        }
    }
}

/// The assistant text of an OpenAI SSE stream, and whether it ended with
/// `data: [DONE]` and carried no error event.
pub(crate) fn sse_content(bytes: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(bytes);
    let mut content = String::new();
    let mut done = false;
    let mut failed = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            failed |= line.starts_with("event: error");
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(data) {
            if json.get("error").is_some_and(|e| !e.is_null()) {
                failed = true;
            }
            if let Some(piece) = json["choices"][0]["delta"]["content"].as_str() {
                content.push_str(piece);
            }
        }
    }
    (content, done && !failed)
}
