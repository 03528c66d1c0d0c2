//! What the caller holds of a stream, read from Classify's transcript of it.

use tower_llm_classify::stream::StreamTranscript;

use super::Envelope;
use super::resume::{Delivered, FirstDelivered};
use super::splice::Usage;

/// A reader of what the caller holds of the stream whose response carries
/// `extensions`: Classify's [`StreamTranscript`] of it (asked for with
/// `CaptureTranscript` on the request), `None` for a stream that cannot be
/// continued (a tool call in progress, several choices, log
/// probabilities).
pub(crate) fn reader(extensions: &http::Extensions) -> Option<FirstDelivered> {
    let transcript = extensions.get::<StreamTranscript>()?.clone();
    Some(Box::new(move || {
        transcript.read(|t| {
            t.is_continuable().then(|| Delivered {
                text: t.text().to_owned(),
                envelope: Envelope {
                    id: t.id().map(str::to_owned),
                    created: t.created(),
                    model: t.model().map(str::to_owned),
                    system_fingerprint: t.system_fingerprint().map(str::to_owned),
                    open_block: t.open_block(),
                    blocks: t.blocks(),
                },
                usage: t.usage().map_or_else(Usage::default, |u| Usage {
                    input: u.input_tokens.unwrap_or(0),
                    output: u.output_tokens.unwrap_or(0),
                }),
            })
        })
    }))
}
