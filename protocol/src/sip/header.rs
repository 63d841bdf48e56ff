//! Reading the header values the UA acts on: status lines, `name-addr` with parameters, Via
//! branches. Parameter values may be quoted and hold `;` and `,` (a `pub-gruu` does), which
//! the splitting here respects.

use super::message::Normalised;

/// The status code of a response's start line (`SIP/2.0 200 OK`), or `None` for a request.
pub fn status_code(start_line: &str) -> Option<u16> {
    let mut parts = start_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    parts.next()?.parse().ok().filter(|code| (100..=699).contains(code))
}

/// `;name=value;flag;name="quoted;value"` into (name, value) pairs, unquoted.
pub fn params(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for part in split_outside(text, ';', false) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((name, value)) => out.push((name.trim().to_ascii_lowercase(), Some(unquote(value.trim())))),
            None => out.push((part.to_ascii_lowercase(), None)),
        }
    }
    out
}

/// The value of parameter `name` (case-insensitive), `Some("")` for a flag.
pub fn param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref().unwrap_or(""))
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => value.to_owned(),
    }
}

/// Splits `text` at `separator` where it stands outside quoted strings and, with `nested`,
/// outside `<...>` and `[...]` too (a URI or an IPv6 address may hold the separator).
pub(crate) fn split_outside(text: &str, separator: char, nested: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut escaped, mut depth, mut start) = (false, false, 0u32, 0);
    for (i, c) in text.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '<' | '[' if nested => depth += 1,
            '>' | ']' if nested => depth = depth.saturating_sub(1),
            c if c == separator && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A `name-addr` or `addr-spec` header value (Contact, From, To): the URI and the header
/// parameters after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted; empty when there is none.
    pub display: String,
    pub uri: String,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        // Skip a quoted display name, which may hold '<'.
        let mut search_from = 0;
        if value.starts_with('"') {
            let close = split_outside(value, '<', false).first().map(|s| s.len())?;
            search_from = close;
        }
        if let Some(open) = value[search_from..].find('<').map(|i| i + search_from) {
            let close = value[open..].find('>')? + open;
            Some(Self {
                display: unquote(value[..open].trim()),
                uri: value[open + 1..close].trim().to_owned(),
                params: params(&value[close + 1..]),
            })
        } else {
            // addr-spec: parameters after the first ';' belong to the header (RFC 3261 20).
            let mut parts = split_outside(value, ';', false).into_iter();
            let uri = parts.next()?.trim().to_owned();
            let rest: Vec<&str> = parts.collect();
            Some(Self { display: String::new(), uri, params: params(&rest.join(";")) })
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.params, name)
    }
}

/// The branch of the top Via header of a message.
pub fn top_via_branch(message: &Normalised) -> Option<String> {
    let via = message.header("Via")?;
    let (_, after_sent_by) = via.split_once(';')?;
    param(&params(after_sent_by), "branch").map(str::to_owned)
}

/// The sequence number and method of the CSeq header.
pub fn cseq(message: &Normalised) -> Option<(u32, String)> {
    let mut parts = message.header("CSeq")?.split_whitespace();
    let number = parts.next()?.parse().ok()?;
    Some((number, parts.next()?.to_owned()))
}

/// What a request lacks that RFC 3261 section 8.1.1 makes mandatory (To, From, CSeq whose
/// method is the request's, Call-ID, Via), named, or `None` when it is whole.
pub fn missing_essentials(request: &Normalised) -> Option<&'static str> {
    let method = request.start_line.split(' ').next().unwrap_or_default();
    for name in ["Via", "From", "To", "Call-ID"] {
        if request.header(name).is_none_or(|v| v.trim().is_empty()) {
            return Some(name);
        }
    }
    if request.header("From").and_then(NameAddr::parse).is_none() {
        return Some("From");
    }
    match cseq(request) {
        Some((_, m)) if m == method || (method == "ACK" && m == "ACK") => None,
        _ => Some("CSeq"),
    }
}

/// Every value of header `name`, in order.
pub fn all<'a>(message: &'a Normalised, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    message.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::normalise;

    #[test]
    fn status_lines() {
        assert_eq!(status_code("SIP/2.0 200 OK"), Some(200));
        assert_eq!(status_code("SIP/2.0 401 Unauthorized"), Some(401));
        assert_eq!(status_code("REGISTER sip:x SIP/2.0"), None);
        assert_eq!(status_code("SIP/2.0 99 Low"), None);
        assert_eq!(status_code("SIP/2.0 abc"), None);
    }

    #[test]
    fn contact_with_quoted_gruu_and_instance() {
        let value = r#""Bob <desk>" <sip:bob@192.0.2.10:5061;transport=tls>;expires=587;+sip.instance="<urn:uuid:f81d>";pub-gruu="sip:bob@example.com;gr=urn:uuid:f81d";reg-id=1;audio"#;
        let contact = NameAddr::parse(value).unwrap();
        assert_eq!(contact.uri, "sip:bob@192.0.2.10:5061;transport=tls");
        assert_eq!(contact.display, "Bob <desk>");
        assert_eq!(contact.param("expires"), Some("587"));
        assert_eq!(contact.param("+sip.instance"), Some("<urn:uuid:f81d>"));
        assert_eq!(contact.param("pub-gruu"), Some("sip:bob@example.com;gr=urn:uuid:f81d"));
        assert_eq!(contact.param("audio"), Some(""));
        assert_eq!(contact.param("video"), None);
        assert_eq!(NameAddr::parse("Carol <sip:carol@x>").unwrap().display, "Carol");
        let bare = NameAddr::parse("sip:bob@example.com;expires=30").unwrap();
        assert_eq!((bare.uri.as_str(), bare.param("expires")), ("sip:bob@example.com", Some("30")));
        assert_eq!(NameAddr::parse("<sip:unclosed"), None);
    }

    #[test]
    fn requests_without_their_essential_headers() {
        let whole = normalise(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(missing_essentials(&whole), None);
        for (name, expected) in
            [("Via", "Via"), ("From", "From"), ("To", "To"), ("Call-ID", "Call-ID"), ("CSeq", "CSeq")]
        {
            let mut broken = whole.clone();
            broken.headers.retain(|(n, _)| n != name);
            assert_eq!(missing_essentials(&broken), Some(expected));
        }
        let mut wrong_method = whole.clone();
        for (n, v) in wrong_method.headers.iter_mut() {
            if n == "CSeq" {
                *v = "1 INVITE".into();
            }
        }
        assert_eq!(missing_essentials(&wrong_method), Some("CSeq"));
    }

    #[test]
    fn via_branch_and_cseq() {
        let n = normalise(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;rport=5070;branch=z9hG4bKabc;received=127.0.0.1\r\n\
              Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKother\r\nCSeq: 7 REGISTER\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(top_via_branch(&n).as_deref(), Some("z9hG4bKabc"));
        assert_eq!(cseq(&n), Some((7, "REGISTER".to_owned())));
        assert_eq!(all(&n, "via").count(), 2);
    }
}
