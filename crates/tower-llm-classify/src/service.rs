//! [`Classify`]: the service.

use std::any::Any;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::error::BoxError;
use crate::future::ResponseFuture;
use crate::layer::{ClassifyLayer, Config};
use crate::stream::{CaptureTranscript, OutcomeHook, ResponseBody};
use crate::{LlmError, Provider, RequestMeta};

/// Classifies the outcome of every call to the inner service.
///
/// - A success (status below 400) is returned with its body wrapped in a
///   [`ResponseBody`], which passes frames through untouched and, for SSE and
///   NDJSON streams, watches for in-band errors and abnormal ends.
/// - An error status has its body read up to the limit and becomes
///   `Err(`[`LlmError`]`)` carrying the classification, the head and the bytes.
/// - A service error becomes an `LlmError` classified from its source chain.
///
/// Built by [`ClassifyLayer`].
#[derive(Clone, Debug)]
pub struct Classify<S> {
    inner: S,
    config: Config,
}

impl<S> Classify<S> {
    /// Wraps `inner` with the configuration of `layer`.
    pub fn new(inner: S, layer: ClassifyLayer) -> Self {
        Classify {
            inner,
            config: layer.config,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Classify<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ReqBody: 'static,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = LlmError;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(LlmError::from_source)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let mut meta = request_meta(&mut request, self.config.provider);
        meta.capture_transcript = self.config.capture_transcripts
            || request.extensions().get::<CaptureTranscript>().is_some();
        let hook = request.extensions_mut().remove::<OutcomeHook>();
        let future = self.inner.call(request);
        ResponseFuture::new(future, meta, hook, self.config)
    }
}

/// What the future needs of the request's metadata (all `Copy`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallMeta {
    pub(crate) provider: Provider,
    pub(crate) dialect: crate::stream::Dialect,
    /// Whether a streamed answer's scan keeps a transcript.
    pub(crate) capture_transcript: bool,
}

/// Reads the request's [`RequestMeta`], computing and inserting it when no
/// outer layer did.
fn request_meta<B: 'static>(request: &mut Request<B>, provider: Option<Provider>) -> CallMeta {
    if let Some(meta) = request.extensions().get::<RequestMeta>() {
        return CallMeta {
            provider: provider.unwrap_or(meta.provider),
            dialect: meta.dialect,
            capture_transcript: false,
        };
    }
    let body = peek_body(request.body());
    let provider = provider.unwrap_or_else(|| Provider::detect(request.uri()));
    let meta = RequestMeta::with_provider(
        provider,
        request.uri(),
        request.headers(),
        body.as_ref().map(Peeked::as_slice),
    );
    let call = CallMeta {
        provider: meta.provider,
        dialect: meta.dialect,
        capture_transcript: false,
    };
    request.extensions_mut().insert(meta);
    call
}

impl RequestMeta {
    /// The request's `RequestMeta`: the one an outer layer inserted, or one
    /// computed now (from the URI, the headers and, for bodies whose bytes
    /// can be seen without consuming them — `Full<Bytes>`, `Bytes`,
    /// `String`, `Vec<u8>` — the JSON body) and inserted, so that no layer
    /// below parses the body again.
    pub fn get_or_insert<B: 'static>(request: &mut Request<B>) -> &RequestMeta {
        let computed = match request.extensions().get::<RequestMeta>() {
            Some(_) => None,
            None => {
                let body = peek_body(request.body());
                Some(RequestMeta::from_request(
                    request.uri(),
                    request.headers(),
                    body.as_ref().map(Peeked::as_slice),
                ))
            }
        };
        let extensions = request.extensions_mut();
        match computed {
            Some(meta) => extensions.get_or_insert_with(|| meta),
            None => extensions.get_or_insert_with(|| {
                RequestMeta::from_request(&http::Uri::default(), &http::HeaderMap::new(), None)
            }),
        }
    }
}

/// A request body's bytes, seen without consuming the body.
pub(crate) enum Peeked<'a> {
    Slice(&'a [u8]),
    Shared(Bytes),
}

impl Peeked<'_> {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Peeked::Slice(slice) => slice,
            Peeked::Shared(bytes) => bytes,
        }
    }
}

/// The bytes of a request body whose type lets us see them without consuming
/// it: `Bytes`, `String`, `Vec<u8>`, `&'static str`, `&'static [u8]`, and
/// `http_body_util::Full<Bytes>` (cloned by refcount and polled once).
pub(crate) fn peek_body<B: 'static>(body: &B) -> Option<Peeked<'_>> {
    let any = body as &dyn Any;
    if let Some(bytes) = any.downcast_ref::<Bytes>() {
        return Some(Peeked::Slice(bytes));
    }
    if let Some(text) = any.downcast_ref::<String>() {
        return Some(Peeked::Slice(text.as_bytes()));
    }
    if let Some(vec) = any.downcast_ref::<Vec<u8>>() {
        return Some(Peeked::Slice(vec));
    }
    if let Some(text) = any.downcast_ref::<&'static str>() {
        return Some(Peeked::Slice(text.as_bytes()));
    }
    if let Some(bytes) = any.downcast_ref::<&'static [u8]>() {
        return Some(Peeked::Slice(bytes));
    }
    if let Some(full) = any.downcast_ref::<http_body_util::Full<Bytes>>() {
        // Full yields its one frame at once; polling a clone costs a refcount.
        let mut clone = full.clone();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(Some(Ok(frame))) = std::pin::Pin::new(&mut clone).poll_frame(&mut cx)
            && let Ok(data) = frame.into_data()
        {
            return Some(Peeked::Shared(data));
        }
        return Some(Peeked::Slice(&[]));
    }
    None
}
