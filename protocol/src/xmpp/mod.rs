//! XMPP: account addresses ([`AccountJid`]), one-to-one chat stanzas read and built with
//! their trust rules ([`chat`]), our disco#info and caps hash ([`caps`]), where to connect
//! ([`locate`]: SRV for STARTTLS and direct TLS), telephone entries of vCards ([`vcard`]);
//! and the CUSAX elements ([`cusax`]: sip-contact, reach, contact, sip-correlation).

mod address;
pub mod caps;
pub mod chat;
pub mod cusax;
pub mod locate;
pub mod vcard;

pub use address::{AccountJid, AccountJidError};
