//! [`ReadAhead`]: the frames the first-content guard read before it handed
//! a response over, to be returned first.

use std::collections::VecDeque;

use bytes::Bytes;
use http_body::Frame;

/// Frames read ahead, in order. A whole answer usually arrives as one data
/// frame, which is kept inline; a queue is allocated only for a second
/// frame (a stream's role chunk, then its content) or for trailers.
#[derive(Debug, Default)]
pub(crate) enum ReadAhead {
    /// Nothing read ahead, or all of it returned.
    #[default]
    Empty,
    /// One data frame.
    Data(Bytes),
    /// Several frames, or trailers.
    Frames(VecDeque<Frame<Bytes>>),
}

impl ReadAhead {
    /// Adds `frame` after those read before it.
    pub(crate) fn push_back(&mut self, frame: Frame<Bytes>) {
        if let ReadAhead::Frames(frames) = self {
            frames.push_back(frame);
            return;
        }
        *self = match std::mem::take(self) {
            ReadAhead::Data(first) => {
                // The capacity a `VecDeque` takes at its first push anyway.
                let mut frames = VecDeque::with_capacity(4);
                frames.push_back(Frame::data(first));
                frames.push_back(frame);
                ReadAhead::Frames(frames)
            }
            _ => match frame.into_data() {
                Ok(data) => ReadAhead::Data(data),
                Err(trailers) => ReadAhead::Frames(VecDeque::from([trailers])),
            },
        };
    }

    /// The first frame not yet returned.
    pub(crate) fn pop_front(&mut self) -> Option<Frame<Bytes>> {
        match self {
            ReadAhead::Empty => None,
            ReadAhead::Data(_) => match std::mem::take(self) {
                ReadAhead::Data(data) => Some(Frame::data(data)),
                _ => None,
            },
            ReadAhead::Frames(frames) => frames.pop_front(),
        }
    }

    /// Whether every frame has been returned.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            ReadAhead::Empty => true,
            ReadAhead::Data(_) => false,
            ReadAhead::Frames(frames) => frames.is_empty(),
        }
    }

    /// The bytes of data not yet returned.
    pub(crate) fn data_len(&self) -> u64 {
        match self {
            ReadAhead::Empty => 0,
            ReadAhead::Data(data) => data.len() as u64,
            ReadAhead::Frames(frames) => frames
                .iter()
                .filter_map(Frame::data_ref)
                .map(|data| data.len() as u64)
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(frame: Option<Frame<Bytes>>) -> Option<Bytes> {
        frame.and_then(|f| f.into_data().ok())
    }

    #[test]
    fn one_data_frame_is_kept_inline() {
        let mut ahead = ReadAhead::default();
        ahead.push_back(Frame::data(Bytes::from_static(b"{}")));
        assert!(matches!(ahead, ReadAhead::Data(_)));
        assert_eq!(ahead.data_len(), 2);
        assert!(!ahead.is_empty());
        assert_eq!(data(ahead.pop_front()).as_deref(), Some(&b"{}"[..]));
        assert!(ahead.is_empty());
        assert!(ahead.pop_front().is_none());
    }

    #[test]
    fn a_second_frame_spills_to_a_queue_and_order_is_kept() {
        let mut ahead = ReadAhead::default();
        for chunk in [&b"a"[..], b"bc", b"def"] {
            ahead.push_back(Frame::data(Bytes::copy_from_slice(chunk)));
        }
        assert!(matches!(ahead, ReadAhead::Frames(_)));
        assert_eq!(ahead.data_len(), 6);
        assert_eq!(data(ahead.pop_front()).as_deref(), Some(&b"a"[..]));
        assert_eq!(ahead.data_len(), 5);
        assert_eq!(data(ahead.pop_front()).as_deref(), Some(&b"bc"[..]));
        assert_eq!(data(ahead.pop_front()).as_deref(), Some(&b"def"[..]));
        assert!(ahead.is_empty());
        assert!(ahead.pop_front().is_none());
    }

    #[test]
    fn trailers_are_kept_after_the_data_and_count_no_bytes() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut ahead = ReadAhead::default();
        ahead.push_back(Frame::trailers(trailers.clone()));
        assert_eq!(ahead.data_len(), 0);
        assert!(!ahead.is_empty());
        let popped = ahead.pop_front().and_then(|f| f.into_trailers().ok());
        assert_eq!(popped, Some(trailers));
        assert!(ahead.is_empty());
    }
}
