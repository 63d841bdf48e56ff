//! SIP: addresses, reading messages off the wire, and (as the stack is built) transactions,
//! dialogs and registration as sans-I/O state machines.

pub mod digest;
pub mod message;
mod uri;

pub use message::{Frame, Normalised, SipParseError, StreamFramer, normalise, parse_datagram};
pub use uri::{SipUri, SipUriError};
