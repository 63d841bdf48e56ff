//! SIP: addresses now; messages, transactions and registration as the SIP stack is built.

mod uri;

pub use uri::{SipUri, SipUriError};
