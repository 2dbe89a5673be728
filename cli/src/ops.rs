//! The binary's operations side: the log format, systemd's readiness protocol (ready, reloading,
//! stopping), and the shell completions and manual page generated from the command-line
//! definition in `cli`.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;
use tracing::warn;
use tracing_subscriber::prelude::*;

use crate::cli::{Cli, LogFormat};

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

/// Tells systemd that the VTEP is reloading its configuration (then [`notify_ready`] when done).
pub fn notify_reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading, sd_notify::NotifyState::Status("reloading")];
    // systemd 253 and later want the time with RELOADING=1; earlier ones ignore it.
    states.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
    notify(&states);
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

/// `vxtap completions <SHELL>`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    // Generated into memory first: clap_complete panics on a failed write (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vxtap", &mut script);
    std::io::stdout().write_all(&script).context("writing the completion script")
}

/// `vxtap man`: the manual page on stdout.
pub fn man() -> Result<()> {
    std::io::stdout().write_all(&man_page()?).context("writing the manual page")
}

/// vxtap(1) in roff, from clap_mangen's sections: the top-level name, synopsis, description and
/// options, then a section per subcommand (and nested subcommand) with its own synopsis,
/// description and options, so that one page documents every flag.
pub fn man_page() -> Result<Vec<u8>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build(); // gives subcommands their full names ("vxtap fdb show")
    let source = format!("vxtap {}", env!("CARGO_PKG_VERSION"));
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone()).source(source.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    for sub in cmd.get_subcommands() {
        subcommand_sections(sub, &source, &mut out)?;
    }
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// The section of one subcommand, then those of its own subcommands.
fn subcommand_sections(sub: &clap::Command, source: &str, out: &mut Vec<u8>) -> Result<()> {
    if sub.is_hide_set() {
        return Ok(());
    }
    let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_uppercase();
    writeln!(out, ".SH \"{}\"", name.replace(['"', '\\'], ""))?;
    let man = clap_mangen::Man::new(sub.clone()).source(source);
    let mut part = Vec::new();
    man.render_synopsis_section(&mut part)?;
    man.render_description_section(&mut part)?;
    if sub.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut part)?;
    }
    // Their own section headings become subsections of this one.
    for line in String::from_utf8_lossy(&part).lines() {
        match line.strip_prefix(".SH ") {
            Some(heading) => writeln!(out, ".SS {heading}")?,
            None => writeln!(out, "{line}")?,
        }
    }
    for nested in sub.get_subcommands() {
        subcommand_sections(nested, source, out)?;
    }
    Ok(())
}
