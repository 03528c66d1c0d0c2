//! The text every healthy answer carries, cut into content events, and
//! where an answer to a prefilled request starts in it.

use std::sync::Arc;

/// The reply of a simulator: one text, and the byte offset where each of
/// its content events ends.
///
/// Every healthy answer carries this same text (the simulator's reply is
/// set once, by [`reply`](crate::SimulatorBuilder::reply) or
/// [`reply_tokens`](crate::SimulatorBuilder::reply_tokens)), so an answer
/// is a pure function of the request: an answer continued after a cut can
/// be compared byte for byte with an uncut one.
#[derive(Clone, Debug)]
pub(crate) struct ReplyText {
    text: Arc<str>,
    /// Exclusive end of each content event in `text`, ascending.
    ends: Arc<[usize]>,
}

impl ReplyText {
    /// The reply whose content events are `tokens`, in order (empty tokens
    /// are left out: they would be events without content).
    pub(crate) fn new<T: AsRef<str>>(tokens: impl IntoIterator<Item = T>) -> Self {
        let mut text = String::new();
        let mut ends = Vec::new();
        for token in tokens {
            let token = token.as_ref();
            if !token.is_empty() {
                text.push_str(token);
                ends.push(text.len());
            }
        }
        ReplyText {
            text: text.into(),
            ends: ends.into(),
        }
    }

    /// The whole reply.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// How many content events the whole reply has.
    pub(crate) fn event_count(&self) -> usize {
        self.ends.len()
    }

    /// Where the answer to a request prefilled with `prefill` starts: after
    /// the prefill when the reply starts with it (the rest of the reply,
    /// byte for byte), otherwise at 0 (the whole reply, as a model writes
    /// its answer after whatever text it was given).
    pub(crate) fn start_after(&self, prefill: &str) -> usize {
        if self.text.starts_with(prefill) {
            prefill.len()
        } else {
            0
        }
    }

    /// The content events of the reply from byte `start`: the rest of the
    /// event `start` falls in, if any of it is left, then every later one.
    /// `start` past the end gives no events.
    pub(crate) fn events_from(&self, start: usize) -> Tokens<'_> {
        let start = start.min(self.text.len());
        let next = self.ends.partition_point(|&end| end <= start);
        Tokens {
            text: &self.text,
            ends: &self.ends,
            next,
            pos: start,
        }
    }
}

/// The content events of (the rest of) a reply, in order.
#[derive(Clone, Debug)]
pub(crate) struct Tokens<'a> {
    text: &'a str,
    ends: &'a [usize],
    /// The next event to give out.
    next: usize,
    /// Where it starts.
    pos: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let end = *self.ends.get(self.next)?;
        // `pos` is a char boundary: the start of an event, or the end of a
        // prefill the reply starts with (a whole UTF-8 string, so it ends
        // on a boundary of the reply too).
        let token = self.text.get(self.pos..end)?;
        self.next += 1;
        self.pos = end;
        Some(token)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.ends.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Tokens<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> ReplyText {
        ReplyText::new(["Hello ", "wörld ", "again."])
    }

    #[test]
    fn the_whole_reply_is_every_event() {
        let reply = reply();
        assert_eq!(reply.text(), "Hello wörld again.");
        let events: Vec<_> = reply.events_from(0).collect();
        assert_eq!(events, ["Hello ", "wörld ", "again."]);
        assert_eq!(reply.events_from(0).len(), reply.event_count());
    }

    #[test]
    fn a_start_inside_an_event_gives_the_rest_of_it_first() {
        let reply = reply();
        let start = reply.start_after("Hello w");
        let events: Vec<_> = reply.events_from(start).collect();
        assert_eq!(events, ["örld ", "again."]);
        assert_eq!(reply.events_from(start).len(), 2);
    }

    #[test]
    fn a_start_between_events_gives_the_later_events() {
        let reply = reply();
        let events: Vec<_> = reply.events_from(reply.start_after("Hello ")).collect();
        assert_eq!(events, ["wörld ", "again."]);
        assert_eq!(reply.events_from(reply.text().len()).count(), 0);
        assert_eq!(reply.events_from(usize::MAX).count(), 0);
    }

    #[test]
    fn a_prefill_the_reply_does_not_start_with_gets_the_whole_reply() {
        let reply = reply();
        assert_eq!(reply.start_after("Goodbye"), 0);
        assert_eq!(reply.start_after("Hello wörld again. And more"), 0);
        assert_eq!(reply.start_after(""), 0);
    }

    #[test]
    fn every_cut_point_splits_the_reply_exactly() {
        let reply = reply();
        let text = reply.text();
        for (cut, _) in text.char_indices().chain([(text.len(), ' ')]) {
            let rest: String = reply.events_from(reply.start_after(&text[..cut])).collect();
            assert_eq!(format!("{}{rest}", &text[..cut]), text, "cut at {cut}");
        }
    }
}
