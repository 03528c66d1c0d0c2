//! `GET /v1/models`: the models the routes serve, as OpenAI lists models
//! (`{"object":"list","data":[{"id","object":"model","created","owned_by"}]}`),
//! or as Anthropic does when the caller sends `anthropic-version` (its
//! SDKs always do: `{"data":[{"type":"model","id",…}],"has_more":false,…}`).
//!
//! A route names a model exactly (`gpt-4o`), by prefix (`claude-*`) or is
//! the default (`*`); each is listed as the configuration writes it, in the
//! order the stack matches them ([`Stack::routes`]), `owned_by` its first
//! target. A pattern is not a model a provider knows, but it is what this
//! gateway serves: any model it matches is routed.
//!
//! `GET /v1/models/{model}` (the SDKs' `models.retrieve`) answers the
//! model asked for when a route serves it, with the same shapes, and a 404
//! in the caller's shape when none does.
//!
//! [`Stack::routes`]: tower_llm::stack::Stack::routes

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::ErrorShape;
use crate::error::error_json_with_code;
use crate::router::Gateway;

/// Whether the caller is one of Anthropic's SDKs (they always send
/// `anthropic-version`), so answers take Anthropic's shapes.
fn anthropic_caller(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /v1/models`.
pub(crate) async fn models(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    let routes = gateway.stack.routes();
    let routes = routes
        .iter()
        .map(|(model, targets)| (model.as_str(), targets.first().copied().unwrap_or("-")));
    let body = if anthropic_caller(&headers) {
        anthropic_list(routes)
    } else {
        openai_list(routes)
    };
    json_response(StatusCode::OK, &body)
}

/// `GET /v1/models/{model}`.
pub(crate) async fn model(
    State(gateway): State<Gateway>,
    model: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let anthropic = anthropic_caller(&headers);
    // A name that is not UTF-8 once percent-decoded (`%FF`): refused in
    // the caller's API's shape, not with axum's plain-text rejection.
    let Ok(Path(model)) = model else {
        let message = "the model in the path is not UTF-8 once percent-decoded";
        return if anthropic {
            ErrorShape::Anthropic.gateway_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                message,
            )
        } else {
            error_json_with_code(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_model",
                message,
            )
        };
    };
    let Some(targets) = gateway.stack.targets_for(Some(&model)) else {
        let message = format!("no route of this gateway serves the model `{model}`");
        return if anthropic {
            ErrorShape::Anthropic.gateway_error(StatusCode::NOT_FOUND, "not_found", &message)
        } else {
            // OpenAI's answer for a model it does not have.
            error_json_with_code(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                &message,
            )
        };
    };
    let owner = targets.first().copied().unwrap_or("-");
    let body = if anthropic {
        anthropic_model(&model)
    } else {
        openai_model(&model, owner)
    };
    json_response(StatusCode::OK, &body)
}

fn openai_model(model: &str, owner: &str) -> Value {
    json!({ "id": model, "object": "model", "created": 0, "owned_by": owner })
}

fn anthropic_model(model: &str) -> Value {
    json!({
        "type": "model",
        "id": model,
        "display_name": model,
        "created_at": "1970-01-01T00:00:00Z",
    })
}

/// OpenAI's list (*Models*, platform.openai.com API reference).
fn openai_list<'a>(routes: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    let data: Vec<Value> = routes
        .map(|(model, owner)| openai_model(model, owner))
        .collect();
    json!({ "object": "list", "data": data })
}

/// Anthropic's list (*List Models*, docs.claude.com API reference): one
/// page holding every route.
fn anthropic_list<'a>(routes: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    let data: Vec<Value> = routes.map(|(model, _)| anthropic_model(model)).collect();
    let first = data.first().map(|m| m["id"].clone()).unwrap_or(Value::Null);
    let last = data.last().map(|m| m["id"].clone()).unwrap_or(Value::Null);
    json!({ "data": data, "has_more": false, "first_id": first, "last_id": last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_a_model_in_either_list_in_the_order_given() {
        let routes = [
            ("gpt-4o", "primary"),
            ("claude-*", "claude"),
            ("*", "primary"),
        ];
        let openai = openai_list(routes.into_iter());
        assert_eq!(openai["object"], "list");
        let ids: Vec<&str> = openai["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o", "claude-*", "*"]);
        assert_eq!(openai["data"][1]["owned_by"], "claude");
        assert_eq!(openai["data"][1]["object"], "model");

        let anthropic = anthropic_list(routes.into_iter());
        assert_eq!(anthropic["data"][0]["type"], "model");
        assert_eq!(anthropic["first_id"], "gpt-4o");
        assert_eq!(anthropic["last_id"], "*");
        assert_eq!(anthropic["has_more"], false);
    }
}
