//! [`Telemetry`] in a gateway built without the `otel` feature: a file
//! that asks for traces is refused, one that does not starts as usual.

use tracing_subscriber::layer::Identity;

use super::TelemetrySection;

/// The trace pipeline, which this build cannot make (feature `otel` off).
#[derive(Debug)]
pub enum Telemetry {}

impl Telemetry {
    /// `None` without `otlp_endpoint`; with one, an error saying why not.
    pub fn start(section: &TelemetrySection) -> Result<Option<Telemetry>, String> {
        match section.traces_url()? {
            None => Ok(None),
            Some(_) => Err(
                "[telemetry] otlp_endpoint: this gateway was built without the `otel` feature"
                    .to_owned(),
            ),
        }
    }

    /// Never called: there is no pipeline.
    pub fn layer(&self) -> Identity {
        match *self {}
    }

    /// Never called: there is no pipeline.
    pub async fn shutdown(self) {
        match self {}
    }
}
