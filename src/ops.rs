//! The binary's operations side: the log format and systemd's readiness protocol.

use tracing::warn;
use tracing_subscriber::prelude::*;

use crate::cli::LogFormat;

/// Logging on stderr with `RUST_LOG` filters (default `info`): lines for people, colours only on
/// a terminal; or one JSON object per line, the event's fields at the top level beside
/// `timestamp`, `level`, `message` and `target`.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed()
        }
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry().with(filter).with(layer).init();
}

/// Tells systemd (`Type=notify`) that the VTEP is ready; nothing happens outside systemd
/// (`NOTIFY_SOCKET` unset).
pub fn notify_ready(status: &str) {
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(status)]);
}

/// Tells systemd that the VTEP is shutting down.
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        let socket = std::env::var("NOTIFY_SOCKET").unwrap_or_default();
        warn!("cannot notify systemd through NOTIFY_SOCKET={socket}: {e}");
    }
}
