//! A gateway started in-process on an ephemeral port, and a plain HTTP
//! client to call it with: what tests of the gateway's own endpoints share.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_llm::circuit::CircuitHandle;
use tower_llm::config::StackConfig;
use tower_llm::retry::ReplayBody;
use tower_llm_gateway::{Closing, GatewayOptions, config, prometheus, router, serve};

/// The upstream key the configurations name (`api_key_env = "PRIMARY_KEY"`).
pub(crate) const PRIMARY_KEY: &str = "sk-primary-secret";

/// A running gateway.
pub(crate) struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// The stack's breakers, to force states from a test.
    pub(crate) circuits: CircuitHandle,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    /// Starts a gateway on a whole configuration file (`[gateway]` section
    /// and stack), with `env` as its environment.
    pub(crate) async fn start_file(file: &str, env: &[(&str, &str)]) -> Gateway {
        let (section, stack) = config::parse_file(file).unwrap();
        let lookup = |name: &str| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
                .or_else(|| (name == "PRIMARY_KEY").then(|| PRIMARY_KEY.to_owned()))
        };
        let options = section.options_with_env(lookup).unwrap();
        Gateway::start(stack, options, lookup).await
    }

    /// Starts a gateway with `options` over the stack `config` builds.
    pub(crate) async fn start(
        config: StackConfig,
        options: GatewayOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Gateway {
        let upstream: Client<HttpConnector, ReplayBody> =
            Client::builder(TokioExecutor::new()).build_http();
        let stack = config
            .stack_with_env(upstream, env)
            .unwrap()
            .build()
            .unwrap();
        let circuits = stack.circuits().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let closing = Closing::new();
        let router = router(stack, &options, prometheus(), &closing);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router,
            &options,
            async move {
                let _ = stopped.await;
            },
            closing,
        ));
        Gateway {
            base,
            circuits,
            stop: Some(stop),
            server,
        }
    }

    /// Sends `method path` with `headers` and `body`; the answer, whole.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let response: Response<Incoming> = client().request(request).await.unwrap();
        let (head, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: head.status,
            headers: head.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, &[], "").await
    }

    /// Stops the gateway and waits for it.
    pub(crate) async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.await.unwrap()
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Its status.
    pub(crate) status: StatusCode,
    /// Its headers.
    pub(crate) headers: HeaderMap,
    /// Its body, as text.
    pub(crate) body: String,
}

impl Answer {
    /// A header's value ("" when absent).
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A chat completion request body for `model`.
pub(crate) fn chat(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}]}}"#)
}
