//! Prefill: a request that ends with the start of the assistant's answer
//! gets the rest of the reply, byte for byte, in every API; or the
//! provider's 400 when the simulator (or its fault) refuses prefill.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use tower_llm_testkit::{Api, Fault, FaultPlan, PrefillMarker, PrefillMode, Simulator};

const UNSUPPORTED: &str = "This model does not support assistant message prefill. The conversation must end with a user message.";

/// A chat request whose last message is the assistant's `prefill`, marked
/// as `marker` says.
fn prefilled(api: Api, stream: bool, prefill: &str, marker: PrefillMarker) -> String {
    let mut assistant = json!({"role": "assistant", "content": prefill});
    let mut body = json!({"model": "m", "stream": stream});
    match marker {
        PrefillMarker::PrefixFlag => assistant["prefix"] = json!(true),
        PrefillMarker::ContinueFinalMessage => {
            body["continue_final_message"] = json!(true);
            body["add_generation_prompt"] = json!(false);
        }
        _ => {}
    }
    body["messages"] = json!([{"role": "user", "content": "Say hello"}, assistant]);
    if api == Api::AnthropicMessages {
        body["max_tokens"] = json!(256);
    }
    body.to_string()
}

fn trailing(api: Api, stream: bool, prefill: &str) -> String {
    prefilled(api, stream, prefill, PrefillMarker::TrailingAssistant)
}

/// What a continuation sends for `delivered`: Anthropic refuses trailing
/// white space, so it is left out there (and comes back in the rest).
fn sendable(api: Api, delivered: &str) -> &str {
    match api {
        Api::AnthropicMessages => delivered.trim_end(),
        _ => delivered,
    }
}

#[tokio::test]
async fn a_prefilled_chat_stream_sends_only_the_rest_of_the_reply() {
    let sim = Simulator::start().await.unwrap();
    assert_eq!(
        sim.reply(),
        "This is a simulated reply from tower-llm-testkit."
    );
    let mut body: Value =
        serde_json::from_str(&trailing(Api::OpenAiChat, true, "This is a sim")).unwrap();
    body["stream_options"] = json!({"include_usage": true});
    let answer = send(&client(), &sim, Api::OpenAiChat, &body.to_string())
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let chunks: Vec<Value> = sse_data(answer.text())
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let deltas: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/content")?.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    // The rest of the word the prefill cut, then the later words.
    assert_eq!(deltas, ["ulated ", "reply ", "from ", "tower-llm-testkit."]);
    let roles = chunks
        .iter()
        .filter(|c| c.pointer("/choices/0/delta/role").is_some())
        .count();
    assert_eq!(roles, 1, "one role chunk, as in any answer");
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        4,
        "usage counts what was generated"
    );
    assert!(answer.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(sim.stats().prefilled, 1);
}

#[tokio::test]
async fn every_api_continues_a_prefill_whole_and_streamed() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    for api in Api::ALL {
        for stream in [true, false] {
            let answer = send(&client, &sim, api, &trailing(api, stream, "This is a"))
                .await
                .unwrap();
            assert_eq!(answer.status, 200, "{api} {stream}: {}", answer.text());
            assert_eq!(
                answer_text(api, stream, &answer),
                " simulated reply from tower-llm-testkit.",
                "{api} stream={stream}"
            );
        }
    }
}

#[tokio::test]
async fn an_uncut_reply_equals_the_prefix_plus_the_continued_rest() {
    // Multi-byte characters, escapes and white space of every kind, so that
    // cuts fall inside events, inside escapes and beside white space.
    let reply = "Héllo \"wörld\"\n\ttabs, 🦀 crabs\\ and\u{1} ends. ";
    let sim = Simulator::builder().reply(reply).start().await.unwrap();
    assert_eq!(sim.reply(), reply);
    let client = client();
    let markers = [
        PrefillMarker::TrailingAssistant,
        PrefillMarker::PrefixFlag,
        PrefillMarker::ContinueFinalMessage,
    ];
    let cuts: Vec<usize> = reply
        .char_indices()
        .map(|(i, _)| i)
        .chain([reply.len()])
        .collect();
    for api in Api::ALL {
        for stream in [true, false] {
            for (n, &cut) in cuts.iter().enumerate() {
                let prefix = sendable(api, &reply[..cut]);
                let marker = markers[n % markers.len()];
                let body = prefilled(api, stream, prefix, marker);
                let answer = send(&client, &sim, api, &body).await.unwrap();
                assert_eq!(answer.status, 200, "{api} cut {cut}: {}", answer.text());
                let rest = answer_text(api, stream, &answer);
                assert_eq!(
                    format!("{prefix}{rest}"),
                    reply,
                    "{api} stream={stream} cut at {cut} ({marker:?})"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_cut_stream_continued_from_what_was_delivered_is_the_uncut_reply() {
    // Cut after 40 of 60 content events, the continuation cut again after
    // 10 of the rest, the second continuation whole: one answer.
    let sim = Simulator::builder().reply_tokens(60).start().await.unwrap();
    let client = client();
    for api in Api::ALL {
        for first_cut in [1, 40] {
            sim.set_plan(FaultPlan::script([
                Fault::stream_drop_after(first_cut),
                Fault::stream_drop_after(10),
            ]));
            let mut delivered = String::new();
            loop {
                let body = if delivered.is_empty() {
                    chat_body(api, "m", true)
                } else {
                    trailing(api, true, sendable(api, &delivered))
                };
                let answer = send(&client, &sim, api, &body).await.unwrap();
                let sent = sendable(api, &delivered).len();
                delivered.truncate(sent);
                delivered.push_str(&streamed_text(api, answer.text()));
                if answer.body_error.is_none() {
                    break;
                }
            }
            assert_eq!(delivered, sim.reply(), "{api} cut after {first_cut}");
            let requests = sim.take_requests();
            assert_eq!(requests.len(), 3, "{api}");
            assert!(requests[0].prefill.is_none());
            let first = requests[1].prefill.as_ref().unwrap();
            let expected: String = (0..first_cut).map(|i| format!("token{i} ")).collect();
            assert_eq!(first.text, sendable(api, &expected), "{api}");
        }
    }
}

#[tokio::test]
async fn a_prefill_the_reply_does_not_start_with_gets_the_whole_reply() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    for api in Api::ALL {
        let answer = send(&client, &sim, api, &trailing(api, true, "Once upon a time"))
            .await
            .unwrap();
        assert_eq!(streamed_text(api, answer.text()), sim.reply(), "{api}");
    }
}

#[tokio::test]
async fn openai_without_prefill_answers_the_whole_reply_again() {
    let sim = Simulator::builder()
        .prefill_for(Api::OpenAiChat, PrefillMode::Ignore)
        .start()
        .await
        .unwrap();
    let client = client();
    let openai = send(
        &client,
        &sim,
        Api::OpenAiChat,
        &trailing(Api::OpenAiChat, true, "This is a"),
    )
    .await
    .unwrap();
    assert_eq!(streamed_text(Api::OpenAiChat, openai.text()), sim.reply());
    let anthropic = send(
        &client,
        &sim,
        Api::AnthropicMessages,
        &trailing(Api::AnthropicMessages, true, "This is a"),
    )
    .await
    .unwrap();
    assert_eq!(
        streamed_text(Api::AnthropicMessages, anthropic.text()),
        " simulated reply from tower-llm-testkit."
    );
    assert_eq!(sim.stats().prefilled, 1, "only Anthropic's was continued");
    let recorded = sim.requests()[0].prefill.clone().unwrap();
    assert_eq!(recorded.text, "This is a", "an ignored prefill is recorded");
}

#[tokio::test]
async fn anthropic_refuses_a_prefill_that_ends_in_whitespace() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    for prefill in ["This is ", "This is\n", "This is\t"] {
        let body = trailing(Api::AnthropicMessages, true, prefill);
        let answer = send(&client, &sim, Api::AnthropicMessages, &body)
            .await
            .unwrap();
        assert_eq!(answer.status, 400, "{prefill:?}");
        let request_id = answer.headers["request-id"].to_str().unwrap();
        assert_eq!(
            answer.json(),
            json!({
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "messages: final assistant content cannot end with trailing whitespace"
                },
                "request_id": request_id
            })
        );
    }
    // The other APIs take it, and the rest starts after the space.
    for api in [Api::OpenAiChat, Api::OllamaChat] {
        let answer = send(&client, &sim, api, &trailing(api, true, "This is "))
            .await
            .unwrap();
        assert_eq!(
            streamed_text(api, answer.text()),
            "a simulated reply from tower-llm-testkit."
        );
    }
    let stats = sim.stats();
    assert_eq!((stats.prefill_refused, stats.prefilled), (3, 2));
    assert_eq!(sim.requests()[0].prefill.as_ref().unwrap().text, "This is ");
}

#[tokio::test]
async fn a_refusing_simulator_answers_prefill_with_the_providers_400() {
    let sim = Simulator::builder()
        .prefill(PrefillMode::Refuse)
        .start()
        .await
        .unwrap();
    let client = client();
    for api in Api::ALL {
        for stream in [true, false] {
            let answer = send(&client, &sim, api, &trailing(api, stream, "This is a"))
                .await
                .unwrap();
            assert_eq!(answer.status, 400, "{api}");
            let expected = match api {
                Api::OpenAiChat => json!({"error": {
                    "message": UNSUPPORTED,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": null
                }}),
                Api::AnthropicMessages => json!({
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": UNSUPPORTED},
                    "request_id": answer.headers["request-id"].to_str().unwrap()
                }),
                _ => json!({"error": UNSUPPORTED}),
            };
            assert_eq!(answer.json(), expected, "{api}");
            assert_eq!(answer.headers["content-type"], "application/json");
        }
        // Without a prefill, the same simulator answers.
        let plain = chat(&client, &sim, api, true).await;
        assert_eq!(plain.status, 200);
        assert_eq!(streamed_text(api, plain.text()), sim.reply());
    }
    let stats = sim.stats();
    assert_eq!((stats.prefill_refused, stats.errors), (6, 6));
}

#[tokio::test]
async fn a_refusing_fault_refuses_only_the_requests_it_is_given() {
    let plan: FaultPlan = "script=drop@3;then=ok+prefill=refuse".parse().unwrap();
    let sim = Simulator::builder().plan(plan).start().await.unwrap();
    let client = client();
    let api = Api::OpenAiChat;
    let cut = chat(&client, &sim, api, true).await;
    assert!(cut.body_error.is_some());
    let delivered = streamed_text(api, cut.text());
    assert_eq!(delivered, "This is a ");
    let refused = send(&client, &sim, api, &trailing(api, true, &delivered))
        .await
        .unwrap();
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["message"], UNSUPPORTED);
    let plain = chat(&client, &sim, api, true).await;
    assert_eq!(streamed_text(api, plain.text()), sim.reply());
    // A fault that sets a mode beats the simulator's.
    let sim = Simulator::builder()
        .prefill(PrefillMode::Refuse)
        .plan(Fault::ok().with_prefill(PrefillMode::Continue))
        .start()
        .await
        .unwrap();
    let answer = send(&client, &sim, api, &trailing(api, true, "This is a"))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn vllm_refuses_continue_final_message_with_the_generation_prompt_on() {
    let sim = Simulator::start().await.unwrap();
    let mut body: Value = serde_json::from_str(&prefilled(
        Api::OpenAiChat,
        true,
        "This is a",
        PrefillMarker::ContinueFinalMessage,
    ))
    .unwrap();
    for add_generation_prompt in [Value::Null, json!(true)] {
        match &add_generation_prompt {
            Value::Null => body
                .as_object_mut()
                .unwrap()
                .remove("add_generation_prompt"),
            value => body
                .as_object_mut()
                .unwrap()
                .insert("add_generation_prompt".into(), value.clone()),
        };
        let answer = send(&client(), &sim, Api::OpenAiChat, &body.to_string())
            .await
            .unwrap();
        assert_eq!(answer.status, 400);
        assert_eq!(
            answer.json(),
            json!({"error": {
                "message": "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                "type": "BadRequestError",
                "param": null,
                "code": 400
            }})
        );
    }
}

#[tokio::test]
async fn each_continuation_marker_is_recorded_with_its_text() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    let api = Api::OpenAiChat;
    let markers = [
        PrefillMarker::TrailingAssistant,
        PrefillMarker::PrefixFlag,
        PrefillMarker::ContinueFinalMessage,
    ];
    for marker in markers {
        let answer = send(&client, &sim, api, &prefilled(api, true, "This", marker))
            .await
            .unwrap();
        assert_eq!(
            streamed_text(api, answer.text()),
            " is a simulated reply from tower-llm-testkit."
        );
    }
    chat(&client, &sim, api, true).await;
    let recorded: Vec<_> = sim.requests().into_iter().map(|r| r.prefill).collect();
    for (prefill, marker) in recorded.iter().zip(markers) {
        let prefill = prefill.as_ref().unwrap();
        assert_eq!((prefill.text.as_str(), prefill.marker), ("This", marker));
    }
    assert!(recorded[3].is_none(), "a conversation ending with the user");
}

#[tokio::test]
async fn text_blocks_of_an_anthropic_prefill_are_continued() {
    let sim = Simulator::start().await.unwrap();
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": true,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "This is"},
                {"type": "text", "text": " a"}
            ]}
        ]
    });
    let answer = send(&client(), &sim, Api::AnthropicMessages, &body.to_string())
        .await
        .unwrap();
    let names = sse_names(answer.text());
    assert_eq!(names.first().unwrap(), "message_start");
    assert_eq!(names.last().unwrap(), "message_stop");
    assert_eq!(
        streamed_text(Api::AnthropicMessages, answer.text()),
        " simulated reply from tower-llm-testkit."
    );
    assert_eq!(
        sim.requests()[0].prefill.as_ref().unwrap().text,
        "This is a"
    );
}
