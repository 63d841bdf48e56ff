//! SIP and SIPS URIs (RFC 3261 section 19.1) as cusax accepts them from users and config.
//!
//! Syntax is read by rsip; this layer adds what rsip leaves to its caller: it refuses trailing
//! text that rsip's tokenizer would silently drop, schemes other than `sip`/`sips`, and (for an
//! address of record) a URI without a user part.

use std::fmt;

use rsip::common::uri::{Host, Scheme, Tokenizer};

use super::short;

/// Why a text is not an acceptable SIP URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipUriError {
    #[error("empty SIP URI")]
    Empty,
    #[error("a SIP URI has no white space or control characters")]
    BadCharacter,
    #[error("not a SIP URI: {0}")]
    Syntax(String),
    #[error("a SIP URI starts with sip: or sips:")]
    WrongScheme,
    #[error("a SIP URI needs a host")]
    NoHost,
    #[error("not a host name: {0:?}")]
    BadHost(String),
    #[error("an address of record needs a user part (sip:user@host)")]
    NoUser,
    #[error("a SIP URI must not carry a password (RFC 3261 section 19.1.1)")]
    HasPassword,
}

/// A parsed `sip:` or `sips:` URI, kept together with the text it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    text: String,
    /// The user part, read here: rsip's tokenizer takes a user with a dot in it
    /// (`john.doe@`) for part of the host.
    user: Option<String>,
    /// The scheme, host and port, as rsip reads them.
    uri: rsip::Uri,
}

impl SipUri {
    /// Reads any `sip:`/`sips:` URI: a registrar, a proxy, a call target.
    pub fn parse(text: &str) -> Result<Self, SipUriError> {
        if text.is_empty() {
            return Err(SipUriError::Empty);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SipUriError::BadCharacter);
        }
        let lower = text.get(..5).unwrap_or(text).to_ascii_lowercase();
        if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
            return Err(SipUriError::WrongScheme);
        }
        // The user part and the parameters are read here, rsip gets the scheme, host and port:
        // its tokenizer takes `john.doe@` for a host, and stops at a ':' inside a parameter
        // (a GRUU's `gr=urn:uuid:…` has two).
        let scheme_end = lower.find(':').unwrap_or(0) + 1;
        let at = text.find('@');
        let host_at = at.map_or(scheme_end, |at| at + 1);
        let user = at.map(|at| &text[scheme_end..at]);
        // RFC 3261 userinfo: unreserved, escaped, user-unreserved. Nothing that could end a
        // header value early (`<`, `>`, `"`), and no password (`user:password`).
        if let Some(bad) = user
            .unwrap_or_default()
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && !"-_.!~*'()%&=+$,;?/:".contains(*c))
        {
            return Err(SipUriError::Syntax(format!("unexpected {bad:?} in the user part")));
        }
        if user.is_some_and(|u| u.contains(':')) {
            return Err(SipUriError::HasPassword);
        }
        let cut = text[host_at..].find([';', '?']).map_or(text.len(), |i| host_at + i);
        let params = &text[cut..];
        if let Some(bad) =
            params.chars().find(|c| !c.is_ascii_alphanumeric() && !"-_.!~*'()[]/:&+$;=?%".contains(*c))
        {
            return Err(SipUriError::Syntax(format!("unexpected {bad:?} in the parameters")));
        }
        let base = format!("{}{}", &text[..scheme_end], &text[host_at..cut]);
        let (rest, tokens) =
            Tokenizer::tokenize(base.as_bytes()).map_err(|e| SipUriError::Syntax(short(&e.to_string())))?;
        if !rest.is_empty() {
            let rest = String::from_utf8_lossy(rest);
            return Err(SipUriError::Syntax(format!("unexpected {:?}", short(&rest))));
        }
        let uri = rsip::Uri::try_from(tokens).map_err(|e| SipUriError::Syntax(short(&e.to_string())))?;
        match uri.scheme {
            Some(Scheme::Sip) | Some(Scheme::Sips) => {}
            _ => return Err(SipUriError::WrongScheme),
        }
        if uri.auth.as_ref().is_some_and(|auth| auth.password.is_some()) {
            return Err(SipUriError::HasPassword);
        }
        if let Host::Domain(domain) = uri.host() {
            let domain = domain.to_string();
            if domain.is_empty() {
                return Err(SipUriError::NoHost);
            }
            // RFC 3261 hostname: alphanumerics, '-' and '.'; rsip takes anything up to ':' or ';'.
            if !domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                return Err(SipUriError::BadHost(short(&domain)));
            }
        }
        Ok(Self { text: text.to_owned(), user: user.map(str::to_owned), uri })
    }

    /// Reads an address of record: a SIP URI with a user part (`sip:alice@example.com`).
    pub fn parse_aor(text: &str) -> Result<Self, SipUriError> {
        let uri = Self::parse(text)?;
        match uri.user() {
            Some(user) if !user.is_empty() => Ok(uri),
            _ => Err(SipUriError::NoUser),
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The host part without the port, as written (a name or an IP literal).
    pub fn host(&self) -> String {
        self.uri.host().to_string()
    }

    pub fn port(&self) -> Option<u16> {
        self.uri.port().map(|p| *p.value())
    }

    pub fn is_sips(&self) -> bool {
        matches!(self.uri.scheme, Some(Scheme::Sips))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gruu_keeps_its_colons() {
        let gruu = "sip:bob@127.0.0.1;gr=urn:uuid:d8fbad4f-b97c-4cf1-b5ff-43d49f5a0d3f";
        let uri = SipUri::parse(gruu).unwrap();
        assert_eq!(
            (uri.user(), uri.host(), uri.to_string()),
            (Some("bob"), "127.0.0.1".to_owned(), gruu.to_owned())
        );
        assert!(SipUri::parse("sip:bob@127.0.0.1;gr=<x>").is_err());
        assert!(SipUri::parse("sip:x>;tag=1@127.0.0.1").is_err(), "a user part that would end the header");
        assert!(SipUri::parse("sip:+1-555;phone-context=x@127.0.0.1").is_ok());
        let dotted = SipUri::parse_aor("sip:john.doe@example.com").unwrap();
        assert_eq!((dotted.user(), dotted.host()), (Some("john.doe"), "example.com".to_owned()));
        assert_eq!(SipUri::parse("sip:bob:secret@example.com"), Err(SipUriError::HasPassword));
        assert!(SipUri::parse("sip:bob@127.0.0.1:5060;transport=tcp?Subject=hi").is_ok());
    }

    #[test]
    fn reads_aor_with_user_host_and_params() {
        let uri = SipUri::parse_aor("sip:alice@example.com;transport=tcp").unwrap();
        assert_eq!(uri.user(), Some("alice"));
        assert_eq!(uri.host(), "example.com");
        assert!(!uri.is_sips());
        assert_eq!(uri.to_string(), "sip:alice@example.com;transport=tcp");
        let sips = SipUri::parse_aor("sips:bob@127.0.0.1:5061").unwrap();
        assert!(sips.is_sips());
        assert_eq!(sips.port(), Some(5061));
        assert_eq!(uri.port(), None);
    }

    #[test]
    fn registrar_needs_no_user() {
        let uri = SipUri::parse("sip:sip.example.com;transport=tls").unwrap();
        assert_eq!(uri.user(), None);
        assert_eq!(SipUri::parse_aor("sip:sip.example.com"), Err(SipUriError::NoUser));
    }

    #[test]
    fn refuses_what_is_not_a_sip_uri() {
        assert_eq!(SipUri::parse(""), Err(SipUriError::Empty));
        assert_eq!(SipUri::parse("sip:al ice@example.com"), Err(SipUriError::BadCharacter));
        assert_eq!(SipUri::parse("tel:+15551234"), Err(SipUriError::WrongScheme));
        assert_eq!(SipUri::parse("alice@example.com"), Err(SipUriError::WrongScheme));
        assert_eq!(SipUri::parse("http://example.com"), Err(SipUriError::WrongScheme));
        assert!(matches!(SipUri::parse("sip:"), Err(SipUriError::Syntax(_) | SipUriError::NoHost)));
        assert!(SipUri::parse("sip:alice@example.com>junk").is_err());
    }

    #[test]
    fn refuses_a_password_in_the_uri() {
        assert_eq!(SipUri::parse_aor("sip:alice:hunter2@example.com"), Err(SipUriError::HasPassword));
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for text in ["sip:@", "sip::::", "sips:a@[::1", "sip:a@b:99999999", "sip:\u{1F600}@x", "sip:a@b;;;="]
        {
            let _ = SipUri::parse(text);
        }
    }
}
