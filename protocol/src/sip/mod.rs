//! SIP: addresses, reading messages off the wire, and (as the stack is built) transactions,
//! dialogs and registration as sans-I/O state machines.

pub mod call;
pub mod digest;
pub mod header;
pub mod message;
pub mod registration;
pub mod target;
pub mod transaction;
mod uri;

pub use message::{Frame, Normalised, SipParseError, StreamFramer, normalise, parse_datagram};
pub use uri::{SipUri, SipUriError};
