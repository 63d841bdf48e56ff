//! The user's own XMPP address (RFC 7622), as given in config.

use std::fmt;

use jid::BareJid;

/// Why a text is not an acceptable account JID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountJidError {
    #[error("not a JID: {0}")]
    Syntax(String),
    #[error("an account JID needs a local part (user@domain)")]
    NoLocalpart,
    #[error("give the bare JID (user@domain); cusaxd chooses its own resource")]
    HasResource,
}

/// A bare JID with a local part: the only form that can log in to an account. A JID without
/// a local part would make the XMPP library panic at login (crates.md 3.2), so it is refused
/// here, when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountJid(BareJid);

impl AccountJid {
    pub fn parse(text: &str) -> Result<Self, AccountJidError> {
        if text.contains('/') {
            return Err(AccountJidError::HasResource);
        }
        let jid = BareJid::new(text).map_err(|e| AccountJidError::Syntax(e.to_string()))?;
        if jid.node().is_none() {
            return Err(AccountJidError::NoLocalpart);
        }
        Ok(Self(jid))
    }

    pub fn bare(&self) -> &BareJid {
        &self.0
    }
}

impl fmt::Display for AccountJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bare_jid_and_normalises_it() {
        let jid = AccountJid::parse("Alice@Example.ORG").unwrap();
        assert_eq!(jid.to_string(), "alice@example.org");
    }

    #[test]
    fn refuses_domain_only_full_and_malformed() {
        assert_eq!(AccountJid::parse("example.org"), Err(AccountJidError::NoLocalpart));
        assert_eq!(AccountJid::parse("alice@example.org/laptop"), Err(AccountJidError::HasResource));
        assert!(matches!(AccountJid::parse(""), Err(AccountJidError::Syntax(_))));
        assert!(matches!(AccountJid::parse("a@b@c"), Err(AccountJidError::Syntax(_))));
        assert!(matches!(AccountJid::parse("@example.org"), Err(AccountJidError::Syntax(_))));
    }
}
