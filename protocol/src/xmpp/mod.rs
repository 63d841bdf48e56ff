//! XMPP: addresses now; the CUSAX elements carried in stanzas as the XMPP side is built.

mod address;

pub use address::{AccountJid, AccountJidError};
