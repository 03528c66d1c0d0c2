//! The client the gateway calls its targets with.

use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// One client for every target: HTTPS (webpki roots) and plain HTTP (local
/// models, the simulators), HTTP/1.1 with keep-alive (idle connections
/// closed after 60 s) and `TCP_NODELAY` (a stream's small frames must not
/// wait for ACKs: Nagle's algorithm).
pub fn upstream_client<B>() -> Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https)
}
