//! Log output: text or JSON lines on standard error, filtered by level or per module.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber.
pub fn init(config: &LogConfig) {
    // The filter was checked with the rest of the configuration.
    let filter: Targets = config.filter.parse().unwrap_or_default();
    let registry = tracing_subscriber::registry().with(filter);
    let stderr = std::io::stderr;
    match config.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(stderr)
                    .with_ansi(false),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(stderr),
            )
            .init(),
    }
}
