//! The response body: a failure after content reached the caller is
//! continued when a target can send the rest, else a stream-incomplete
//! error — never a silent switch of provider that repeats or loses text.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_llm_classify::{ErrorKind, LlmError, Phase};

use crate::continuation::Splice;
use crate::continuation::resume::{Delivered, FirstDelivered, RestFuture, Resumable};
use crate::group::Tracker;

pin_project! {
    /// The served target's body. A mid-stream failure comes out as an
    /// [`LlmError`] of kind stream-incomplete, the original in its source
    /// chain: the answer the caller holds is cut — unless the fallback was
    /// built to continue streams and a target sends the rest, which is
    /// then spliced in (see [`continuation`](crate::continuation)).
    pub struct FallbackBody<B> {
        #[pin]
        inner: B,
        // Boxed: only a stream that may be continued pays for it.
        resume: Option<Box<ResumeState<B>>>,
        // The served member of a group: in flight until this body ends
        // (is dropped), timed to its first content.
        tracker: Option<Tracker>,
    }
}

/// A served stream's way to its rest.
struct ResumeState<B> {
    resumable: Box<dyn Resumable<B>>,
    /// What the caller held when the first segment broke (read from
    /// Classify's transcript of it).
    first: FirstDelivered,
    /// What the caller held when the segment being read started.
    delivered: Option<Delivered>,
    /// The failure that broke the first segment: what the caller learns
    /// if no rest comes.
    original: Option<LlmError>,
    asking: Option<RestFuture<B>>,
    splice: Option<Splice>,
    out: Vec<u8>,
}

impl<B> FallbackBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        FallbackBody {
            inner,
            resume: None,
            tracker: None,
        }
    }

    /// This body, counting `tracker`'s call in flight until it ends.
    pub(crate) fn tracked(mut self, tracker: Tracker) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// A body whose failure after content is continued through
    /// `resumable`, `first` telling what the caller held.
    pub(crate) fn resumable(
        inner: B,
        resumable: Box<dyn Resumable<B>>,
        first: FirstDelivered,
    ) -> Self {
        FallbackBody {
            inner,
            resume: Some(Box::new(ResumeState {
                resumable,
                first,
                delivered: None,
                original: None,
                asking: None,
                splice: None,
                out: Vec::new(),
            })),
            tracker: None,
        }
    }

    /// The inner body (the segment being read).
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> std::fmt::Debug for FallbackBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackBody")
            .field("resumable", &self.resume.is_some())
            .finish_non_exhaustive()
    }
}

/// The error the caller gets for a stream cut after content: kind
/// stream-incomplete, `cause` (what broke it) in the source chain.
fn incomplete(cause: LlmError) -> LlmError {
    let c = cause.classification().clone();
    let message = format!(
        "the answer was cut after content reached the caller ({})",
        c.kind()
    );
    let incomplete = c
        .with_kind(ErrorKind::StreamIncomplete)
        .with_phase(Phase::MidStream)
        .with_message(&message);
    LlmError::new(incomplete).with_source(cause)
}

impl<B> Body for FallbackBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<LlmError>,
{
    type Data = Bytes;
    type Error = LlmError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, LlmError>>> {
        let mut this = self.project();
        let Some(state) = this.resume.as_deref_mut() else {
            let polled = this
                .inner
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|e| incomplete(e.into()))));
            if polled.is_ready()
                && let Some(tracker) = this.tracker.as_mut()
            {
                tracker.on_frame();
            }
            return polled;
        };
        if let Some(tracker) = this.tracker.as_mut() {
            tracker.on_frame();
        }
        loop {
            if let Some(asking) = state.asking.as_mut() {
                let answered = ready!(asking.as_mut().poll(cx));
                state.asking = None;
                match answered {
                    Ok((index, response, splice, tracker)) => {
                        state.resumable.continued_by(index);
                        // The broken segment's call has ended; the rest's
                        // counts now, on its own target.
                        *this.tracker = tracker;
                        this.inner.set(response.into_body());
                        state.splice = Some(splice);
                        continue;
                    }
                    Err(_) => return Poll::Ready(Some(Err(state.give_up()))),
                }
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Some(splice) = state.splice.as_mut() else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    let frame = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers of the rest are the rest's own.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    state.out.clear();
                    if let Err(error) = splice.feed(&frame, &mut state.out) {
                        tracing::info!(target: crate::TRACING_TARGET, %error, "the rest could not be spliced");
                        return Poll::Ready(Some(Err(state.give_up())));
                    }
                    if !state.out.is_empty() {
                        let out = Bytes::from(std::mem::take(&mut state.out));
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Some(Err(error)) => {
                    let error: LlmError = error.into();
                    let delivered = match (state.splice.take(), state.delivered.take()) {
                        // A continuation broke too: the caller holds what
                        // it held before it, and what it handed on.
                        (Some(splice), Some(mut delivered)) => {
                            delivered.text.push_str(splice.emitted());
                            delivered.usage = splice.usage();
                            Some(delivered)
                        }
                        _ => (state.first)(),
                    };
                    let asked = delivered
                        .filter(|d| !d.text.is_empty())
                        .and_then(|d| state.resumable.resume(&error, &d).map(|a| (a, d)));
                    state.original.get_or_insert(error);
                    match asked {
                        Some((asking, delivered)) => {
                            state.delivered = Some(delivered);
                            state.asking = Some(asking);
                        }
                        None => return Poll::Ready(Some(Err(state.give_up()))),
                    }
                }
                None => {
                    if let Some(splice) = state.splice.as_mut() {
                        state.out.clear();
                        if splice.finish(&mut state.out).is_ok() && !state.out.is_empty() {
                            state.splice = None;
                            let out = Bytes::from(std::mem::take(&mut state.out));
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        state.splice = None;
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.resume {
            Some(state) if state.asking.is_some() || state.splice.is_some() => false,
            _ => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.resume {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

impl<B> ResumeState<B> {
    /// No rest: the caller learns what broke the stream first.
    fn give_up(&mut self) -> LlmError {
        self.asking = None;
        self.splice = None;
        let cause = self
            .original
            .take()
            .unwrap_or_else(|| LlmError::local(ErrorKind::Unknown, "the stream broke"));
        incomplete(cause)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use http::Response;
    use http_body_util::BodyExt;
    use tower_llm_classify::stream::Dialect;

    use super::*;
    use crate::continuation::Envelope;

    /// A segment: data frames, then an error or the end.
    struct Segment {
        frames: VecDeque<Result<Bytes, LlmError>>,
    }

    impl Segment {
        fn of(frames: Vec<Result<&'static str, ErrorKind>>) -> Segment {
            Segment {
                frames: frames
                    .into_iter()
                    .map(|f| {
                        f.map(|s: &'static str| Bytes::from_static(s.as_bytes()))
                            .map_err(|kind| LlmError::local(kind, "cut"))
                    })
                    .collect(),
            }
        }
    }

    impl Body for Segment {
        type Data = Bytes;
        type Error = LlmError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, LlmError>>> {
            Poll::Ready(self.frames.pop_front().map(|f| f.map(Frame::data)))
        }
    }

    /// What a script was asked: the failure and the text the caller held.
    type Asked = Arc<Mutex<Vec<(ErrorKind, String)>>>;

    /// Answers each ask with the next segment, recording what it was asked.
    struct Script {
        rests: VecDeque<Segment>,
        asked: Asked,
    }

    impl Resumable<Segment> for Script {
        fn resume(
            &mut self,
            failure: &LlmError,
            delivered: &Delivered,
        ) -> Option<RestFuture<Segment>> {
            self.asked
                .lock()
                .unwrap()
                .push((failure.kind(), delivered.text.clone()));
            let rest = self.rests.pop_front()?;
            let splice = Splice::new(
                Dialect::OpenAiChat,
                delivered.envelope.clone(),
                String::new(),
            )
            .unwrap();
            Some(Box::pin(std::future::ready(Ok((
                1,
                Response::new(rest),
                splice,
                None,
            )))))
        }

        fn continued_by(&mut self, _index: usize) {}
    }

    const FIRST: &str =
        "data: {\"id\":\"a\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    const ROLE: &str = "data: {\"id\":\"b\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    const REST: &str =
        "data: {\"id\":\"b\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n";
    const MORE: &str =
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"}}]}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn body(
        first: Segment,
        rests: Vec<Segment>,
        delivered: &'static str,
    ) -> (FallbackBody<Segment>, Asked) {
        let asked = Arc::default();
        let script = Script {
            rests: rests.into(),
            asked: Arc::clone(&asked),
        };
        let first_delivered = move || {
            Some(Delivered {
                text: delivered.to_owned(),
                envelope: Envelope {
                    id: Some("a".into()),
                    ..Envelope::default()
                },
                usage: Default::default(),
            })
        };
        (
            FallbackBody::resumable(first, Box::new(script), Box::new(first_delivered)),
            asked,
        )
    }

    async fn read(body: FallbackBody<Segment>) -> Result<String, LlmError> {
        let bytes = body.collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_stream_cut_after_content_is_continued_and_read_as_one_answer() {
        let first = Segment::of(vec![Ok(FIRST), Err(ErrorKind::Transport)]);
        let rest = Segment::of(vec![Ok(ROLE), Ok(REST), Ok(DONE)]);
        let (body, asked) = body(first, vec![rest], "Hel");
        let seen = read(body).await.unwrap();
        assert!(seen.starts_with(FIRST));
        assert!(!seen.contains("role"), "no second role chunk: {seen}");
        assert!(
            !seen.contains("\"id\":\"b\""),
            "the caller's id is kept: {seen}"
        );
        assert!(seen.contains("\"content\":\"lo\"") && seen.ends_with(DONE));
        assert_eq!(
            *asked.lock().unwrap(),
            [(ErrorKind::Transport, "Hel".to_owned())]
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_continuation_that_breaks_too_is_continued_from_all_the_caller_holds() {
        let first = Segment::of(vec![Ok(FIRST), Err(ErrorKind::Transport)]);
        let rest = Segment::of(vec![Ok(REST), Err(ErrorKind::Timeout)]);
        let more = Segment::of(vec![Ok(MORE), Ok(DONE)]);
        let (body, asked) = body(first, vec![rest, more], "Hel");
        let seen = read(body).await.unwrap();
        assert!(seen.contains("\"content\":\"lo\"") && seen.contains("\"content\":\"!\""));
        assert_eq!(
            *asked.lock().unwrap(),
            [
                (ErrorKind::Transport, "Hel".to_owned()),
                (ErrorKind::Timeout, "Hello".to_owned())
            ]
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn when_no_target_continues_the_caller_gets_the_original_failure() {
        let first = Segment::of(vec![Ok(FIRST), Err(ErrorKind::Transport)]);
        let (body, _) = body(first, vec![], "Hel");
        let error = read(body).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
        let cause = std::error::Error::source(&error)
            .and_then(|s| s.downcast_ref::<LlmError>())
            .unwrap();
        assert_eq!(
            cause.kind(),
            ErrorKind::Transport,
            "what broke the stream, not the refusal"
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_body_without_continuation_fails_as_before() {
        let first = Segment::of(vec![Ok(FIRST), Err(ErrorKind::Transport)]);
        let error = read(FallbackBody::new(first)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    }
}
