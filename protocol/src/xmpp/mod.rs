//! XMPP: account addresses ([`AccountJid`]), one-to-one chat stanzas read and built with
//! their trust rules ([`chat`]), our disco#info and caps hash ([`caps`]), where to connect
//! ([`locate`]: SRV for STARTTLS and direct TLS), telephone entries of vCards ([`vcard`]);
//! the CUSAX elements join them with the correlation issue.

mod address;
pub mod caps;
pub mod chat;
pub mod locate;
pub mod vcard;

pub use address::{AccountJid, AccountJidError};
