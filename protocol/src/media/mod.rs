//! The pure pieces of a call's audio path: the G.711 codec (ITU-T G.711), DTMF as
//! telephone-events (RFC 4733), reception statistics for RTCP receiver reports (RFC 3550
//! section 6.4 and appendix A) and an adaptive playout buffer.
//!
//! Like the rest of the crate, nothing here opens a socket or reads a clock: the daemon's media
//! actor passes packets, RTP timestamps and monotonic times in and sends what comes out, so
//! every behaviour (loss, jitter, wrap-around) can be simulated exactly in a unit test.

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod stats;

/// What can go wrong when reading or producing media control data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// A telephone-event payload is shorter than the 4 bytes of RFC 4733 section 2.3.
    #[error("a telephone-event payload needs 4 bytes")]
    TruncatedEvent,
    /// A character that is not one of the 16 DTMF digits (0-9, *, #, A-D).
    #[error("{0:?} is not a DTMF digit")]
    UnknownDigit(char),
    /// Queuing the digits would leave more than `dtmf::MAX_PENDING_DIGITS` waiting.
    #[error("too many DTMF digits pending (at most {} wait to be sent)", dtmf::MAX_PENDING_DIGITS)]
    TooManyDigits,
    /// An empty string of digits was asked for.
    #[error("no DTMF digits to send")]
    NoDigits,
}
