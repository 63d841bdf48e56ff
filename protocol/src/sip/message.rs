//! Reading SIP messages off the wire: a normalising pre-pass in front of rsip, and
//! Content-Length framing for stream transports.
//!
//! rsip reads well-formed messages but not every form RFC 3261 allows (crates.md 3.1): compact
//! header names, several Via values on one line, folded lines, white space before the colon,
//! LF-only line ends. [`normalise`] rewrites those into the plain form rsip reads, without
//! changing what the message says. The body is cut to Content-Length, which rsip ignores.

use std::fmt;

use super::header::split_outside;
use super::short;

/// Why bytes are not a SIP message we can use. The text never quotes the message itself: it
/// may carry credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipParseError {
    #[error("empty message")]
    Empty,
    #[error("the header section is not UTF-8")]
    NotUtf8,
    #[error("no blank line ends the header section")]
    Unterminated,
    #[error("the header section is over {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("the body is over {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("header line {line} has no colon")]
    NoColon { line: usize },
    #[error("header line {line} has an empty name")]
    EmptyName { line: usize },
    #[error("a folded line comes before the first header")]
    FoldBeforeHeader,
    #[error("Content-Length is not a number")]
    BadContentLength,
    #[error("Content-Length says {declared} bytes, the message has {actual}")]
    Truncated { declared: usize, actual: usize },
    #[error("stream message without Content-Length")]
    NoContentLength,
    #[error("rsip cannot read it: {0}")]
    Syntax(String),
}

/// The most a header section may take; a sender of more is broken or hostile.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most a body may take (an SDP is a few kB).
pub const MAX_BODY: usize = 256 * 1024;

/// Compact forms (RFC 3261 section 7.3.3 and later registrations).
const COMPACT: [(char, &str); 19] = [
    ('a', "Accept-Contact"),
    ('b', "Referred-By"),
    ('c', "Content-Type"),
    ('d', "Request-Disposition"),
    ('e', "Content-Encoding"),
    ('f', "From"),
    ('i', "Call-ID"),
    ('j', "Reject-Contact"),
    ('k', "Supported"),
    ('l', "Content-Length"),
    ('m', "Contact"),
    ('o', "Event"),
    ('r', "Refer-To"),
    ('s', "Subject"),
    ('t', "To"),
    ('u', "Allow-Events"),
    ('v', "Via"),
    ('x', "Session-Expires"),
    ('y', "Identity"),
];

/// Headers whose comma-separated values rsip reads only one at a time; each value gets its
/// own line. (Authorization and its kin are never split: commas separate their parameters.)
const ONE_VALUE_PER_LINE: [&str; 6] = ["Via", "Contact", "Route", "Record-Route", "Path", "Service-Route"];

/// A message in plain form: start line, one header per line with its full name, CRLF line
/// ends, and the body cut to its Content-Length.
#[derive(Clone, PartialEq, Eq)]
pub struct Normalised {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl fmt::Debug for Normalised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Headers may carry credentials; show their names only.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Normalised")
            .field("start_line", &self.start_line)
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Normalised {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(self.start_line.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// The message as rsip reads it.
    pub fn to_rsip(&self) -> Result<rsip::SipMessage, SipParseError> {
        rsip::SipMessage::try_from(self.to_bytes()).map_err(|e| SipParseError::Syntax(short(&e.to_string())))
    }
}

/// Where the header section ends: the index of the first body byte, after the blank line
/// (CRLF CRLF, or LF LF from senders that forget the CR).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Normalises one datagram (UDP): the body is what follows the header section, cut to
/// Content-Length when present (RFC 3261 section 18.3).
pub fn normalise(bytes: &[u8]) -> Result<Normalised, SipParseError> {
    // Stray CRLFs before a message are allowed (RFC 3261 section 7.5).
    let start = bytes.iter().position(|b| *b != b'\r' && *b != b'\n').ok_or(SipParseError::Empty)?;
    let bytes = &bytes[start..];
    let end = head_end(bytes).ok_or(if bytes.len() > MAX_HEAD {
        SipParseError::HeadTooLarge { limit: MAX_HEAD }
    } else {
        SipParseError::Unterminated
    })?;
    if end > MAX_HEAD {
        return Err(SipParseError::HeadTooLarge { limit: MAX_HEAD });
    }
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| SipParseError::NotUtf8)?;
    let (start_line, headers) = normalise_head(head)?;
    let rest = &bytes[end..];
    let body = match content_length(&headers)? {
        Some(declared) if declared > rest.len() => {
            return Err(SipParseError::Truncated { declared, actual: rest.len() });
        }
        Some(declared) => rest[..declared].to_vec(),
        None => rest.to_vec(),
    };
    if body.len() > MAX_BODY {
        return Err(SipParseError::BodyTooLarge { limit: MAX_BODY });
    }
    Ok(Normalised { start_line, headers, body })
}

/// Normalises a datagram and reads it with rsip.
pub fn parse_datagram(bytes: &[u8]) -> Result<rsip::SipMessage, SipParseError> {
    normalise(bytes)?.to_rsip()
}

fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, SipParseError> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.trim().parse::<usize>().map_err(|_| SipParseError::BadContentLength))
        .transpose()
}

fn normalise_head(head: &str) -> Result<(String, Vec<(String, String)>), SipParseError> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default().trim().to_owned();
    if start_line.is_empty() {
        return Err(SipParseError::Empty);
    }
    // Unfold: a line starting with white space continues the previous one (RFC 3261 7.3.1).
    let mut unfolded: Vec<String> = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            let last = unfolded.last_mut().ok_or(SipParseError::FoldBeforeHeader)?;
            last.push(' ');
            last.push_str(line.trim());
        } else {
            unfolded.push(line.to_owned());
        }
    }
    let mut headers = Vec::with_capacity(unfolded.len());
    for (index, line) in unfolded.iter().enumerate() {
        let (name, value) = line.split_once(':').ok_or(SipParseError::NoColon { line: index + 1 })?;
        // HCOLON allows white space before the colon.
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(SipParseError::EmptyName { line: index + 1 });
        }
        let name = full_name(name);
        let value = value.trim();
        if ONE_VALUE_PER_LINE.iter().any(|n| n.eq_ignore_ascii_case(&name)) && value != "*" {
            for part in split_outside(value, ',', true).into_iter().map(str::trim).filter(|p| !p.is_empty()) {
                headers.push((name.clone(), part.to_owned()));
            }
        } else {
            headers.push((name, value.to_owned()));
        }
    }
    Ok((start_line, headers))
}

fn full_name(name: &str) -> String {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next())
        && let Some((_, full)) = COMPACT.iter().find(|(short, _)| short.eq_ignore_ascii_case(&c))
    {
        return (*full).to_owned();
    }
    name.to_owned()
}

/// What a stream transport (TCP, TLS) reads: whole messages, framed by Content-Length, and the
/// RFC 5626 keep-alives between them.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Normalised),
    /// A double CRLF: the peer asks us to answer with a single CRLF.
    Ping,
    /// A single CRLF: the answer to our ping.
    Pong,
}

/// Cuts a byte stream into frames. Bounded: a peer that sends an endless header or a huge
/// Content-Length gets an error, never our memory.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buffer: Vec<u8>,
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` while more bytes are needed. After an error the
    /// stream is out of step and the connection should be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SipParseError> {
        if self.buffer.starts_with(b"\r\n\r\n") {
            self.buffer.drain(..4);
            return Ok(Some(Frame::Ping));
        }
        if self.buffer.starts_with(b"\r\n") {
            // "\r\n\r" may still become a ping. A lone CRLF is a pong: waiting to see whether a
            // second one follows would leave a real pong unseen until the next message.
            if self.buffer.len() == 3 && self.buffer[2] == b'\r' {
                return Ok(None);
            }
            self.buffer.drain(..2);
            return Ok(Some(Frame::Pong));
        }
        let Some(end) = head_end(&self.buffer) else {
            return if self.buffer.len() > MAX_HEAD {
                Err(SipParseError::HeadTooLarge { limit: MAX_HEAD })
            } else {
                Ok(None)
            };
        };
        if end > MAX_HEAD {
            return Err(SipParseError::HeadTooLarge { limit: MAX_HEAD });
        }
        let head = std::str::from_utf8(&self.buffer[..end]).map_err(|_| SipParseError::NotUtf8)?;
        let (start_line, headers) = normalise_head(head)?;
        let length = content_length(&headers)?.ok_or(SipParseError::NoContentLength)?;
        if length > MAX_BODY {
            return Err(SipParseError::BodyTooLarge { limit: MAX_BODY });
        }
        if self.buffer.len() < end + length {
            return Ok(None);
        }
        let body = self.buffer[end..end + length].to_vec();
        self.buffer.drain(..end + length);
        Ok(Some(Frame::Message(Normalised { start_line, headers, body })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::prelude::*;

    /// In the spirit of RFC 4475 3.1.1.1 ("wsinv"): compact names, folding, white space
    /// before colons, odd case, several Via values on one line, LF-only line ends.
    const TORTUOUS: &str = "INVITE sip:bob@example.com SIP/2.0\n\
        v  : SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-aaa ,SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK-bbb\n\
        TO :\n <sip:bob@example.com>\n\
        f: \"Al, \\\"the\\\" Caller\" <sip:alice@example.com>;tag=98asjd8\n\
        MaX-fOrWaRdS: 0068\n\
        i: 8.0.f.9@192.0.2.1\n\
        CSeq: 12\n   INVITE\n\
        m: <sip:alice@192.0.2.1>, <sip:alice@[2001:db8::9]>;q=0.5\n\
        c: application/sdp\n\
        l: 4\n\
        \n\
        v=0\n";

    #[test]
    fn rewrites_the_tortuous_forms_into_plain_ones() {
        let n = normalise(TORTUOUS.as_bytes()).unwrap();
        assert_eq!(n.start_line, "INVITE sip:bob@example.com SIP/2.0");
        let vias: Vec<&str> = n.headers.iter().filter(|(k, _)| k == "Via").map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-aaa",
                "SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK-bbb"
            ]
        );
        assert_eq!(n.header("to"), Some("<sip:bob@example.com>"));
        assert_eq!(n.header("From"), Some("\"Al, \\\"the\\\" Caller\" <sip:alice@example.com>;tag=98asjd8"));
        assert_eq!(n.header("CSeq"), Some("12 INVITE"));
        assert_eq!(n.headers.iter().filter(|(k, _)| k == "Contact").count(), 2);
        assert_eq!(n.body, b"v=0\n");
    }

    #[test]
    fn rsip_reads_the_normalised_message() {
        let message = parse_datagram(TORTUOUS.as_bytes()).unwrap();
        let rsip::SipMessage::Request(request) = message else { panic!("a request") };
        assert_eq!(request.method, rsip::Method::Invite);
        let via = request.via_header().unwrap().typed().unwrap();
        assert_eq!(via.branch().unwrap().to_string(), "z9hG4bK-aaa");
        assert_eq!(request.call_id_header().unwrap().value(), "8.0.f.9@192.0.2.1");
        assert_eq!(request.cseq_header().unwrap().typed().unwrap().seq, 12);
        let from = request.from_header().unwrap().typed().unwrap();
        assert_eq!(from.tag().unwrap().to_string(), "98asjd8");
    }

    #[test]
    fn content_length_cuts_and_checks_the_body() {
        let extra = "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nhi and then junk";
        assert_eq!(normalise(extra.as_bytes()).unwrap().body, b"hi");
        // RFC 4475 3.1.2.2 ("clerr"): a Content-Length larger than the body.
        let short = "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 9999\r\n\r\nhi";
        assert_eq!(normalise(short.as_bytes()), Err(SipParseError::Truncated { declared: 9999, actual: 2 }));
        // 3.1.2.3/4 ("ncl", "scalar02"): negative and absurd Content-Length values.
        for bad in ["-999", "99999999999999999999999", "ten"] {
            let text = format!("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(normalise(text.as_bytes()), Err(SipParseError::BadContentLength), "{bad}");
        }
    }

    #[test]
    fn malformed_heads_get_named_errors() {
        assert_eq!(normalise(b""), Err(SipParseError::Empty));
        assert_eq!(normalise(b"\r\n\r\n"), Err(SipParseError::Empty));
        assert_eq!(normalise(b"OPTIONS sip:a@b SIP/2.0\r\nVia"), Err(SipParseError::Unterminated));
        assert_eq!(
            normalise(b"OPTIONS sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n"),
            Err(SipParseError::NoColon { line: 1 })
        );
        assert_eq!(
            normalise(b"OPTIONS sip:a@b SIP/2.0\r\n: v\r\n\r\n"),
            Err(SipParseError::EmptyName { line: 1 })
        );
        assert_eq!(normalise(b"OPTIONS sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n"), Err(SipParseError::NotUtf8));
        let huge = format!("OPTIONS sip:a@b SIP/2.0\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(normalise(huge.as_bytes()), Err(SipParseError::HeadTooLarge { limit: MAX_HEAD }));
        assert!(matches!(parse_datagram(b"HELLO\r\n\r\n"), Err(SipParseError::Syntax(_))));
    }

    #[test]
    fn errors_never_quote_the_message() {
        let secret = "OPTIONS sip:a@b SIP/2.0\r\nAuthorization: Digest response=\"s3cr3t\"\r\nBroken\r\n\r\n";
        let e = normalise(secret.as_bytes()).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"));
        let n = normalise(b"OPTIONS sip:a@b SIP/2.0\r\nAuthorization: Digest response=\"s3cr3t\"\r\n\r\n")
            .unwrap();
        assert!(!format!("{n:?}").contains("s3cr3t"));
    }

    #[test]
    fn stream_framer_cuts_messages_and_keepalives() {
        let mut framer = StreamFramer::new();
        let one = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc";
        let two = b"OPTIONS sip:c@d SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        // Messages split anywhere come out whole and in order; each keep-alive comes in one
        // write, as senders write them.
        let mut frames = Vec::new();
        let mut feed = |bytes: &[u8], frames: &mut Vec<Frame>| {
            framer.push(bytes);
            while let Some(frame) = framer.next_frame().unwrap() {
                frames.push(frame);
            }
        };
        feed(b"\r\n\r\n", &mut frames);
        for chunk in [one.as_slice(), two.as_slice()].concat().chunks(7) {
            feed(chunk, &mut frames);
        }
        feed(b"\r\n", &mut frames);
        assert_eq!(frames.len(), 4, "{frames:?}");
        assert_eq!(frames[0], Frame::Ping);
        assert!(matches!(&frames[1], Frame::Message(m) if m.body == b"abc"));
        assert!(matches!(&frames[2], Frame::Message(m) if m.start_line == "OPTIONS sip:c@d SIP/2.0"));
        assert_eq!(frames[3], Frame::Pong);
    }

    #[test]
    fn stream_framer_is_bounded() {
        let mut framer = StreamFramer::new();
        framer.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 999999999\r\n\r\n");
        assert_eq!(framer.next_frame(), Err(SipParseError::BodyTooLarge { limit: MAX_BODY }));
        let mut framer = StreamFramer::new();
        framer.push(b"OPTIONS sip:a@b SIP/2.0\r\n");
        framer.push("X: y\r\n".repeat(MAX_HEAD / 6 + 1).as_bytes());
        assert_eq!(framer.next_frame(), Err(SipParseError::HeadTooLarge { limit: MAX_HEAD }));
        let mut framer = StreamFramer::new();
        framer.push(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(framer.next_frame(), Err(SipParseError::NoContentLength));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A deterministic sweep of short byte strings built from SIP's own characters.
        let alphabet: &[u8] = b"\r\n :;,<>\"\\[]vfl0123456789SIP/2.0 INVITE sip:@";
        let mut state = 0x2545_f491_u32;
        for _ in 0..20_000 {
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    alphabet[(state as usize) % alphabet.len()]
                })
                .collect();
            let _ = parse_datagram(&bytes);
            let mut framer = StreamFramer::new();
            framer.push(&bytes);
            while let Ok(Some(_)) = framer.next_frame() {}
        }
    }
}
