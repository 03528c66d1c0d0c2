//! [`KeepFirst`]: a body's data buffer cut after its first bytes.

use std::collections::VecDeque;

use bytes::buf::{Chain, Take};
use bytes::{Buf, Bytes, BytesMut};

/// A body's data buffer that can keep only its first bytes.
///
/// [`ResponseBody`](super::ResponseBody) needs it for one case: a frame
/// that carries complete events and then an in-band error event, when the
/// stream's [`Transcript`](super::Transcript) is kept. The events before
/// the error reach the caller, the error event does not (see
/// [`ResponseBody`'s docs](super::ResponseBody)), so the frame is cut where
/// the error event starts. Nothing is cut on a healthy stream.
///
/// Implemented for the buffers bodies hand out: [`Bytes`] (hyper, reqwest,
/// axum and tonic bodies; cut without a copy), [`BytesMut`], `&[u8]`,
/// `VecDeque<u8>`, and [`Chain`] and [`Take`] of those. Implement it for a
/// body's own data type to wrap that body.
///
/// ```
/// use bytes::{Buf, Bytes};
/// use tower_llm_classify::stream::KeepFirst;
///
/// let data = Bytes::from_static(b"data: {}\n\n").chain(Bytes::from_static(b"event: error\n"));
/// let kept = data.keep_first(10);
/// assert_eq!(kept.chunk(), b"data: {}\n\n");
/// assert_eq!(kept.remaining(), 10);
/// ```
pub trait KeepFirst: Buf + Sized {
    /// The first `len` remaining bytes (all of them when there are fewer).
    fn keep_first(self, len: usize) -> Self;
}

impl KeepFirst for Bytes {
    fn keep_first(mut self, len: usize) -> Self {
        self.truncate(len);
        self
    }
}

impl KeepFirst for BytesMut {
    fn keep_first(mut self, len: usize) -> Self {
        self.truncate(len);
        self
    }
}

impl KeepFirst for &[u8] {
    fn keep_first(self, len: usize) -> Self {
        &self[..len.min(self.len())]
    }
}

impl KeepFirst for VecDeque<u8> {
    fn keep_first(mut self, len: usize) -> Self {
        self.truncate(len);
        self
    }
}

impl<T: KeepFirst, U: KeepFirst> KeepFirst for Chain<T, U> {
    fn keep_first(self, len: usize) -> Self {
        let (first, second) = self.into_inner();
        let in_first = first.remaining();
        let second = second.keep_first(len.saturating_sub(in_first));
        first.keep_first(len).chain(second)
    }
}

impl<T: Buf> KeepFirst for Take<T> {
    fn keep_first(mut self, len: usize) -> Self {
        let limit = self.limit().min(len);
        self.set_limit(limit);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept<B: KeepFirst>(data: B, len: usize) -> Vec<u8> {
        let mut kept = data.keep_first(len);
        let mut out = vec![0; kept.remaining()];
        kept.copy_to_slice(&mut out);
        out
    }

    #[test]
    fn every_buffer_keeps_exactly_its_first_bytes_or_all_when_there_are_fewer() {
        let whole = b"hello, world";
        for len in [0, 1, 5, 7, 12, 13, 100] {
            let expected = &whole[..len.min(whole.len())];
            assert_eq!(kept(Bytes::from_static(whole), len), expected);
            assert_eq!(kept(BytesMut::from(&whole[..]), len), expected);
            assert_eq!(kept(&whole[..], len), expected);
            assert_eq!(kept(VecDeque::from(whole.to_vec()), len), expected);
            let chain = Bytes::from_static(&whole[..7]).chain(Bytes::from_static(&whole[7..]));
            assert_eq!(kept(chain, len), expected, "chain, {len}");
            assert_eq!(kept(Bytes::from_static(whole).take(100), len), expected);
        }
        let take = Bytes::from_static(whole).take(5);
        assert_eq!(kept(take, 7), b"hello", "a take keeps its own limit");
    }
}
