//! The CUSAX SIP headers (cusax-wire 3.3-3.5): `XMPP-Thread`, `XMPP-Contact` and
//! `Call-Info: <xmpp:…>;purpose=impp`, read in every form met in the wild and written in the
//! project profile's one form. Header values only: the message layer finds the headers.

/// Why a header value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CusaxHeaderError {
    #[error("{0:?} is not a SIP token")]
    NotToken(String),
    #[error("{0:?} names no XMPP address")]
    NoJid(String),
    #[error("{0:?} has no correlation value")]
    NoCorrelation(String),
}

/// RFC 3261 §25.1 `token`.
pub fn is_token(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c))
}

/// An `XMPP-Thread` value: a token (cusax-wire P3: a thread that is not one is not sent).
pub fn read_xmpp_thread(value: &str) -> Result<String, CusaxHeaderError> {
    let value = value.trim();
    if is_token(value) { Ok(value.to_owned()) } else { Err(CusaxHeaderError::NotToken(value.into())) }
}

/// The `XMPP-Thread` value for `thread`, or `None` when it cannot be one.
pub fn xmpp_thread(thread: &str) -> Option<String> {
    is_token(thread).then(|| thread.to_owned())
}

/// What a SIP message (an INVITE or its 2xx) says about the XMPP side: its `XMPP-Thread`,
/// `XMPP-Contact` and first `Call-Info` impp JID. A header that cannot be read counts as
/// absent: a peer's typo must not fail the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipCusax {
    pub thread: Option<String>,
    pub contact: Option<XmppContact>,
    /// The bare JID of the first `Call-Info` entry with `purpose=impp`.
    pub impp: Option<String>,
}

impl SipCusax {
    /// Reads the headers of a message (names compared without case, as SIP wants).
    pub fn read(headers: &[(String, String)]) -> Self {
        let named = |name: &'static str| headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name));
        Self {
            thread: named("XMPP-Thread").find_map(|(_, v)| read_xmpp_thread(v).ok()),
            contact: named("XMPP-Contact").find_map(|(_, v)| XmppContact::parse(v).ok()),
            impp: named("Call-Info").find_map(|(_, v)| read_call_info_impp(v)),
        }
    }

    /// The headers that say this (project profile forms); `Call-Info` first among ours
    /// (cusax-wire P9: Jitsi reads only the first).
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(jid) = &self.impp {
            out.push(("Call-Info".to_owned(), call_info_impp(jid)));
        }
        if let Some(thread) = self.thread.as_deref().and_then(xmpp_thread) {
            out.push(("XMPP-Thread".to_owned(), thread));
        }
        if let Some(contact) = &self.contact {
            out.push(("XMPP-Contact".to_owned(), contact.to_text()));
        }
        out
    }
}

/// An `XMPP-Contact` value: the full JID to reach and the correlation token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppContact {
    pub jid: String,
    pub correlation: String,
}

impl XmppContact {
    /// Reads `<xmpp:JID>;token`, `xmpp:JID;token` or `JID;token`; the first parameter without
    /// `=` is the token, and it may hold `@` (the draft's examples do).
    pub fn parse(value: &str) -> Result<Self, CusaxHeaderError> {
        let value = value.trim();
        let (address, params) = match value.strip_prefix('<') {
            Some(rest) => {
                let close = rest.find('>').ok_or_else(|| CusaxHeaderError::NoJid(value.into()))?;
                (&rest[..close], &rest[close + 1..])
            }
            None => value.split_once(';').map_or((value, ""), |(a, p)| (a, p)),
        };
        let jid = xmpp_uri_jid(address.trim()).ok_or_else(|| CusaxHeaderError::NoJid(value.into()))?;
        let correlation = params
            .split(';')
            .map(str::trim)
            .find(|p| !p.is_empty() && !p.contains('='))
            .filter(|p| p.len() <= 128 && p.chars().all(|c| c.is_ascii_graphic()))
            .ok_or_else(|| CusaxHeaderError::NoCorrelation(value.into()))?;
        Ok(Self { jid, correlation: correlation.to_owned() })
    }

    /// `<xmpp:JID>;token`, the JID percent-encoded as RFC 5122 wants.
    pub fn to_text(&self) -> String {
        format!("<xmpp:{}>;{}", percent_encode(&self.jid), self.correlation)
    }
}

/// The bare JID of a `Call-Info` value's first `purpose=impp` entry with an xmpp: URI.
pub fn read_call_info_impp(value: &str) -> Option<String> {
    split_outside_brackets(value).into_iter().find_map(|entry| {
        let entry = entry.trim();
        let rest = entry.strip_prefix('<')?;
        let close = rest.find('>')?;
        let impp = rest[close + 1..].split(';').any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("purpose") && v.trim().eq_ignore_ascii_case("impp")
            })
        });
        let jid = xmpp_uri_jid(&rest[..close])?;
        impp.then(|| jid.split('/').next().unwrap_or(&jid).to_owned())
    })
}

/// Our `Call-Info` value for the bare JID `jid`.
pub fn call_info_impp(jid: &str) -> String {
    format!("<xmpp:{}>;purpose=impp", percent_encode(jid))
}

/// The JID of an `xmpp:` URI (RFC 5122, without authority or query), or of a plain JID.
fn xmpp_uri_jid(text: &str) -> Option<String> {
    let jid = match text.get(..5) {
        Some(scheme) if scheme.eq_ignore_ascii_case("xmpp:") => &text[5..],
        _ if text.contains(':') => return None,
        _ => text,
    };
    let jid = jid.split(['?', '#']).next().unwrap_or(jid);
    let jid = percent_decode(jid)?;
    let (bare, _) = jid.split_once('/').unwrap_or((&jid, ""));
    let (local, domain) = bare.split_once('@')?;
    // RFC 7622: a resource may hold spaces, the bare JID may not; nothing may hold controls.
    let valid = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !bare.contains(char::is_whitespace)
        && !jid.contains(char::is_control);
    valid.then(|| jid.clone())
}

fn split_outside_brackets(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in value.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth <= 0 => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 5122 §2.2: what an xmpp: URI may carry as it is; the rest is percent-encoded.
fn percent_encode(jid: &str) -> String {
    jid.bytes()
        .map(|b| {
            let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
            if keep { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_s_cusax_headers_are_read_back_and_bad_ones_count_as_absent() {
        let ours = SipCusax {
            thread: Some("e0ffe42b-2856-4196-8c6b-12b944a09279".into()),
            contact: Some(XmppContact {
                jid: "bob@example.com/cusaxd-7f3a".into(),
                correlation: "7c9e6679f4254a4fa9c3a2b1d7e0c3b5".into(),
            }),
            impp: Some("bob@example.com".into()),
        };
        let headers = ours.headers();
        assert_eq!(headers[0], ("Call-Info".to_owned(), "<xmpp:bob@example.com>;purpose=impp".to_owned()));
        assert_eq!(SipCusax::read(&headers), ours);
        let theirs = [
            ("xmpp-thread".to_owned(), "not a token".to_owned()),
            ("Call-Info".to_owned(), "<http://example.com/photo.png>;purpose=icon".to_owned()),
            ("Call-Info".to_owned(), "<xmpp:carol@example.com> ;purpose=impp".to_owned()),
            ("XMPP-contact".to_owned(), "<xmpp:carol@example.com/x>".to_owned()),
        ];
        let read = SipCusax::read(&theirs);
        assert_eq!(read, SipCusax { thread: None, contact: None, impp: Some("carol@example.com".into()) });
        let thread_only = SipCusax { thread: Some("a b".into()), ..SipCusax::default() };
        assert!(thread_only.headers().is_empty(), "a thread that is no token is not sent");
    }

    #[test]
    fn threads_are_tokens() {
        assert_eq!(
            read_xmpp_thread(" e0ffe42b-2856-4196-8c6b-12b944a09279 ").unwrap(),
            "e0ffe42b-2856-4196-8c6b-12b944a09279"
        );
        assert!(read_xmpp_thread("has space").is_err());
        assert!(read_xmpp_thread("a@b").is_err());
        assert_eq!(xmpp_thread("x y"), None, "cusax-wire P3: not sent");
    }

    #[test]
    fn xmpp_contact_in_every_form() {
        let ours = XmppContact {
            jid: "bob@example.com/cusaxd-7f3a".into(),
            correlation: "7c9e6679f4254a4fa9c3a2b1d7e0c3b5".into(),
        };
        assert_eq!(ours.to_text(), "<xmpp:bob@example.com/cusaxd-7f3a>;7c9e6679f4254a4fa9c3a2b1d7e0c3b5");
        assert_eq!(XmppContact::parse(&ours.to_text()).unwrap(), ours);
        let draft = XmppContact::parse("xmpp:bob@example.com/res;a84b4c76e66710@ua-991.domain.com").unwrap();
        assert_eq!(draft.correlation, "a84b4c76e66710@ua-991.domain.com");
        let plain = XmppContact::parse("bob@example.com/r ; x=1 ; tok").unwrap();
        assert_eq!((plain.jid.as_str(), plain.correlation.as_str()), ("bob@example.com/r", "tok"));
        let odd = XmppContact { jid: "d'artagnan@example.com/salle d'armes".into(), correlation: "t".into() };
        assert!(odd.to_text().contains("salle%20d'armes"));
        assert_eq!(XmppContact::parse(&odd.to_text()).unwrap(), odd);
        let long = format!("<xmpp:bob@x>;{}", "t".repeat(129));
        for bad in [
            "",
            "<xmpp:bob@example.com>",
            "<sip:bob@example.com>;t",
            "<xmpp:example.com>;t",
            "<xmpp:b%zz@x>;t",
            "<xmpp:bob@x",
            "<xmpp:bob@x/a%0D%0Ab>;t",
            "<xmpp:bob@x/%00>;t",
            long.as_str(),
        ] {
            assert!(XmppContact::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn call_info_impp_among_other_entries() {
        assert_eq!(call_info_impp("bob@example.com"), "<xmpp:bob@example.com>;purpose=impp");
        let value = "<http://example.com/bob.png>;purpose=icon, <xmpp:bob@example.com/phone>;Purpose=IMPP";
        assert_eq!(read_call_info_impp(value).as_deref(), Some("bob@example.com"));
        assert_eq!(read_call_info_impp("<xmpp:bob@example.com>;purpose=info"), None);
        assert_eq!(read_call_info_impp("<http://x,y>;purpose=impp"), None);
        assert_eq!(read_call_info_impp(""), None);
        assert_eq!(
            read_call_info_impp(&call_info_impp("bob@example.com")).as_deref(),
            Some("bob@example.com")
        );
    }
}
