//! Failures after the answer's content had started (phase mid-stream: a
//! stream that stalled until its idle timeout, or was cut): counted as
//! today by default; with `count_after_content(false)`, not counted, and a
//! half-open probe that ends so closes the breaker. Paused time, a
//! scripted upstream whose streams break after one content event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};
use tower_llm_circuit::{Circuit, CircuitConfig, CircuitLayer, CircuitState, WindowKind};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_test::mock;

const KEY: &str = "openai/gpt-4o";

/// A stream that sends one content event, then fails in `phase` (the
/// idle timeout's failure after content is a mid-stream timeout).
struct Breaks {
    sent: bool,
    phase: Phase,
}

impl Body for Breaks {
    type Data = Bytes;
    type Error = LlmError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, LlmError>>> {
        if !self.sent {
            self.sent = true;
            let event = r#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!("{event}\n\n"))))));
        }
        Poll::Ready(Some(Err(LlmError::new(
            Classification::new(ErrorKind::Timeout).with_phase(self.phase),
        ))))
    }
}

type Mock = mock::Mock<Request<Full<Bytes>>, Response<Breaks>>;
type Handle = mock::Handle<Request<Full<Bytes>>, Response<Breaks>>;

/// Opens after three failures in a row for 10 s; one probe.
fn circuit(count_after_content: bool) -> (Circuit<Mock>, Handle, CircuitLayer) {
    let layer = CircuitLayer::new(
        CircuitConfig::builder()
            .window(WindowKind::Count(20))
            .consecutive_failures(Some(3))
            .open_duration(Duration::from_secs(10), 1.0, Duration::from_secs(10))
            .open_jitter(0.0)
            .half_open_probes(1)
            .count_after_content(count_after_content)
            .build()
            .unwrap(),
    );
    let (mock, mut handle) = mock::pair();
    handle.allow(100);
    (layer.layer(mock), handle, layer)
}

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::from(r#"{"model":"gpt-4o","stream":true}"#))
        .unwrap()
}

/// One call whose stream breaks in `phase`, read to its failure.
async fn broken_stream(service: &mut Circuit<Mock>, handle: &mut Handle, phase: Phase) {
    let call = service.ready().await.unwrap().call(request());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Breaks { sent: false, phase }));
    let error = call.await.unwrap().into_body().collect().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn streams_that_break_after_content_open_the_breaker_only_while_counted() {
    for (counted, state) in [(true, CircuitState::Open), (false, CircuitState::Closed)] {
        let (mut service, mut handle, layer) = circuit(counted);
        for _ in 0..10 {
            if layer.handle().state(KEY) == Some(CircuitState::Open) {
                break;
            }
            broken_stream(&mut service, &mut handle, Phase::MidStream).await;
        }
        let key = &layer.handle().snapshot()[0];
        assert_eq!(key.state, state, "count_after_content({counted})");
        if !counted {
            assert_eq!((key.totals.calls, key.consecutive_failures), (0, 0));
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn streams_that_break_before_content_still_count_with_count_after_content_off() {
    let (mut service, mut handle, layer) = circuit(false);
    for _ in 0..3 {
        broken_stream(&mut service, &mut handle, Phase::AfterHeaders).await;
    }
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::Open));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_probe_whose_stream_breaks_after_content_closes_the_breaker_with_count_after_content_off()
{
    let (mut service, mut handle, layer) = circuit(false);
    for _ in 0..3 {
        broken_stream(&mut service, &mut handle, Phase::AfterHeaders).await;
    }
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::Open));
    tokio::time::advance(Duration::from_secs(10)).await;
    // The target answered and generated: it is up.
    broken_stream(&mut service, &mut handle, Phase::MidStream).await;
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::Closed));
}
