//! What every contender is to the harness: something that sends one chat
//! completion to a simulated provider and says what the caller got.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

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
        /// What the caller was told broke the answer, where its client
        /// says (tower-llm's error kind; the peers' transport error).
        cause: Option<String>,
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
    /// A limit on the wait for a stream's first content, where the
    /// scenario sets one (only contenders that have such a limit use it).
    pub(crate) first_content_timeout: Option<std::time::Duration>,
    /// Whether the primary can continue a broken answer from a prefill
    /// (false: it is like OpenAI's own API, which has no prefill).
    pub(crate) primary_continues: bool,
}

/// A contender whose caller gives up after `limit` (a scenario where an
/// upstream can fall silent forever: without it, a contender that never
/// gives up would never end the run).
pub(crate) struct WithDeadline {
    pub(crate) inner: Box<dyn Contender>,
    pub(crate) limit: std::time::Duration,
}

impl Contender for WithDeadline {
    fn call(&self, body: Bytes) -> Call<'_> {
        Box::pin(async move {
            tokio::time::timeout(self.limit, self.inner.call(body))
                .await
                .unwrap_or_else(|_| Outcome::Err {
                    status: None,
                    partial: String::new(),
                    cause: Some("the caller's deadline".to_owned()),
                })
        })
    }
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
                cause: None,
            };
        }
    };
    if status != 200 {
        return Outcome::Err {
            status: Some(status),
            partial: String::new(),
            cause: None,
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
                cause: None,
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
                    cause: None,
                },
            },
            Err(_) => Outcome::Err {
                status: Some(status),
                partial: String::new(),
                cause: None,
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

/// Reads a body frame by frame, so that what arrived before a failure is
/// kept (a broken stream's partial content) with the failure's text.
pub(crate) async fn read<B>(body: B) -> Result<Bytes, (Bytes, Option<String>)>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut all = BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    all.extend_from_slice(data);
                }
            }
            Err(error) => return Err((all.freeze(), Some(error.to_string()))),
        }
    }
    Ok(all.freeze())
}

/// The outcome of a body read to its end (`Ok`) or up to a failure (`Err`,
/// with what arrived before it and what the failure said).
pub(crate) fn finish(
    status: u16,
    body: Result<Bytes, (Bytes, Option<String>)>,
    stream: bool,
) -> Outcome {
    match body {
        Ok(bytes) => outcome_of(status, Ok(bytes), stream),
        Err((partial, cause)) => Outcome::Err {
            status: Some(status),
            partial: if stream {
                sse_content(&partial).0
            } else {
                String::new()
            },
            cause,
        },
    }
}
