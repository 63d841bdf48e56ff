//! The hub's CUSAX half (cusax-wire 2 and 3): it joins calls and conversations.
//!
//! - Add a call to a chat (REQ-1, REQ-2): our first message in each thread to a contact we
//!   share with carries our `sip-contact` and `<reach>`; `StartCall` calls the peer's learned
//!   target with `XMPP-Thread`, `XMPP-Contact` and `Call-Info`; the callee links the INVITE to
//!   the conversation ([`match_invite`]) and echoes the thread in its 2xx, which links the
//!   call at the caller.
//! - Add a chat to a call (REQ-3, REQ-4): the INVITE and its 2xx exchange `XMPP-Contact` (full
//!   JID and the call's token) and `Call-Info`; `StartChat` opens a chat to the peer's full JID
//!   whose first message carries `sip-correlation`; the receiver links it ([`match_message`])
//!   and echoes the value in its first reply, which links it at the sender.
//! - A contact-level match (RFC 7081 3.5): the `Call-Info` impp JID of a roster contact,
//!   verified when that contact's own vCard lists the caller.
//!
//! Trust (P12, P16, P17): nothing of ours goes to someone we do not share with
//! (`correlation.share_with`), nothing links from a carbon, an archive result, a delayed
//! stanza or a stranger, and an INVITE's thread counts only from a SIP identity the peer is
//! bound to. Threads and tokens are secrets: never on D-Bus, never logged above debug.

use cusax_protocol::correlation::matching::{
    self, ConversationContext, Delivery, InviteFacts, match_invite, match_message, secret_eq,
};
use cusax_protocol::correlation::{Binding, BindingSource, identity, vcard_lists};
use cusax_protocol::sip::cusax_headers::{SipCusax, XmppContact, is_token};
use cusax_protocol::sip::registration::random_hex;
use cusax_protocol::xmpp::cusax::{self, MessageCusax, SipTarget};
use tokio::sync::oneshot;
use tracing::{debug, info_span};
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::minidom::Element;

use super::messaging::{ContactId, ConversationId, MessagingError, find_by_sip, parse_peer};
use super::{Hub, XmppState};
use crate::config::ShareWith;
use crate::sip::{CallCommand, CallError, CallFacts, CallId, OsEntropy};
use crate::xmpp::XmppCommand;

/// What the hub adds to a call it places; the SIP actor hands it back with the call's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedLink {
    /// The CUSAX headers of the INVITE.
    pub cusax: SipCusax,
    /// The conversation the call continues.
    pub conversation: Option<ConversationId>,
    /// The contact called.
    pub contact: Option<ContactId>,
    /// The SIP address called.
    pub target: String,
}

/// What the daemon shows of a call's XMPP side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallLink {
    /// The conversation the call belongs to.
    pub conversation: Option<ConversationId>,
    /// Both sides know it: the far end echoed our thread or token, or (as callee) we
    /// matched its thread and echo it.
    pub correlated: bool,
    /// The roster contact the far end is.
    pub contact: Option<ContactId>,
    /// That contact's own vCard lists the far end's SIP identity (RFC 7081 3.3, 3.5).
    pub contact_verified: bool,
    /// The JID the far end named (`XMPP-Contact`, else `Call-Info`), or "".
    pub peer_jid: String,
}

/// What the hub keeps of a call for correlation. Holds secrets: never shown.
#[derive(Debug, Default)]
pub(super) struct CallCorrelation {
    /// What D-Bus shows.
    pub(super) shown: CallLink,
    /// The call's correlation token (the caller's `XMPP-Contact`; the callee copies it).
    token: Option<String>,
    /// The far end's full JID from its `XMPP-Contact`.
    peer_contact: Option<String>,
    /// The thread our INVITE named: its echo in the 2xx confirms the link.
    thread_sent: Option<String>,
    /// The thread our 2xx echoes (an INVITE we matched to a conversation).
    echo: Option<String>,
    /// The far end learns our JID from us (`XMPP-Contact`, `Call-Info`).
    share: bool,
    /// The far end's SIP identity: PAI, else From; for our calls the address called.
    identity: String,
    pub(super) active: bool,
    /// An incoming call's INVITE, judged again when the user answers.
    invite: Option<CallFacts>,
}

impl CallCorrelation {
    fn apply(&mut self, verdict: InviteVerdict, facts: &CallFacts) {
        self.shown.conversation = verdict.matched.or(self.shown.conversation);
        self.shown.correlated = verdict.matched.is_some();
        self.shown.contact = verdict.contact;
        self.shown.contact_verified = verdict.verified;
        self.shown.peer_jid = verdict.named.clone().or(facts.cusax.impp.clone()).unwrap_or_default();
        self.echo = verdict.matched.and(facts.cusax.thread.clone());
        self.share = verdict.share;
        // The token goes with the JID that named it: not taken, not copied.
        self.token = verdict.named.as_ref().and(facts.cusax.contact.as_ref()).map(|c| c.correlation.clone());
        self.peer_contact = verdict.named;
    }
}

/// What an incoming INVITE is worth (see `Hub::judge_invite`).
struct InviteVerdict {
    /// The conversation it continues.
    matched: Option<ConversationId>,
    /// The bare JID it is about.
    cue: Option<String>,
    contact: Option<ContactId>,
    /// The contact's vCard lists the caller.
    verified: bool,
    /// We tell the caller our JID.
    share: bool,
    /// The full JID its XMPP-Contact names, when taken.
    named: Option<String>,
}

/// A conversation's `sip-correlation` (REQ-4). The token is a secret: never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatCorrelation {
    pub token: String,
    pub call: CallId,
    /// Our next message carries the value: the first of a chat added to a call, or the
    /// echo in our first reply.
    pub carry: bool,
}

/// A new correlation token: 128 bits from the OS CSPRNG (cusax-wire 7.4).
fn new_token() -> String {
    random_hex(&mut OsEntropy, 16)
}

fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

impl Hub {
    /// Whether our addresses go to `jid` (cusax-wire 7.1): a roster contact with a mutual
    /// subscription by default.
    pub(super) fn shares_with(&self, jid: &str) -> bool {
        let contact = self.contact(bare(jid));
        match self.config.correlation.share_with {
            ShareWith::Nobody => false,
            ShareWith::Roster => contact.is_some(),
            ShareWith::Mutual => contact.is_some_and(|c| c.subscription == "both"),
        }
    }

    /// Whether `jid` itself published the SIP identity `sip`: in its presence, its vCard, or
    /// a thread of ours with it.
    fn bound_to(&self, jid: &str, sip: &str) -> bool {
        let Some(wanted) = identity(sip) else { return false };
        let named = |address: &String| identity(address).as_ref() == Some(&wanted);
        let published =
            self.contact(jid).is_some_and(|c| c.sip_addresses().iter().chain(&c.numbers()).any(named));
        published
            || self
                .status
                .borrow()
                .conversations
                .values()
                .any(|c| c.peer == jid && c.peer_targets.iter().any(named))
    }

    fn own_jids(&self) -> Option<(String, Option<String>)> {
        let jid = self.account()?;
        let full = self.own_full_jid.clone().filter(|_| self.status.borrow().xmpp_state == XmppState::Online);
        Some((jid, full))
    }

    /// Our CUSAX elements for the next message of `conversation` (REQ-1, REQ-4): our
    /// `sip-contact` and `<reach>` once per thread (again when our GRUU changes), and the
    /// `sip-correlation` it must carry. Nothing to someone we do not share with.
    pub(super) fn message_extras(&mut self, conversation: ConversationId) -> Vec<Element> {
        let Some(peer) = self.status.borrow().conversations.get(&conversation).map(|c| c.peer.clone()) else {
            return Vec::new();
        };
        if !self.shares_with(&peer) {
            return Vec::new();
        }
        let targets = self.sip_presence.as_ref().map(|s| s.targets.clone()).unwrap_or_default();
        let live_calls: Vec<CallId> =
            self.call_contexts.iter().filter(|(_, c)| c.active).map(|(id, _)| *id).collect();
        let mut extras = Vec::new();
        self.status.send_if_modified(|s| {
            let Some(c) = s.conversations.get_mut(&conversation) else { return false };
            if let Some(first) = targets.first()
                && c.contact_sent.as_ref() != Some(first)
            {
                extras
                    .push(cusax::sip_contact(&SipTarget { uri: first.clone(), tags: vec!["audio".into()] }));
                extras.push(cusax::reach(&targets));
                c.contact_sent = Some(first.clone());
            }
            if let Some(correlation) = c.correlation.as_mut().filter(|c| c.carry) {
                // Not for a call that ended (cusax-wire 3.11).
                if live_calls.contains(&correlation.call) {
                    extras.push(cusax::sip_correlation(&correlation.token));
                }
                correlation.carry = false;
            }
            false
        });
        extras
    }

    /// A message's CUSAX elements (REQ-1, REQ-4). Only a live message, addressed to us, from
    /// someone we share with, teaches targets or links a call.
    pub(super) fn on_message_cusax(
        &mut self,
        conversation: ConversationId,
        from: &str,
        cusax: MessageCusax,
        live: bool,
    ) {
        let Some(peer) = self.status.borrow().conversations.get(&conversation).map(|c| c.peer.clone()) else {
            return;
        };
        let allowed = self.shares_with(&peer);
        let _span = info_span!("conversation", id = conversation).entered();
        let targets = cusax.targets();
        if live && allowed && !targets.is_empty() {
            debug!(targets = targets.len(), "the peer's SIP targets for this thread");
            self.status.send_if_modified(|s| {
                let Some(c) = s.conversations.get_mut(&conversation) else { return false };
                c.peer_targets = targets;
                false
            });
        }
        let Some(value) = cusax.correlation else { return };
        // The echo of the value we sent: the chat we added to the call is linked.
        let ours = self.status.borrow().conversations.get(&conversation).and_then(|c| c.correlation.clone());
        if let Some(ours) = ours.filter(|o| live && allowed && secret_eq(&o.token, &value)) {
            if let Some(context) = self.call_contexts.get_mut(&ours.call).filter(|c| c.active) {
                debug!(call = ours.call, "the peer echoed the call's correlation");
                context.shown.correlated = true;
                context.shown.conversation = Some(conversation);
                self.show_link(ours.call);
            }
            return;
        }
        let delivery = if live { Delivery::Direct } else { Delivery::Copy };
        let calls: Vec<(CallId, matching::CallContext)> = self
            .call_contexts
            .iter()
            .filter_map(|(id, c)| {
                let context = matching::CallContext {
                    peer_jid: c.peer_contact.clone()?,
                    correlation: c.token.clone()?,
                    active: c.active,
                };
                Some((*id, context))
            })
            .collect();
        let contexts: Vec<matching::CallContext> = calls.iter().map(|(_, c)| c.clone()).collect();
        let Some(at) = match_message(from, &value, delivery, allowed, &contexts) else {
            debug!(live, allowed, "a sip-correlation that matches no call of ours: not linked");
            return;
        };
        let call = calls[at].0;
        debug!(call, "a chat added to the call");
        self.status.send_if_modified(|s| {
            let Some(c) = s.conversations.get_mut(&conversation) else { return false };
            c.correlation = Some(ChatCorrelation { token: value, call, carry: true });
            false
        });
        if let Some(context) = self.call_contexts.get_mut(&call) {
            context.shown.conversation = Some(conversation);
            context.shown.correlated = true;
        }
        self.show_link(call);
    }

    /// Puts a call's link into the published status.
    fn show_link(&mut self, call: CallId) {
        let Some(shown) = self.call_contexts.get(&call).map(|c| c.shown.clone()) else { return };
        self.status.send_if_modified(|s| match s.calls.get_mut(&call) {
            Some(info) if info.link != shown => {
                info.link = shown;
                true
            }
            _ => false,
        });
    }

    /// A call request on its way to the SIP actor: a call gets its target (for a JID) and
    /// its CUSAX headers, an answer its echo.
    pub(super) async fn on_call_command(&mut self, command: CallCommand) {
        match command {
            CallCommand::Place { target, link: None, reply } => match self.resolve_call(&target, None) {
                Ok((target, link)) => self.sip.call(CallCommand::Place { target, link, reply }).await,
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            CallCommand::Answer { call, headers, reply } if headers.is_empty() => {
                self.rejudge(call);
                let headers = self.answer_headers(call);
                self.sip.call(CallCommand::Answer { call, headers, reply }).await;
            }
            other => self.sip.call(other).await,
        }
    }

    /// `Conversation.StartCall`: the peer's learned target, with the thread.
    pub(super) async fn start_call(
        &mut self,
        conversation: ConversationId,
        reply: oneshot::Sender<Result<CallId, CallError>>,
    ) {
        let peer = self.status.borrow().conversations.get(&conversation).map(|c| c.peer.clone());
        let resolved = match peer {
            None => Err(CallError::NotFound),
            Some(peer) => self.resolve_call(&peer, Some(conversation)),
        };
        match resolved {
            Ok((target, link)) => self.sip.call(CallCommand::Place { target, link, reply }).await,
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// What to call for `target` (a SIP address, a number, or a JID whose SIP address we
    /// learnt) and what to tell the far end (REQ-2, REQ-3).
    fn resolve_call(
        &self,
        target: &str,
        conversation: Option<ConversationId>,
    ) -> Result<(String, Option<Box<PlacedLink>>), CallError> {
        let lower = target.trim().to_ascii_lowercase();
        let is_jid = lower.starts_with("xmpp:")
            || (lower.contains('@') && !["sip:", "sips:", "tel:"].iter().any(|s| lower.starts_with(s)));
        let (address, peer) = if is_jid {
            let (jid, _) = parse_peer(target).map_err(|e| CallError::InvalidAddress(e.to_string()))?;
            let address = self.learned_target(jid.as_str(), conversation).ok_or_else(|| {
                CallError::InvalidAddress(format!("no SIP address is known for {jid}: they published none"))
            })?;
            (address, Some(jid.to_string()))
        } else {
            // Only a contact who published this address learns our JID and threads through
            // it: not one the same-provider guess or someone else's claim points at.
            let peer = find_by_sip(&self.status.borrow().contacts, target.trim())
                .and_then(|id| self.status.borrow().contacts.get(&id).map(|c| c.jid.clone()))
                .filter(|jid| self.bound_to(jid, target.trim()));
            (target.trim().to_owned(), peer)
        };
        let Some(peer) = peer.filter(|_| self.config.xmpp.is_some()) else { return Ok((address, None)) };
        let contact = self.contact_ids.get(&peer).copied();
        let now = crate::xmpp::now_ms();
        let idle = self.idle_ms();
        let conversation = conversation.or_else(|| {
            let status = self.status.borrow();
            status.conversations.iter().find(|(_, c)| c.peer == peer).map(|(id, _)| *id)
        });
        let mut cusax = SipCusax::default();
        if self.shares_with(&peer)
            && let Some((own, full)) = self.own_jids()
        {
            cusax.impp = Some(own);
            cusax.contact = full.map(|jid| XmppContact { jid, correlation: new_token() });
            let status = self.status.borrow();
            cusax.thread = conversation
                .and_then(|id| status.conversations.get(&id))
                .filter(|c| c.context().is_active(now, idle))
                .map(|c| c.thread.clone());
        }
        Ok((address.clone(), Some(Box::new(PlacedLink { cusax, conversation, contact, target: address }))))
    }

    /// Where to call `jid`: the target they sent in our thread, else what their presence
    /// and vCard name (SIP addresses first, then numbers).
    fn learned_target(&self, jid: &str, conversation: Option<ConversationId>) -> Option<String> {
        let status = self.status.borrow();
        let in_thread = conversation
            .and_then(|id| status.conversations.get(&id))
            .or_else(|| status.conversations.values().find(|c| c.peer == jid))
            .and_then(|c| c.peer_targets.first().cloned());
        drop(status);
        in_thread.or_else(|| {
            let contact = self.contact(jid)?;
            contact.sip_addresses().into_iter().chain(contact.numbers()).next()
        })
    }

    fn idle_ms(&self) -> i64 {
        i64::try_from(self.config.correlation.thread_idle.as_millis()).unwrap_or(i64::MAX)
    }

    /// Our call went out: what it told the far end.
    pub(super) fn on_call_placed(&mut self, id: CallId, link: PlacedLink) {
        let contact_verified = link
            .contact
            .and_then(|c| {
                self.status.borrow().contacts.get(&c).map(|c| vcard_lists(&c.telephones, &link.target))
            })
            .unwrap_or(false);
        let context = CallCorrelation {
            shown: CallLink {
                conversation: link.conversation,
                correlated: false,
                contact: link.contact,
                contact_verified,
                peer_jid: String::new(),
            },
            token: link.cusax.contact.as_ref().map(|c| c.correlation.clone()),
            peer_contact: None,
            thread_sent: link.cusax.thread.filter(|t| is_token(t)),
            echo: None,
            share: link.cusax.impp.is_some(),
            identity: link.target,
            active: true,
            invite: None,
        };
        self.call_contexts.insert(id, context);
        self.show_link(id);
    }

    /// An incoming INVITE: which conversation it continues (REQ-2), whom it names (REQ-3,
    /// RFC 7081 3.5). Decided again when the user answers (a vCard may have come since, or
    /// whom we share with may have changed).
    pub(super) fn on_call_invited(&mut self, id: CallId, facts: CallFacts) {
        let _span = info_span!("call", id).entered();
        let verdict = self.judge_invite(&facts);
        if let Some(jid) = verdict.cue.as_deref()
            && let Some(contact) = self.contact(jid).filter(|c| !c.vcard_read)
            && self.status.borrow().xmpp_state == XmppState::Online
            && let Ok(jid) = BareJid::new(&contact.jid)
        {
            // Verification needs their vCard; its arrival rechecks this call.
            let xmpp = self.xmpp.clone();
            tokio::spawn(async move { xmpp.command(XmppCommand::FetchVCard { jid }).await });
        }
        debug!(
            correlated = verdict.matched.is_some(),
            contact = verdict.contact.is_some(),
            share = verdict.share,
            "an INVITE's XMPP side"
        );
        let mut context = CallCorrelation {
            identity: facts.asserted.clone().unwrap_or_else(|| facts.identity.clone()),
            active: true,
            ..CallCorrelation::default()
        };
        context.apply(verdict, &facts);
        context.invite = Some(facts);
        self.call_contexts.insert(id, context);
        self.show_link(id);
    }

    /// What an INVITE's facts are worth now.
    fn judge_invite(&self, facts: &CallFacts) -> InviteVerdict {
        let caller = facts.asserted.clone().unwrap_or_else(|| facts.identity.clone());
        let (ids, contexts): (Vec<ConversationId>, Vec<ConversationContext>) = {
            let status = self.status.borrow();
            status
                .conversations
                .iter()
                .filter(|(_, c)| self.shares_with(&c.peer))
                .map(|(id, c)| (*id, c.context()))
                .unzip()
        };
        let bindings: Vec<Binding> = contexts
            .iter()
            .filter_map(|c| self.contact(&c.peer))
            .flat_map(|contact| {
                let jid = contact.jid.clone();
                contact
                    .telephones
                    .iter()
                    .map(move |t| Binding::new(&jid, &t.number, BindingSource::VCard, None))
                    .collect::<Vec<_>>()
            })
            .collect();
        let invite = InviteFacts {
            asserted: facts.asserted.clone(),
            from: facts.identity.clone(),
            thread: facts.cusax.thread.clone(),
        };
        let now = crate::xmpp::now_ms();
        let matched = match_invite(&invite, &contexts, &bindings, now, self.idle_ms()).map(|at| ids[at]);
        let peer = {
            let status = self.status.borrow();
            matched.and_then(|m| status.conversations.get(&m)).map(|c| c.peer.clone())
        };
        let named = facts.cusax.contact.as_ref().map(|c| c.jid.clone());
        // A call that continues a chat is with that chat's peer: a JID the INVITE names
        // besides is not taken (no token goes to someone else).
        let (cue, named) = match peer {
            Some(peer) => (Some(peer.clone()), named.filter(|n| bare(n) == peer)),
            None => (named.as_deref().map(|n| bare(n).to_owned()).or(facts.cusax.impp.clone()), named),
        };
        let contact = cue.as_deref().and_then(|jid| self.contact_ids.get(jid).copied());
        let verified = cue
            .as_deref()
            .and_then(|jid| self.contact(jid))
            .is_some_and(|c| vcard_lists(&c.telephones, &caller));
        let share = cue.as_deref().is_some_and(|jid| {
            self.shares_with(jid) && (matched.is_some() || (contact.is_some() && self.bound_to(jid, &caller)))
        });
        InviteVerdict { matched, cue, contact, verified, share, named }
    }

    /// The 2xx to our INVITE: the thread echo confirms (REQ-2), the callee's
    /// `XMPP-Contact` with our token names where to add a chat (REQ-3).
    pub(super) fn on_call_answered(&mut self, id: CallId, facts: CallFacts) {
        let _span = info_span!("call", id).entered();
        // Every call we place has a context (CallPlaced comes first); a 2xx after the call
        // ended (crossing our CANCEL) changes nothing.
        let Some(context) = self.call_contexts.get_mut(&id).filter(|c| c.active) else { return };
        if let (Some(sent), Some(echo)) = (&context.thread_sent, &facts.cusax.thread)
            && secret_eq(sent, echo)
        {
            debug!("the callee echoed our thread");
            context.shown.correlated = true;
        }
        if let (Some(token), Some(contact)) = (&context.token, &facts.cusax.contact)
            && secret_eq(token, &contact.correlation)
        {
            context.peer_contact = Some(contact.jid.clone());
            context.shown.peer_jid = contact.jid.clone();
        }
        let impp = facts.cusax.impp.clone();
        if context.shown.peer_jid.is_empty()
            && let Some(jid) = &impp
        {
            context.shown.peer_jid = jid.clone();
        }
        if context.shown.contact.is_none()
            && let Some(contact) = impp.as_deref().and_then(|jid| self.contact_ids.get(jid).copied())
        {
            let identity = context.identity.clone();
            let verified = self
                .status
                .borrow()
                .contacts
                .get(&contact)
                .is_some_and(|c| vcard_lists(&c.telephones, &identity));
            if let Some(context) = self.call_contexts.get_mut(&id) {
                context.shown.contact = Some(contact);
                context.shown.contact_verified = verified;
            }
        }
        self.show_link(id);
    }

    /// Whether the answer to an OPTIONS from `asker` names our JID (cusax-wire OFF-2): only
    /// for a contact we share with who published that SIP identity themselves.
    pub(super) fn options_impp(&self, asker: &str) -> Option<String> {
        let asker = asker.trim();
        let id = find_by_sip(&self.status.borrow().contacts, asker)?;
        let jid = self.status.borrow().contacts.get(&id).map(|c| c.jid.clone())?;
        (self.shares_with(&jid) && self.bound_to(&jid, asker)).then(|| self.account()).flatten()
    }

    /// A contact's vCard came: the calls they are the far end of are verified again.
    pub(super) fn recheck_calls_of(&mut self, contact: ContactId) {
        let tels =
            self.status.borrow().contacts.get(&contact).map(|c| c.telephones.clone()).unwrap_or_default();
        let due: Vec<CallId> = self
            .call_contexts
            .iter()
            .filter(|(_, c)| c.shown.contact == Some(contact))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(context) = self.call_contexts.get_mut(&id) {
                context.shown.contact_verified = vcard_lists(&tels, &context.identity);
            }
            self.show_link(id);
        }
    }

    /// Judges an incoming call's INVITE again, as it is answered.
    fn rejudge(&mut self, call: CallId) {
        let Some(facts) = self.call_contexts.get(&call).and_then(|c| c.invite.clone()) else { return };
        let verdict = self.judge_invite(&facts);
        if let Some(context) = self.call_contexts.get_mut(&call) {
            context.apply(verdict, &facts);
        }
        self.show_link(call);
    }

    /// The CUSAX headers of our 2xx (REQ-2 echo, REQ-3 contact), for a far end we share with.
    fn answer_headers(&self, call: CallId) -> Vec<(String, String)> {
        let Some(context) = self.call_contexts.get(&call).filter(|c| c.share) else { return Vec::new() };
        let Some((own, full)) = self.own_jids() else { return Vec::new() };
        let contact =
            context.token.clone().zip(full).map(|(correlation, jid)| XmppContact { jid, correlation });
        SipCusax { thread: context.echo.clone(), contact, impp: Some(own) }.headers()
    }

    /// `Call.StartChat`: a conversation with the JID the far end named, whose first message
    /// carries the call's token (REQ-4).
    pub(super) fn start_chat(&mut self, call: CallId) -> Result<ConversationId, MessagingError> {
        if self.config.xmpp.is_none() {
            return Err(MessagingError::NotConfigured);
        }
        if !self.status.borrow().calls.contains_key(&call) {
            return Err(MessagingError::NotFound);
        }
        let unnamed = || MessagingError::InvalidAddress("the far end named no XMPP address".into());
        let context = self.call_contexts.get(&call).ok_or_else(unnamed)?;
        let contact_jid =
            context.shown.contact.and_then(|c| self.status.borrow().contacts.get(&c).map(|c| c.jid.clone()));
        let jid = context
            .peer_contact
            .clone()
            .or(contact_jid)
            .or_else(|| Some(context.shown.peer_jid.clone()).filter(|j| !j.is_empty()))
            .ok_or_else(unnamed)?;
        let token = context.token.clone();
        let (peer, resource) = parse_peer(&jid)?;
        let conversation = self.conversation_with(peer.as_str(), resource.clone());
        let carry = token.filter(|_| self.shares_with(peer.as_str()));
        self.status.send_if_modified(|s| {
            let Some(c) = s.conversations.get_mut(&conversation) else { return false };
            if let Some(resource) = resource {
                c.peer_resource = resource;
            }
            if let Some(token) = carry {
                c.correlation = Some(ChatCorrelation { token, call, carry: true });
            }
            true
        });
        if let Some(context) = self.call_contexts.get_mut(&call) {
            context.shown.conversation = Some(conversation);
        }
        self.show_link(call);
        Ok(conversation)
    }
}
