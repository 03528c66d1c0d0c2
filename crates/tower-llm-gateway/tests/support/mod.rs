//! A gateway started in-process on an ephemeral port, and a plain HTTP
//! client to call it with: what tests of the gateway's own endpoints share.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

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
use tower_llm::stack::Stack;
use tower_llm_gateway::{Closing, GatewayOptions, config, prometheus, router, serve};
use tower_llm_testkit::Simulator;

/// The upstream key the configurations name (`api_key_env = "PRIMARY_KEY"`).
pub(crate) const PRIMARY_KEY: &str = "sk-primary-secret";

/// A gateway's router served on an ephemeral loopback port, as `main`
/// serves it.
pub(crate) struct Running {
    /// Its address.
    pub(crate) addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (the grace period),
    /// and waits for the server.
    pub(crate) async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.await.unwrap()
    }
}

/// Serves `stack` with `options` on an ephemeral loopback port.
pub(crate) async fn serve_stack(stack: Stack, options: &GatewayOptions) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closing = Closing::new();
    let router = router(stack, options, prometheus(), &closing);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        router,
        options,
        async move {
            let _ = stopped.await;
        },
        closing,
    ));
    Running {
        addr,
        base: format!("http://{addr}"),
        stop: Some(stop),
        server,
    }
}

/// The plain HTTP/1.1 client the gateway's stack uses toward the
/// simulators.
pub(crate) fn upstream_client() -> Client<HttpConnector, ReplayBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A plain HTTP/1.1 client, for calling the gateway.
pub(crate) fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A running gateway over a configuration file.
pub(crate) struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// The stack's breakers, to force states from a test.
    pub(crate) circuits: CircuitHandle,
    running: Running,
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
        let stack = config
            .stack_with_env(upstream_client(), env)
            .unwrap()
            .build()
            .unwrap();
        let circuits = stack.circuits().clone();
        let running = serve_stack(stack, &options).await;
        Gateway {
            base: running.base.clone(),
            circuits,
            running,
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
    pub(crate) async fn shutdown(self) -> std::io::Result<()> {
        self.running.stop().await
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

/// Two targets, `primary` (keyed with [`PRIMARY_KEY`]) and `backup`
/// (answering as `llama3.2`), every model to both.
pub(crate) fn two_targets(primary: &Simulator, backup: &Simulator) -> String {
    format!(
        r#"
        preset = "development"

        [[targets]]
        name = "primary"
        base_url = "{}/v1"
        api_key_env = "PRIMARY_KEY"

        [[targets]]
        name = "backup"
        base_url = "{}/v1"
        model = "llama3.2"
        "#,
        primary.base_url(),
        backup.base_url()
    )
}

/// A chat completion request body for `model`.
pub(crate) fn chat(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}]}}"#)
}
