//! `cusaxd`: one SIP + XMPP communications endpoint for a Linux desktop, served on the D-Bus
//! session bus as `org.cusax.Cusax1`.
//!
//! The daemon is a set of actors, each a tokio task that owns its state:
//! - [`hub`] owns the correlated state (accounts, their states, presence, calls,
//!   conversations, contacts). Every other actor
//!   talks to it through [`hub::HubHandle`] (typed commands) and reads its published
//!   [`hub::DaemonStatus`].
//! - [`dbus`] serves the D-Bus API: it turns method calls into hub commands, and hub status
//!   changes into `PropertiesChanged` signals.
//! - [`sip`] owns the SIP transport and drives the registration and the calls from
//!   `cusax-protocol`; it reports to the hub and takes its commands.
//! - [`xmpp`] keeps the XMPP account's stream up (tokio-xmpp's StanzaStream fed by a
//!   connection step of our own, so that failures are seen), and carries presence, the
//!   roster, vCards and chat: an outbox that never loses or doubles a message, and incoming
//!   messages from every path kept once.
//! - [`store`] keeps what must survive a restart: the SIP instance id, and the message
//!   history with its outbox in SQLite, owned by one actor on a thread of its own.
//! - [`media`] runs one task per call with media: RTP/RTCP, codecs, jitter buffer, DTMF, and
//!   the sound device or file; the SIP actor starts and stops it, it reports to the hub.
//!
//! [`config`] reads and validates the config file; [`logging`] sets up tracing; [`dns`] and
//! [`tls`] are the lookups and the TLS config both protocol actors use. `main.rs`
//! wires them together. The protocol logic itself lives in the `cusax-protocol` crate, which
//! does no I/O. See ARCHITECTURE.md for the whole map.

pub mod config;
pub mod dbus;
pub mod dns;
pub mod hub;
pub mod logging;
pub mod media;
pub mod sip;
pub mod store;
pub mod tls;
pub mod xmpp;

/// The daemon's version, as shown by `--version` and the `Version` D-Bus property.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
