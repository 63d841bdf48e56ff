//! The correlation model (cusax-wire 1 and 2): bindings between a person's JID and their SIP
//! addresses, each with where it came from and whether it is verified.
//!
//! The verification rule (RFC 7081 §3.3, §3.5; RFC 6993 §2): a binding is verified only when
//! the peer's own vCard, fetched over their authenticated XMPP account, lists the SIP address
//! or number. Everything else (a Call-Info cue, `<reach>`, the same user@domain on both
//! sides) is a hint, shown but flagged.
//!
//! [`matching`] decides which chat an INVITE continues and which call a chat message joins.

pub mod matching;

use crate::xmpp::vcard::Tel;

/// Where a binding was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingSource {
    VCard,
    ReachPresence,
    ReachPep,
    SipContact,
    CallInfo,
    XmppContact,
    /// `sip:u@d` and `u@d`: the draft's "recommended to correspond", a guess.
    SameProvider,
    Manual,
}

/// A JID <-> SIP address binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The bare JID.
    pub jid: String,
    /// The SIP address (`sip:`/`sips:` URI) or number (`tel:+…`), as learnt.
    pub sip: String,
    pub source: BindingSource,
    pub verified: bool,
}

/// What a SIP address or telephone entry names, for comparing them: `user@host` (host in
/// lower case, URI parameters dropped) or an E.164 number (`+` and digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Address(String),
    Number(String),
}

/// Reads `sip:`, `sips:`, `tel:` (also `tel:user@host`, as Prosody writes a converted
/// `user@host`: cusax-wire P20), `user@host` and dial strings (`+1 415 555-0123`).
pub fn identity(text: &str) -> Option<Identity> {
    let text = text.trim().trim_start_matches('<').trim_end_matches('>');
    let lower = text.to_ascii_lowercase();
    let rest = ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|s| lower.starts_with(s).then(|| &text[s.len()..]))
        .unwrap_or(text);
    let rest = rest.split([';', '?', '>']).next().unwrap_or(rest);
    if let Some((user, host)) = rest.split_once('@') {
        // The port goes; an IPv6 reference keeps its colons inside its brackets.
        let host = match host.strip_prefix('[') {
            Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or(v6)),
            None => host.split(':').next().unwrap_or(host).to_owned(),
        }
        .to_ascii_lowercase();
        if user.is_empty() || host.is_empty() {
            return None;
        }
        // sip:+4930123456@host;user=phone is the number.
        return match number(user) {
            Some(n) if user.starts_with('+') => Some(Identity::Number(n)),
            _ => Some(Identity::Address(format!("{user}@{host}"))),
        };
    }
    number(rest).map(Identity::Number)
}

/// An E.164 number from a dial string: `+` then 7 to 15 digits, visual separators dropped.
fn number(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let body = digits.strip_prefix('+')?;
    (7..=15).contains(&body.len()).then_some(())?;
    body.chars().all(|c| c.is_ascii_digit()).then(|| format!("+{body}"))
}

/// Whether `tels` (a peer's vCard) lists the SIP address or number `sip`: the verification
/// rule. Exact identity, not Jitsi's substring match (which would let `bob@example.com`
/// verify `bob@example.com.evil.org`).
pub fn vcard_lists(tels: &[Tel], sip: &str) -> bool {
    let Some(wanted) = identity(sip) else { return false };
    tels.iter().filter_map(|t| identity(&t.number)).any(|id| id == wanted)
}

/// The same-provider guess (draft §3.1): `sip:u@d` for `u@d`. Never verified.
pub fn same_provider(jid: &str, sip: &str) -> bool {
    matches!(identity(sip), Some(Identity::Address(a)) if a.eq_ignore_ascii_case(jid.split('/').next().unwrap_or(jid)))
}

impl Binding {
    /// A binding from `source`, verified against the peer's vCard telephones when known.
    pub fn new(jid: &str, sip: &str, source: BindingSource, vcard: Option<&[Tel]>) -> Self {
        let verified = source == BindingSource::VCard || vcard.is_some_and(|tels| vcard_lists(tels, sip));
        Self { jid: jid.to_owned(), sip: sip.to_owned(), source, verified }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tel(number: &str) -> Tel {
        Tel { number: number.into(), types: vec!["work".into(), "voice".into()] }
    }

    #[test]
    fn every_written_form_names_the_same_identity() {
        let bob = Some(Identity::Address("bob@example.com".into()));
        for form in [
            "sip:bob@example.com",
            "sips:bob@EXAMPLE.com;transport=tls",
            "<sip:bob@example.com:5061>",
            "tel:bob@example.com",
            "bob@example.com",
        ] {
            assert_eq!(identity(form), bob, "{form}");
        }
        let number = Some(Identity::Number("+14155550123".into()));
        for form in [
            "tel:+14155550123",
            "+1 (415) 555-0123",
            "sip:+14155550123@example.com;user=phone",
            "tel:+1.415.555.0123",
        ] {
            assert_eq!(identity(form), number, "{form}");
        }
        for junk in
            ["", "sip:", "sip:@example.com", "5550123", "+12", "tel:+1415555012345678", "+1415abc0123"]
        {
            assert_eq!(identity(junk), None, "{junk}");
        }
        assert_ne!(identity("sip:Bob@example.com"), bob, "the user part keeps its case");
        assert_eq!(
            identity("sip:bob@[2001:db8::1]:5060"),
            Some(Identity::Address("bob@[2001:db8::1]".into()))
        );
        assert_ne!(identity("sip:bob@[2001:db8::66]"), identity("sip:bob@[2001:db8::1]"));
    }

    #[test]
    fn only_the_peers_own_vcard_verifies() {
        let card = [tel("bob@example.com"), tel("+1 415 555 0123")];
        assert!(vcard_lists(&card, "sip:bob@example.com"));
        assert!(vcard_lists(&card, "tel:+14155550123"));
        assert!(!vcard_lists(&card, "sip:bob@example.com.evil.org"), "no substring matches");
        assert!(!vcard_lists(&card, "sip:mallory@example.com"));
        assert!(!vcard_lists(&[], "sip:bob@example.com"));
        let hint = Binding::new("bob@example.com", "sip:bob@example.com", BindingSource::CallInfo, None);
        assert!(!hint.verified, "a Call-Info cue alone is a hint");
        let checked =
            Binding::new("bob@example.com", "sip:bob@example.com", BindingSource::CallInfo, Some(&card));
        assert!(checked.verified);
        assert!(same_provider("bob@example.com/phone", "sip:bob@example.com"));
        assert!(!same_provider("bob@example.com", "sip:bob@example.org"));
    }
}
