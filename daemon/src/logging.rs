//! Tracing output: to stderr, and to the systemd journal when its socket exists.
//!
//! Under systemd, stderr is itself connected to the journal (`JOURNAL_STREAM` names it); then
//! only the journald layer is used, with structured fields, so no line is logged twice.

use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Installs the global subscriber. The filter comes from `RUST_LOG` (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // tokio-xmpp traces every XML element it sends, SASL <auth> (the password) included:
    // never below debug there, whatever RUST_LOG says.
    let filter = match "tokio_xmpp::xmlstream=debug".parse() {
        Ok(cap) => filter.add_directive(cap),
        Err(_) => filter,
    };
    let journald = if Path::new(JOURNAL_SOCKET).exists() { tracing_journald::layer().ok() } else { None };
    let stderr = if journald.is_some() && stderr_is_journal() {
        None
    } else {
        Some(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
    };
    tracing_subscriber::registry().with(filter).with(journald).with(stderr).init();
}

/// Whether stderr is the journal stream systemd gave us (`JOURNAL_STREAM=dev:inode`).
fn stderr_is_journal() -> bool {
    let Ok(expected) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = File::from(fd).metadata() else {
        return false;
    };
    expected == format!("{}:{}", meta.dev(), meta.ino())
}
