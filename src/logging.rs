//! Log output: text or JSON lines on standard error, filtered by level or per module.
//!
//! Lines are gathered in a buffer and written in batches, as nginx's `access_log … buffer=`
//! does: one `write(2)` per request would cost as much as a third of the gateway's own CPU
//! time per proxied request. The buffer goes out when it fills, at least every
//! `ROUTER__LOG_FLUSH_MS`, at once for warnings and errors, and when the process ends.

use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing::{Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use gateway_proxy::{AccessFormat, AccessSink};

use crate::config::{LogConfig, LogFormat};

/// A buffer this full is written at once.
const FLUSH_AT: usize = 32 * 1024;

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Installs the global subscriber and starts the thread that flushes the buffer.
pub fn init(config: &LogConfig) {
    // The filter was checked with the rest of the configuration.
    let filter: Targets = config.filter.parse().unwrap_or_default();
    let registry = tracing_subscriber::registry().with(filter);
    match config.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(BatchedStderr)
                    .with_ansi(false),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(BatchedStderr),
            )
            .init(),
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
    if config.flush_every.is_zero() {
        UNBATCHED.store(true, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    let every = config.flush_every;
    let flusher = std::thread::Builder::new()
        .name("log-flush".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                flush();
            }
        });
    if let Err(err) = flusher {
        // Without the thread, lines would wait for the buffer to fill: write each at once.
        eprintln!("clearml-gateway: cannot start the log flusher ({err}); logging unbatched");
        UNBATCHED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

static UNBATCHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes out whatever is buffered (also called before the process exits).
pub fn flush() {
    let pending = std::mem::take(&mut *buffer());
    if !pending.is_empty() {
        // Standard error gone: nowhere to report it either.
        let _ = std::io::stderr().lock().write_all(&pending);
    }
}

fn buffer() -> MutexGuard<'static, Vec<u8>> {
    // A panic while holding the lock leaves whole lines behind: keep using them.
    BUFFER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hands tracing a writer for each event: buffered, or straight out for warnings and errors.
struct BatchedStderr;

/// Where one event's line goes. tracing's fmt layer formats the whole line first and hands
/// it over in one `write_all`, which lands in the buffer under one lock: lines never
/// interleave.
struct EventWriter {
    urgent: bool,
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { urgent: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EventWriter {
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        buffer().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let full = buffer().len() >= FLUSH_AT;
        if full || self.urgent || UNBATCHED.load(std::sync::atomic::Ordering::Relaxed) {
            flush();
        }
    }
}

/// Access lines formatted by the proxy, into the same batched buffer as every other line.
#[derive(Debug)]
pub struct AccessLines(AccessFormat);

/// The sink for the gateway's access lines, in the configured format.
pub fn access_lines(config: &LogConfig) -> std::sync::Arc<AccessLines> {
    std::sync::Arc::new(AccessLines(match config.format {
        LogFormat::Text => AccessFormat::Text,
        LogFormat::Json => AccessFormat::Json,
    }))
}

impl AccessSink for AccessLines {
    fn format(&self) -> AccessFormat {
        self.0
    }

    fn write_line(&self, line: &[u8], urgent: bool) {
        let full = {
            let mut buffer = buffer();
            buffer.extend_from_slice(line);
            buffer.len() >= FLUSH_AT
        };
        if full || urgent || UNBATCHED.load(std::sync::atomic::Ordering::Relaxed) {
            flush();
        }
    }
}
