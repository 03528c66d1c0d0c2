//! [`ResponseFuture`]: the future of [`Classify`](crate::Classify).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::error::BoxError;
use crate::layer::Config;
use crate::service::CallMeta;
use crate::stream::OutcomeGuard;
use crate::stream::{
    EventScanner, Framing, OutcomeHook, ResponseBody, StreamOutcome, StreamProgress,
};
use crate::{LlmError, classify_grpc, classify_response};

pin_project! {
    /// The response future of [`Classify`](crate::Classify): a named state
    /// machine, no boxing.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        meta: CallMeta,
        guard: OutcomeGuard,
        config: Config,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling { #[pin] future: F },
        ReadingErrorBody {
            head: Option<http::response::Parts>,
            #[pin] body: B,
            bytes: BytesMut,
            truncated: bool,
        },
        Done,
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(
        future: F,
        meta: CallMeta,
        hook: Option<OutcomeHook>,
        config: Config,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            meta,
            guard: OutcomeGuard::new(hook),
            config,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, LlmError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let response = match ready!(future.poll(cx)) {
                        Ok(response) => response,
                        Err(error) => {
                            let mut error = LlmError::from_source(error);
                            if error.classification().provider() == crate::Provider::Unknown {
                                let c = error.classification_mut();
                                *c = c.clone().with_provider(this.meta.provider);
                            }
                            this.guard
                                .report(StreamOutcome::Failed(error.classification()));
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    };
                    let status = response.status();
                    let content_type = response.headers().get(http::header::CONTENT_TYPE);
                    // gRPC's trailers-only error: a 200 whose head carries grpc-status.
                    let grpc_failed = status.is_success()
                        && content_type
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
                        && classify_grpc(response.headers()).is_some();
                    if status.as_u16() < 400 && !grpc_failed {
                        let framing = content_type
                            .filter(|_| this.config.scan_streams)
                            .and_then(Framing::from_header_value);
                        let guard = std::mem::take(this.guard);
                        this.state.set(State::Done);
                        let response = match framing {
                            None => response
                                .map(|body| ResponseBody::new(body, guard, this.meta.provider)),
                            Some(framing) => {
                                scanned(response, framing, *this.meta, this.config, guard)
                            }
                        };
                        return Poll::Ready(Ok(response));
                    }
                    let (head, body) = response.into_parts();
                    let hint = body.size_hint().upper().unwrap_or(4096);
                    let capacity = usize::try_from(hint)
                        .unwrap_or(usize::MAX)
                        .min(this.config.error_body_limit);
                    this.state.set(State::ReadingErrorBody {
                        head: Some(head),
                        body,
                        bytes: BytesMut::with_capacity(capacity),
                        truncated: false,
                    });
                }
                StateProj::ReadingErrorBody {
                    head,
                    mut body,
                    bytes,
                    truncated,
                } => {
                    let limit = this.config.error_body_limit;
                    loop {
                        if bytes.len() >= limit || body.is_end_stream() {
                            *truncated |= bytes.len() >= limit && !body.is_end_stream();
                            break;
                        }
                        match ready!(body.as_mut().poll_frame(cx)) {
                            None => break,
                            // The status alone still classifies; a broken
                            // error body does not hide it.
                            Some(Err(_)) => break,
                            Some(Ok(frame)) => {
                                if let Ok(mut data) = frame.into_data() {
                                    while data.has_remaining() {
                                        let room = limit - bytes.len();
                                        if room == 0 {
                                            *truncated = true;
                                            break;
                                        }
                                        let chunk = data.chunk();
                                        let take = chunk.len().min(room);
                                        bytes.extend_from_slice(&chunk[..take]);
                                        data.advance(take);
                                    }
                                }
                            }
                        }
                    }
                    let Some(head) = head.take() else {
                        this.state.set(State::Done);
                        continue;
                    };
                    let body_bytes: Bytes = std::mem::take(bytes).freeze();
                    let truncated = *truncated;
                    let classification = if head.status.is_success() {
                        // A trailers-only gRPC error.
                        classify_grpc(&head.headers)
                            .unwrap_or_else(|| {
                                crate::Classification::new(crate::ErrorKind::Unknown)
                            })
                            .with_status(head.status)
                            .with_provider(this.meta.provider)
                    } else {
                        classify_response(
                            this.meta.provider,
                            head.status,
                            &head.headers,
                            &body_bytes,
                            SystemTime::now(),
                        )
                        .with_provider(this.meta.provider)
                    };
                    this.guard.report(StreamOutcome::Failed(&classification));
                    this.state.set(State::Done);
                    let error =
                        LlmError::new(classification).with_response(head, body_bytes, truncated);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => {
                    return Poll::Ready(Err(LlmError::new(
                        crate::Classification::new(crate::ErrorKind::Unknown)
                            .with_message("ResponseFuture polled after completion"),
                    )));
                }
            }
        }
    }
}

/// A streamed response, its body wrapped to be scanned, and the
/// [`StreamProgress`] of the scan (and its transcript, when one is kept)
/// published in its extensions for the layers above: the stream is
/// scanned once, here.
fn scanned<B>(
    response: Response<B>,
    framing: Framing,
    meta: CallMeta,
    config: &Config,
    guard: OutcomeGuard,
) -> Response<ResponseBody<B>> {
    let (mut head, body) = response.into_parts();
    // The stream may not keep the length its head declares (a buffering
    // proxy may send one): a failure found in it ends it with an error
    // event the upstream never sent, a malformed event is withheld, and a
    // layer above may continue it with another target's content. A server
    // that framed the answer by the upstream's length would cut the
    // caller's stream short or abort it: the answer goes out unframed.
    head.headers.remove(http::header::CONTENT_LENGTH);
    let mut scanner = EventScanner::new(framing, meta.dialect, meta.provider)
        .require_terminal_event(config.require_terminal_event);
    if meta.capture_transcript {
        scanner = scanner.capture_transcript();
    }
    // Streams can fail after the head: keep its request id (a refcount,
    // not a copy) for that case.
    let request_id = meta
        .provider
        .request_id_headers()
        .iter()
        .find_map(|name| head.headers.get(*name))
        .cloned();
    let progress = StreamProgress::default();
    head.extensions.insert(progress.clone());
    if let Some(transcript) = scanner.transcript() {
        head.extensions.insert(transcript.clone());
    }
    let body = ResponseBody::scanned(
        body,
        scanner,
        config.idle_timeout,
        guard,
        meta.provider,
        request_id,
        progress,
    );
    Response::from_parts(head, body)
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}
