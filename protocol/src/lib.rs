//! Pure protocol logic of cusax, with no I/O: nothing here opens a socket, spawns a task or
//! reads a clock. Time, when a piece needs it, comes in as an argument, so every behaviour can
//! be tested deterministically in milliseconds.
//!
//! - [`sip`]: SIP addresses, the message layer, digest authentication, transactions,
//!   registration and calls (INVITE dialogs) as sans-I/O state machines, and the CUSAX
//!   headers.
//! - [`sdp`]: offer/answer for the audio stream of a call.
//! - [`xmpp`]: XMPP addresses, chat stanzas, caps, vCards and the CUSAX elements.
//! - [`correlation`]: bindings between JIDs and SIP addresses, and the rule that verifies
//!   them; which chat an INVITE continues, which call a chat message joins.
//! - [`media`]: the audio path's pure pieces: G.711, DTMF telephone-events, RTCP reception
//!   statistics and the adaptive playout buffer.
//!
//! The daemon (`cusaxd`) drives these pieces from its actors; see ARCHITECTURE.md.

pub mod correlation;
pub mod media;
pub mod sdp;
pub mod sip;
pub mod xmpp;
