//! What a user may dial, turned into a Request-URI: a `sip:`/`sips:` URI, a `tel:` URI or an
//! E.164 number (RFC 3966; sent as `sip:+number@our-domain;user=phone`).

use super::uri::{SipUri, SipUriError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("empty address")]
    Empty,
    #[error("{0}")]
    Sip(#[from] SipUriError),
    #[error("not a phone number: {0:?} (use +, digits and visual separators)")]
    Number(String),
    #[error("not an address cusax can call: {0:?} (give sip:, sips:, tel: or +E.164)")]
    Unknown(String),
}

/// The Request-URI for `target`; numbers go to `domain` (the host of our address of record).
pub fn call_target(target: &str, domain: &str) -> Result<String, TargetError> {
    let target = target.trim();
    if target.is_empty() {
        return Err(TargetError::Empty);
    }
    let lower = target.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        return Ok(SipUri::parse(target)?.to_string());
    }
    let number = if lower.starts_with("tel:") {
        target[4..].split(';').next().unwrap_or_default()
    } else if target.starts_with('+') {
        target
    } else {
        return Err(TargetError::Unknown(target.to_owned()));
    };
    // Visual separators (RFC 3966 section 5.1.1) go; what is left must be + and digits.
    let digits: String = number.chars().filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' ')).collect();
    let valid =
        digits.starts_with('+') && digits.len() > 2 && digits[1..].chars().all(|c| c.is_ascii_digit());
    if !valid || digits.len() > 16 {
        return Err(TargetError::Number(number.to_owned()));
    }
    Ok(format!("sip:{digits}@{domain};user=phone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_numbers() {
        assert_eq!(call_target("sip:bob@127.0.0.1", "x"), Ok("sip:bob@127.0.0.1".into()));
        assert_eq!(call_target(" sips:bob@example.com ", "x"), Ok("sips:bob@example.com".into()));
        assert_eq!(
            call_target("tel:+1-555-0100", "example.com"),
            Ok("sip:+15550100@example.com;user=phone".into())
        );
        assert_eq!(
            call_target("+44 (20) 7946.0000", "example.com"),
            Ok("sip:+442079460000@example.com;user=phone".into())
        );
    }

    #[test]
    fn what_cannot_be_called() {
        assert_eq!(call_target("", "x"), Err(TargetError::Empty));
        assert!(matches!(call_target("sip:", "x"), Err(TargetError::Sip(_))));
        assert!(matches!(call_target("tel:+12ab", "x"), Err(TargetError::Number(_))));
        assert!(matches!(call_target("+", "x"), Err(TargetError::Number(_))));
        assert!(matches!(call_target("+12345678901234567", "x"), Err(TargetError::Number(_))));
        assert!(matches!(call_target("bob", "x"), Err(TargetError::Unknown(_))));
        assert!(matches!(call_target("http://x", "x"), Err(TargetError::Unknown(_))));
    }
}
