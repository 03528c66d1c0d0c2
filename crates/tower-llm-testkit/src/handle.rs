//! What each request gets: read, checked as a provider checks it, then
//! answered as the fault plan says.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::answer::{Answering, answer};
use crate::api::{Api, Exchange};
use crate::body::{ConnState, Cut, SimBody};
use crate::delay::key;
use crate::embeddings::EmbeddingAsk;
use crate::failure::Failure;
use crate::fault::Action;
use crate::prefill::{LastMessage, PrefillFields, PrefillMode, RequestPrefill, answer_start};
use crate::ratelimit::Admission;
use crate::record::{Counters, RecordedRequest};
use crate::respond::{
    authorized, error_reply_response, error_response, health, missing_model, not_found,
};
use crate::server::Shared;

/// The fields of a request body the simulator looks at.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(borrow, default)]
    messages: LastMessage<'a>,
    #[serde(default)]
    continue_final_message: Option<bool>,
    #[serde(default)]
    add_generation_prompt: Option<bool>,
    /// Embeddings' (and Responses') input; read for embeddings only.
    #[serde(default)]
    input: Option<serde_json::Value>,
    #[serde(borrow, default)]
    encoding_format: Option<Cow<'a, str>>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// The output asked for, counted against a token limit: Chat
    /// Completions' and Messages' `max_tokens`, `max_completion_tokens`
    /// (Chat Completions since o1), Responses' `max_output_tokens`. Read
    /// as any JSON value, so that a malformed one stays the provider's
    /// business, not a parse error here.
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_output_tokens: Option<serde_json::Value>,
}

impl Fields<'_> {
    /// The output limit the request asked for, if a whole number.
    fn max_output(&self) -> Option<u64> {
        [
            &self.max_completion_tokens,
            &self.max_output_tokens,
            &self.max_tokens,
        ]
        .into_iter()
        .find_map(|v| v.as_ref().and_then(serde_json::Value::as_u64))
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

type Reply = Result<Response<SimBody>, Cut>;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
    request: Request<Incoming>,
) -> Reply {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if path == "/health" {
        return Ok(health(&shared, &parts.method));
    }
    let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
    let config = &shared.config;
    let seed = config.seed;
    // Unique across simulators of one process, repeatable within one.
    let request_id = format!(
        "req_{:016x}{:016x}",
        key(seed ^ config.instance, index, 4),
        key(seed, index, 5)
    );
    let now = SystemTime::now();
    let api = Api::from_path(path);
    Counters::bump(&shared.counters.requests);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(path, |p| p.as_str())
        .to_owned();
    let record = |body: Bytes| {
        let recorder = &shared.recorder;
        let headers = parts.headers.clone();
        recorder.enabled().then(|| {
            RecordedRequest::new(
                index,
                parts.method.clone(),
                path_and_query.clone(),
                headers,
                body,
            )
        })
    };

    // Read the whole body, as a provider does before answering; refuse an
    // announced length over the limit without reading it.
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = announced.is_some_and(|len| len > config.max_body as u64);
    let body = if too_large {
        None
    } else {
        match http_body_util::Limited::new(body, config.max_body)
            .collect()
            .await
        {
            Ok(collected) => Some(collected.to_bytes()),
            Err(error)
                if error
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                None
            }
            // The client went away mid-body.
            Err(_) => return Err(Cut),
        }
    };
    let Some(body) = body else {
        shared.recorder.push_opt(record(Bytes::new()));
        let ex = exchange(
            api.unwrap_or(Api::OpenAiChat),
            "",
            &request_id,
            now,
            0,
            false,
        );
        return Ok(error_response(&shared, &ex, &Failure::Status(413), None));
    };
    let mut record = record(body.clone());

    let Some(api) = api else {
        shared.recorder.push_opt(record);
        return Ok(not_found(&shared, &parts.method, path, &request_id));
    };
    let mut fields = serde_json::from_slice::<Fields<'_>>(&body);
    let mut prefill_fields = match fields.as_mut() {
        Ok(f) => PrefillFields {
            last: std::mem::take(&mut f.messages),
            continue_final_message: f.continue_final_message,
            add_generation_prompt: f.add_generation_prompt,
        },
        Err(_) => PrefillFields::default(),
    };
    let prefill = prefill_fields.prefill();
    let prompt_tokens = (body.len() as u64).div_ceil(4);
    let (model, stream, include_usage) = match &fields {
        Ok(f) => (
            f.model.as_deref().unwrap_or_default(),
            api.streams() && f.stream.unwrap_or(api.streams_by_default()),
            f.stream_options.as_ref().is_some_and(|o| o.include_usage),
        ),
        Err(_) => ("", false, false),
    };
    let embedding = match (&fields, api) {
        (Ok(f), Api::OpenAiEmbeddings) => {
            EmbeddingAsk::read(f.input.as_ref(), f.dimensions, f.encoding_format.as_deref())
        }
        _ => None,
    };
    let mut ex = exchange(api, model, &request_id, now, prompt_tokens, include_usage);
    ex.embedding = embedding.as_ref();
    if let Some(record) = record.as_mut() {
        record.model = (!model.is_empty()).then(|| model.to_owned());
        record.stream = stream;
        record.prefill = prefill.as_ref().map(RequestPrefill::to_recorded);
    }

    // What a provider checks before it looks at load: method, key, body, size.
    let refusal = if parts.method != Method::POST {
        Some(Failure::Status(405))
    } else if !authorized(config, &parts.headers) {
        Some(Failure::Unauthorized)
    } else if fields.is_err() {
        Some(Failure::InvalidRequest(
            "We could not parse the JSON body of your request.".into(),
        ))
    } else if model.is_empty() {
        Some(Failure::InvalidRequest(missing_model(api).into()))
    } else if api == Api::OpenAiEmbeddings && embedding.is_none() {
        // OpenAI's words for an `input` that is missing or of no known shape.
        Some(Failure::InvalidRequest(
            "'input' is a required property and must be a string, an array of strings, or an array of token arrays".into(),
        ))
    } else if config
        .context_window
        .is_some_and(|window| prompt_tokens > window)
    {
        Some(Failure::ContextLengthExceeded)
    } else {
        None
    };
    if let Some(failure) = refusal {
        shared.recorder.push_opt(record);
        return Ok(error_response(&shared, &ex, &failure, None));
    }

    // Rate limits: a request over them is refused before it takes a slot;
    // every other answer says what is left.
    let max_output = fields.as_ref().ok().and_then(Fields::max_output);
    let usage = match config.rate_window.as_ref().map(|window| {
        let cost = crate::ratelimit::cost(prompt_tokens, max_output);
        window.admit(tokio::time::Instant::now(), cost)
    }) {
        None => None,
        Some(Admission::Admitted(usage)) => Some(usage),
        Some(Admission::Refused(usage, wait)) => {
            shared.recorder.push_opt(record);
            let failure =
                wait.map_or_else(Failure::rate_limited_without_hint, Failure::rate_limited);
            let mut response = error_response(&shared, &ex, &failure, None);
            usage.write(api.family(), response.headers_mut(), now);
            return Ok(response);
        }
    };
    let stamp = |mut response: Response<SimBody>| {
        if let Some(usage) = usage {
            usage.write(api.family(), response.headers_mut(), now);
        }
        response
    };

    // Load: wait for a slot, or be shed without reaching the plan.
    let (slot, service_time) = match shared.gate.admit().await {
        Ok(admitted) => admitted,
        Err(_) => {
            Counters::bump(&shared.counters.shed);
            if let Some(record) = record.as_mut() {
                record.shed = true;
            }
            shared.recorder.push_opt(record);
            return Ok(error_response(&shared, &ex, &Failure::Overloaded, None));
        }
    };
    let (fault, per_request) = shared.next_fault(&body);
    // The request's draws: by arrival, or by the request itself under a
    // plan drawn per request.
    let draw = per_request.unwrap_or(index);
    if let Some(record) = record.as_mut() {
        record.fault = Some(fault.clone());
    }
    shared.recorder.push_opt(record);

    // Latency is spent in the slot: a slow provider is slow while busy. A
    // whole answer's head waits for its first token too (and all the rest).
    let first_token = match &fault.action {
        Action::Answer(shape) => shape.first_token.sample(key(seed, draw, 7)),
        _ => Duration::ZERO,
    };
    let wait = shared
        .latency()
        .sample(key(seed, draw, 1))
        .saturating_add(fault.latency.sample(key(seed, draw, 2)))
        .saturating_add(service_time.sample(key(seed, draw, 3)))
        .saturating_add(if stream { Duration::ZERO } else { first_token });
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }

    // A provider validates a request before it answers: a prefill's 400
    // replaces whatever the fault would do.
    let mode = fault.prefill.unwrap_or_else(|| config.prefill.get(api));
    let start = match answer_start(api, mode, &prefill_fields, prefill.as_ref(), &config.reply) {
        Ok(start) => start,
        Err(refusal) => {
            Counters::bump(&shared.counters.prefill_refused);
            let reply = refusal.render(&ex);
            return Ok(stamp(error_reply_response(&shared, &ex, reply, Some(slot))));
        }
    };

    match &fault.action {
        Action::Stall => {
            Counters::bump(&shared.counters.stalled);
            let _slot = slot;
            std::future::pending::<()>().await;
            Err(Cut)
        }
        Action::Reset => {
            Counters::bump(&shared.counters.dropped);
            conn.reset.store(true, Ordering::Release);
            Err(Cut)
        }
        Action::Close => {
            Counters::bump(&shared.counters.dropped);
            Err(Cut)
        }
        Action::Fail(failure) => Ok(stamp(error_response(&shared, &ex, failure, Some(slot)))),
        Action::Raw(raw) => {
            let counter = if raw.status.is_success() {
                &shared.counters.answered
            } else {
                &shared.counters.errors
            };
            Counters::bump(counter);
            // Verbatim: not even a request id is added.
            let mut response = Response::new(SimBody::full(raw.body.clone(), Some(slot)));
            *response.status_mut() = raw.status;
            *response.headers_mut() = raw.headers.clone();
            Ok(response)
        }
        Action::Answer(shape) => {
            let how = Answering {
                shape,
                stream,
                continues: prefill.is_some() && mode == PrefillMode::Continue,
                start,
                took: wait,
                first_token,
                delay_seed: key(seed, draw, 6),
            };
            Ok(stamp(answer(&shared, &ex, how, conn, slot)))
        }
    }
}

fn exchange<'a>(
    api: Api,
    model: &'a str,
    request_id: &'a str,
    now: SystemTime,
    prompt_tokens: u64,
    include_usage: bool,
) -> Exchange<'a> {
    Exchange {
        api,
        model,
        request_id,
        now,
        prompt_tokens,
        include_usage,
        embedding: None,
    }
}
