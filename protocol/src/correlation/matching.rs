//! Which chat an INVITE belongs to, and which call a chat message belongs to (cusax-wire 3.3,
//! 3.6, 3.11), as pure decisions over the contexts the hub keeps.
//!
//! Thread ids and correlation tokens are bearer secrets (P17), but a secret alone is not
//! enough: the INVITE's SIP identity must be bound to the conversation's peer, and a message
//! must come live, directly, from the JID the call named (never from a carbon, an archive
//! result or a delayed stanza: P12), from someone we share addresses with.

use super::{Binding, identity};

/// A conversation as correlation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationContext {
    /// The peer's bare JID.
    pub peer: String,
    pub thread: String,
    /// The SIP targets the peer sent in this thread (`sip-contact`, `<reach>`).
    pub peer_targets: Vec<String>,
    /// When the thread was last used (Unix ms).
    pub last_activity_ms: i64,
    /// Ended by `<gone/>` or a local close.
    pub ended: bool,
}

impl ConversationContext {
    /// Alive: not ended, and used within `idle_ms` (cusax-wire 7.2: 30 minutes).
    pub fn is_active(&self, now_ms: i64, idle_ms: i64) -> bool {
        !self.ended && now_ms.saturating_sub(self.last_activity_ms) <= idle_ms
    }
}

/// What an incoming INVITE says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InviteFacts {
    /// `P-Asserted-Identity`, when the proxy gave one.
    pub asserted: Option<String>,
    /// The `From` URI.
    pub from: String,
    /// `XMPP-Thread`.
    pub thread: Option<String>,
}

/// The conversation an INVITE continues (index into `conversations`): its `XMPP-Thread` is
/// that conversation's thread, the conversation is alive, and the caller's identity (PAI,
/// else From) is one the peer is bound to: a target they sent us in the thread, or a
/// verified binding of theirs. The callee then echoes `XMPP-Thread` in its 2xx.
pub fn match_invite(
    invite: &InviteFacts,
    conversations: &[ConversationContext],
    bindings: &[Binding],
    now_ms: i64,
    idle_ms: i64,
) -> Option<usize> {
    let thread = invite.thread.as_deref()?;
    let caller = identity(invite.asserted.as_deref().unwrap_or(&invite.from))?;
    conversations.iter().position(|c| {
        c.is_active(now_ms, idle_ms)
            && secret_eq(&c.thread, thread)
            && (c.peer_targets.iter().any(|t| identity(t).as_ref() == Some(&caller))
                || bindings
                    .iter()
                    .any(|b| b.verified && b.jid == c.peer && identity(&b.sip).as_ref() == Some(&caller)))
    })
}

/// A call as correlation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The full JID the peer named in `XMPP-Contact`.
    pub peer_jid: String,
    /// The correlation token of the call's `XMPP-Contact` exchange.
    pub correlation: String,
    /// Not ended by BYE, CANCEL or a final non-2xx.
    pub active: bool,
}

/// How a message reached us, as far as trust goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Live and addressed to us.
    Direct,
    /// A carbon, an archive result, or anything with a delay stamp: never correlates.
    Copy,
}

/// The call a `<sip-correlation value>` message belongs to (index into `calls`): only live,
/// direct messages from someone we share addresses with (`allowed`), whose sender is the JID
/// the call named (the full JID; else the same bare JID, as the peer may have reconnected
/// with a new resource), and whose value is the call's token.
pub fn match_message(
    from: &str,
    value: &str,
    delivery: Delivery,
    allowed: bool,
    calls: &[CallContext],
) -> Option<usize> {
    if delivery != Delivery::Direct || !allowed {
        return None;
    }
    let bare = |jid: &str| jid.split('/').next().unwrap_or(jid).to_owned();
    let live = |c: &&CallContext| c.active && secret_eq(&c.correlation, value);
    calls
        .iter()
        .position(|c| live(&c) && c.peer_jid == from)
        .or_else(|| calls.iter().position(|c| live(&c) && bare(&c.peer_jid) == bare(from)))
}

/// Compares secrets in time that does not depend on where they differ.
pub fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::super::BindingSource;
    use super::*;

    const THREAD: &str = "e0ffe42b-2856-4196-8c6b-12b944a09279";
    const IDLE: i64 = 30 * 60 * 1000;

    fn chat_with_bob() -> ConversationContext {
        ConversationContext {
            peer: "bob@example.com".into(),
            thread: THREAD.into(),
            peer_targets: vec!["sip:bob@example.com;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6".into()],
            last_activity_ms: 1_000,
            ended: false,
        }
    }

    fn invite(from: &str, thread: &str) -> InviteFacts {
        InviteFacts { asserted: None, from: from.into(), thread: Some(thread.into()) }
    }

    #[test]
    fn an_invite_from_the_peer_with_the_thread_continues_the_chat() {
        let chats = [chat_with_bob()];
        assert_eq!(match_invite(&invite("sip:bob@example.com", THREAD), &chats, &[], 2_000, IDLE), Some(0));
        // Bound by a verified binding instead of a target sent in the thread.
        let mut no_targets = chat_with_bob();
        no_targets.peer_targets.clear();
        let vcard = Binding {
            jid: "bob@example.com".into(),
            sip: "sip:bob@example.com".into(),
            source: BindingSource::VCard,
            verified: true,
        };
        assert_eq!(
            match_invite(
                &invite("sip:bob@example.com", THREAD),
                &[no_targets.clone()],
                std::slice::from_ref(&vcard),
                2_000,
                IDLE
            ),
            Some(0)
        );
        let hint = Binding { verified: false, source: BindingSource::CallInfo, ..vcard };
        assert_eq!(
            match_invite(&invite("sip:bob@example.com", THREAD), &[no_targets], &[hint], 2_000, IDLE),
            None,
            "an unverified hint does not bind"
        );
    }

    #[test]
    fn a_stolen_thread_an_ended_or_idle_chat_and_no_thread_link_nothing() {
        let chats = [chat_with_bob()];
        assert_eq!(match_invite(&invite("sip:mallory@example.com", THREAD), &chats, &[], 2_000, IDLE), None);
        let asserted = InviteFacts {
            asserted: Some("sip:mallory@example.com".into()),
            ..invite("sip:bob@example.com", THREAD)
        };
        assert_eq!(match_invite(&asserted, &chats, &[], 2_000, IDLE), None, "PAI speaks over From");
        assert_eq!(match_invite(&invite("sip:bob@example.com", "another"), &chats, &[], 2_000, IDLE), None);
        assert_eq!(
            match_invite(&invite("sip:bob@example.com", THREAD), &chats, &[], 1_000 + IDLE + 1, IDLE),
            None
        );
        let ended = ConversationContext { ended: true, ..chat_with_bob() };
        assert_eq!(match_invite(&invite("sip:bob@example.com", THREAD), &[ended], &[], 2_000, IDLE), None);
        let plain = InviteFacts { thread: None, ..invite("sip:bob@example.com", THREAD) };
        assert_eq!(match_invite(&plain, &chats, &[], 2_000, IDLE), None, "a stock caller stays uncorrelated");
    }

    #[test]
    fn a_correlation_message_links_only_live_from_the_named_jid() {
        let calls = [
            CallContext { peer_jid: "carol@example.com/x".into(), correlation: "0".repeat(32), active: true },
            CallContext {
                peer_jid: "bob@example.com/cusaxd".into(),
                correlation: "7c9e".repeat(8),
                active: true,
            },
        ];
        let token = "7c9e".repeat(8);
        let ok = |from: &str, delivery, allowed| match_message(from, &token, delivery, allowed, &calls);
        assert_eq!(ok("bob@example.com/cusaxd", Delivery::Direct, true), Some(1));
        assert_eq!(ok("bob@example.com/new-resource", Delivery::Direct, true), Some(1), "bare JID fallback");
        assert_eq!(ok("bob@example.com/cusaxd", Delivery::Copy, true), None, "a carbon or archive replay");
        assert_eq!(ok("bob@example.com/cusaxd", Delivery::Direct, false), None, "a stranger");
        assert_eq!(ok("mallory@example.com/cusaxd", Delivery::Direct, true), None);
        assert_eq!(match_message("bob@example.com/cusaxd", "wrong", Delivery::Direct, true, &calls), None);
        let ended = [CallContext { active: false, ..calls[1].clone() }];
        assert_eq!(match_message("bob@example.com/cusaxd", &token, Delivery::Direct, true, &ended), None);
    }
}
