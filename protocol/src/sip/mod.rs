//! SIP: addresses, reading messages off the wire, transactions, dialogs and registration as
//! sans-I/O state machines, the OPTIONS probe (`probe`), and the CUSAX headers (`cusax_headers`: XMPP-Thread,
//! XMPP-Contact, Call-Info impp).

pub mod call;
pub mod cusax_headers;
pub mod digest;
pub mod header;
pub mod locate;
pub mod message;
pub mod probe;
pub mod registration;
pub mod target;
pub mod transaction;
mod uri;

pub use message::{Frame, Normalised, SipParseError, StreamFramer, normalise, parse_datagram};
pub use uri::{SipUri, SipUriError};

/// rsip's error texts echo the whole input (which may hold credentials); errors of ours keep
/// what they quote to a readable length.
fn short(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::registration::Entropy;

    /// Counts up: distinct, predictable "random" bytes.
    pub struct Counter(pub u8);

    impl Entropy for Counter {
        fn fill(&mut self, bytes: &mut [u8]) {
            for b in bytes {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }
}
