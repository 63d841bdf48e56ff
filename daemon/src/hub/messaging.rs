//! The hub's XMPP side: contacts (the roster with each resource's presence and caps),
//! conversations (one per peer, with its thread and the peer's chat state), our presence and
//! the subscription requests waiting for an answer.
//!
//! A message accepted from D-Bus is written to the store before its id is returned; the XMPP
//! actor sends it from there. What the actor reports comes back as state here, and as
//! signals for the things that happen (a message arrived, a message's status moved on).

use std::collections::BTreeMap;
use std::sync::Arc;

use cusax_protocol::correlation::matching::ConversationContext;
use cusax_protocol::correlation::{Identity, identity, same_provider, vcard_lists};
use cusax_protocol::sip::registration::uuid_v4;
use cusax_protocol::xmpp::chat::parse_chat_state;
use cusax_protocol::xmpp::vcard::Tel;
use tokio::sync::oneshot;
use tracing::{debug, info_span, warn};
use xmpp_parsers::jid::{BareJid, Jid};

use super::correlation::ChatCorrelation;
use super::{Hub, HubSignal, ReceivedMessage, XmppState};
use crate::sip::CallId;
use crate::sip::OsEntropy;
use crate::store::{Direction, HistoryFilter, NewMessage, Status, StoredMessage};
use crate::xmpp::{OwnPresence, ResourcePresence, RosterEntry, SubscriptionAction, XmppCommand, XmppEvent};

/// The largest message body we accept (bytes of UTF-8).
pub const MAX_BODY: usize = 64 * 1024;
/// Subscription requests kept waiting for an answer; more are refused by the server's next
/// delivery anyway (it repeats pending requests at every login).
const MAX_REQUESTS: usize = 100;
/// Conversations a peer's first message opens on its own; past this, strangers' messages
/// are kept in the history without a conversation object.
const MAX_CONVERSATIONS: usize = 1000;

/// The daemon's number for a conversation (`/org/cusax/Cusax1/conversation/N`).
pub type ConversationId = u32;
/// The daemon's number for a contact (`/org/cusax/Cusax1/contact/N`).
pub type ContactId = u32;

/// What the daemon shows of a conversation: the `org.cusax.Cusax1.Conversation` properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationInfo {
    /// The peer's bare JID.
    pub peer: String,
    /// The resource our messages go to (RFC 6121 section 5.1: the one that last wrote to
    /// us, until it goes away), or "".
    pub peer_resource: String,
    /// The peer's chat state (XEP-0085), or "" before they showed one.
    pub chat_state: String,
    /// The XEP-0201 thread: ours when we started, the peer's once they sent one. A secret
    /// (it links a call to this chat): never on D-Bus, never logged above debug.
    pub thread: String,
    /// The peer's contact, when they are in the roster.
    pub contact: Option<ContactId>,
    /// The SIP targets the peer sent in this thread (`sip-contact`, `<reach>`): what
    /// `StartCall` calls, and whom an INVITE naming the thread must come from.
    pub peer_targets: Vec<String>,
    /// Our `sip-contact` went out in this thread, with this target (again when it changes).
    pub contact_sent: Option<String>,
    /// The call this chat was added to, or that was added to it by `sip-correlation`.
    pub correlation: Option<ChatCorrelation>,
    /// When a message last went either way (Unix ms).
    pub last_activity_ms: i64,
    /// The peer left (`<gone/>`): its thread no longer links a call.
    pub ended: bool,
}

impl ConversationInfo {
    /// The conversation as correlation sees it.
    pub fn context(&self) -> ConversationContext {
        ConversationContext {
            peer: self.peer.clone(),
            thread: self.thread.clone(),
            peer_targets: self.peer_targets.clone(),
            last_activity_ms: self.last_activity_ms,
            ended: self.ended,
        }
    }
}

/// One available resource of a contact, with what its caps say it can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactResource {
    pub presence: ResourcePresence,
    pub features: Arc<[String]>,
}

/// What the daemon shows of a roster contact: the `org.cusax.Cusax1.Contact` properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactInfo {
    pub jid: String,
    pub name: String,
    /// none, to, from or both.
    pub subscription: &'static str,
    /// Our subscription request waits for their answer.
    pub asked: bool,
    pub resources: BTreeMap<String, ContactResource>,
    /// The telephone entries of their vCards (vcard-temp and vCard4), once read.
    pub telephones: Vec<Tel>,
    /// Their XEP-0108 activity says they are on the phone.
    pub on_the_phone: bool,
    /// Their vCards were read (`telephones` is what they list, not "not asked yet").
    pub vcard_read: bool,
    /// The addresses of their `<reach>` over PEP (per account, after those of each resource).
    pub pep_reach: Vec<String>,
}

impl ContactInfo {
    /// The presence of the most available resource (highest priority, then the most
    /// reachable show), or ("offline", "").
    pub fn presence(&self) -> (String, String) {
        let rank = |show: &str| match show {
            "chat" => 0,
            "available" => 1,
            "away" => 2,
            "dnd" => 3,
            _ => 4,
        };
        self.resources
            .values()
            .map(|r| &r.presence)
            .min_by_key(|p| (-i16::from(p.priority), rank(&p.show)))
            .map_or(("offline".into(), String::new()), |p| (p.show.clone(), p.status.clone()))
    }

    /// What any resource can do, by name: audio and video (the SIP target's feature tags),
    /// chat-states, receipts.
    pub fn capabilities(&self) -> Vec<&'static str> {
        let has = |feature: &str| self.resources.values().any(|r| r.features.iter().any(|f| f == feature));
        let tagged = |tag: &str| {
            self.resources.values().any(|r| r.presence.sip_tags.iter().any(|t| t.eq_ignore_ascii_case(tag)))
        };
        let mut names: Vec<&'static str> = ["audio", "video"].into_iter().filter(|t| tagged(t)).collect();
        names.extend(
            [("chat-states", xmpp_parsers::ns::CHATSTATES), ("receipts", xmpp_parsers::ns::RECEIPTS)]
                .into_iter()
                .filter(|(_, feature)| has(feature))
                .map(|(name, _)| name),
        );
        names
    }

    /// Their SIP availability: busy when any resource says so, else open, else closed;
    /// unknown when none says anything (offline, or a client without CUSAX).
    pub fn sip_status(&self) -> &'static str {
        let says = |s: &str| self.resources.values().any(|r| r.presence.sip_status == Some(s));
        // A resource naming a SIP address without a status is reachable too.
        let reachable =
            self.resources.values().any(|r| r.presence.sip_status.is_none() && !r.presence.reach.is_empty());
        if says("busy") || self.on_the_phone {
            "busy"
        } else if says("open") || reachable {
            "open"
        } else if says("closed") {
            "closed"
        } else {
            "unknown"
        }
    }

    /// What their `<reach>` names: each resource's presence first (it can name the device),
    /// then their PEP node.
    fn reached(&self) -> impl Iterator<Item = &String> {
        self.resources.values().flat_map(|r| r.presence.reach.iter()).chain(&self.pep_reach)
    }

    /// Their SIP addresses: what their `<reach>` names, then the SIP addresses of their
    /// vCard; each once.
    pub fn sip_addresses(&self) -> Vec<String> {
        let reached = self.reached().cloned();
        let listed = self.telephones.iter().filter_map(|t| match identity(&t.number)? {
            Identity::Address(a) => Some(format!("sip:{a}")),
            Identity::Number(_) => None,
        });
        let mut out: Vec<String> = Vec::new();
        for address in reached.filter(|a| !a.starts_with("tel:")).chain(listed) {
            if !out.contains(&address) {
                out.push(address);
            }
        }
        out
    }

    /// Their telephone numbers (E.164, as `tel:` URIs): from their presence, then their vCard.
    pub fn numbers(&self) -> Vec<String> {
        let reached = self.reached().filter_map(|a| identity(a));
        let listed = self.telephones.iter().filter_map(|t| identity(&t.number));
        let mut out: Vec<String> = Vec::new();
        for id in reached.chain(listed) {
            if let Identity::Number(n) = id {
                let uri = format!("tel:{n}");
                if !out.contains(&uri) {
                    out.push(uri);
                }
            }
        }
        out
    }

    /// Their own vCard lists every SIP address and number we know of theirs (RFC 7081 3.3):
    /// only then are none of them hints.
    pub fn verified(&self) -> bool {
        let all: Vec<String> = self.sip_addresses().into_iter().chain(self.numbers()).collect();
        !all.is_empty() && all.iter().all(|a| vcard_lists(&self.telephones, a))
    }

    /// The resources as D-Bus shows them: (resource, show, status), by name.
    pub fn resource_list(&self) -> Vec<(String, String, String)> {
        self.resources
            .iter()
            .map(|(r, c)| (r.clone(), c.presence.show.clone(), c.presence.status.clone()))
            .collect()
    }
}

/// Why a chat, presence or history request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessagingError {
    #[error("{0}")]
    InvalidAddress(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no such conversation")]
    NotFound,
    #[error("no XMPP account is configured")]
    NotConfigured,
    #[error("the XMPP account is not online")]
    NotConnected,
    #[error("{0}")]
    Failed(String),
}

/// A chat, presence or history request to the hub.
#[derive(Debug)]
pub enum MessagingCommand {
    StartConversation {
        jid: String,
        reply: oneshot::Sender<Result<ConversationId, MessagingError>>,
    },
    SendMessage {
        conversation: ConversationId,
        body: String,
        reply: oneshot::Sender<Result<String, MessagingError>>,
    },
    SetChatState {
        conversation: ConversationId,
        state: String,
        reply: oneshot::Sender<Result<(), MessagingError>>,
    },
    Close {
        conversation: ConversationId,
        reply: oneshot::Sender<Result<(), MessagingError>>,
    },
    SetPresence {
        show: String,
        status: String,
        reply: oneshot::Sender<Result<(), MessagingError>>,
    },
    Subscription {
        jid: String,
        action: SubscriptionAction,
        reply: oneshot::Sender<Result<(), MessagingError>>,
    },
    History {
        filter: HistoryFilter,
        reply: oneshot::Sender<Result<Vec<StoredMessage>, MessagingError>>,
    },
    /// Open a chat with the JID the call's far end named, linked to the call (REQ-4).
    StartChat {
        call: CallId,
        reply: oneshot::Sender<Result<ConversationId, MessagingError>>,
    },
    /// Read the contact's vCards again.
    RefreshContact {
        contact: ContactId,
        reply: oneshot::Sender<Result<(), MessagingError>>,
    },
}

/// The roster contact a SIP address or number belongs to: first a contact whose own vCard
/// lists it (verified), then one whose presence names it, then one whose JID is the same
/// `user@host` (the same-provider guess).
pub fn find_by_sip(contacts: &imbl::OrdMap<ContactId, Arc<ContactInfo>>, address: &str) -> Option<ContactId> {
    let wanted = identity(address)?;
    let named = |a: &String| identity(a).as_ref() == Some(&wanted);
    let listed = contacts
        .iter()
        .find(|(_, c)| c.telephones.iter().any(|t| identity(&t.number).as_ref() == Some(&wanted)));
    let published = || contacts.iter().find(|(_, c)| c.sip_addresses().iter().chain(&c.numbers()).any(named));
    let guessed = || contacts.iter().find(|(_, c)| same_provider(&c.jid, address));
    listed.or_else(published).or_else(guessed).map(|(id, _)| *id)
}

/// A bare JID from what a caller typed (a full JID gives its bare part and resource).
pub(super) fn parse_peer(text: &str) -> Result<(BareJid, Option<String>), MessagingError> {
    let text = text.strip_prefix("xmpp:").unwrap_or(text);
    let jid =
        Jid::new(text).map_err(|e| MessagingError::InvalidAddress(format!("not a JID: {text:?} ({e})")))?;
    if jid.node().is_none() {
        return Err(MessagingError::InvalidAddress(format!("{text:?} has no user part (user@domain)")));
    }
    Ok((jid.to_bare(), jid.resource().map(|r| r.to_string())))
}

/// Characters XML 1.0 cannot carry (section 2.2): a stanza with one could never be sent.
pub fn xml_forbidden(text: &str) -> Option<char> {
    text.chars().find(
        |c| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'),
    )
}

/// The body rules: not empty, not only white space, at most [`MAX_BODY`] bytes, nothing XML
/// cannot carry.
fn check_body(body: &str) -> Result<(), MessagingError> {
    if body.trim().is_empty() {
        return Err(MessagingError::InvalidArgument("the message is empty".into()));
    }
    if let Some(c) = xml_forbidden(body) {
        return Err(MessagingError::InvalidArgument(format!(
            "the message holds {c:?}, which XMPP cannot carry"
        )));
    }
    if body.len() > MAX_BODY {
        return Err(MessagingError::InvalidArgument(format!(
            "the message is {} bytes; at most {MAX_BODY} are allowed",
            body.len()
        )));
    }
    Ok(())
}

impl Hub {
    pub(super) fn account(&self) -> Option<String> {
        self.config.xmpp.as_ref().map(|x| x.jid.to_string())
    }

    pub(super) async fn on_messaging(&mut self, command: MessagingCommand) {
        match command {
            MessagingCommand::StartConversation { jid, reply } => {
                let _ = reply.send(self.start_conversation(&jid));
            }
            MessagingCommand::SendMessage { conversation, body, reply } => {
                let _ = reply.send(self.send_message(conversation, body).await);
            }
            MessagingCommand::SetChatState { conversation, state, reply } => {
                let _ = reply.send(self.set_chat_state(conversation, &state).await);
            }
            MessagingCommand::Close { conversation, reply } => {
                let closed = self.status.borrow().conversations.get(&conversation).cloned();
                let result = match closed {
                    None => Err(MessagingError::NotFound),
                    Some(info) => {
                        // XEP-0085 section 5.4: tell a peer that knows chat states we left.
                        if !info.chat_state.is_empty() {
                            self.chat_state_to(&info, xmpp_parsers::chatstates::ChatState::Gone).await;
                        }
                        self.status.send_modify(|s| {
                            s.conversations.remove(&conversation);
                        });
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            MessagingCommand::SetPresence { show, status, reply } => {
                let result = match OwnPresence::parse(&show, &status) {
                    Err(e) => Err(MessagingError::InvalidArgument(e)),
                    Ok(_) if self.config.xmpp.is_none() => Err(MessagingError::NotConfigured),
                    Ok(presence) => {
                        self.own_presence = presence.clone();
                        self.xmpp.command(XmppCommand::Presence(presence)).await;
                        self.publish_presence();
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            MessagingCommand::Subscription { jid, action, reply } => {
                let _ = reply.send(self.subscription(&jid, action).await);
            }
            MessagingCommand::StartChat { call, reply } => {
                let _ = reply.send(self.start_chat(call));
            }
            MessagingCommand::RefreshContact { contact, reply } => {
                let jid = self.status.borrow().contacts.get(&contact).map(|c| c.jid.clone());
                let result = match jid.map(|j| BareJid::new(&j)) {
                    None => Err(MessagingError::NotFound),
                    Some(Err(e)) => Err(MessagingError::Failed(e.to_string())),
                    Some(Ok(_)) if self.status.borrow().xmpp_state != XmppState::Online => {
                        Err(MessagingError::NotConnected)
                    }
                    Some(Ok(jid)) => {
                        self.xmpp.command(XmppCommand::FetchVCard { jid }).await;
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            MessagingCommand::History { filter, reply } => {
                let result = match self.account() {
                    None => Err(MessagingError::NotConfigured),
                    Some(account) => self
                        .store
                        .query(&account, filter)
                        .await
                        .map_err(|e| MessagingError::Failed(e.to_string())),
                };
                let _ = reply.send(result);
            }
        }
    }

    fn start_conversation(&mut self, jid: &str) -> Result<ConversationId, MessagingError> {
        if self.config.xmpp.is_none() {
            return Err(MessagingError::NotConfigured);
        }
        let (peer, resource) = parse_peer(jid)?;
        Ok(self.conversation_with(peer.as_str(), resource))
    }

    /// The conversation with `peer`, opened (with a new thread) if there is none.
    pub(super) fn conversation_with(&mut self, peer: &str, resource: Option<String>) -> ConversationId {
        if let Some(id) =
            self.status.borrow().conversations.iter().find(|(_, c)| c.peer == peer).map(|(id, _)| *id)
        {
            return id;
        }
        let id = self.next_conversation;
        self.next_conversation += 1;
        let contact = self.contact_ids.get(peer).copied();
        let info = ConversationInfo {
            peer: peer.to_owned(),
            peer_resource: resource.unwrap_or_default(),
            chat_state: String::new(),
            thread: uuid_v4(&mut OsEntropy),
            contact,
            peer_targets: Vec::new(),
            contact_sent: None,
            correlation: None,
            last_activity_ms: crate::xmpp::now_ms(),
            ended: false,
        };
        let _span = info_span!("conversation", id).entered();
        debug!(thread = %info.thread, "opened");
        self.status.send_modify(|s| {
            s.conversations.insert(id, info);
        });
        id
    }

    async fn send_message(
        &mut self,
        conversation: ConversationId,
        body: String,
    ) -> Result<String, MessagingError> {
        check_body(&body)?;
        let account = self.account().ok_or(MessagingError::NotConfigured)?;
        // The peer left the thread (<gone/>): what we write next starts a new one (XEP-0085
        // 5.4, cusax-wire P13), with our sip-contact again.
        self.status.send_if_modified(|s| {
            let Some(c) = s.conversations.get_mut(&conversation).filter(|c| c.ended) else { return false };
            c.thread = uuid_v4(&mut OsEntropy);
            c.peer_targets.clear();
            c.contact_sent = None;
            c.ended = false;
            false
        });
        let info =
            self.status.borrow().conversations.get(&conversation).cloned().ok_or(MessagingError::NotFound)?;
        let uid = uuid_v4(&mut OsEntropy);
        let record = NewMessage {
            message: StoredMessage {
                uid: uid.clone(),
                peer: info.peer.clone(),
                direction: Direction::Out,
                thread: Some(info.thread.clone()),
                body,
                at_ms: crate::xmpp::now_ms(),
                status: Status::Queued,
            },
            stanza_id: None,
            origin_id: Some(uid.clone()),
            message_id: Some(uid.clone()),
        };
        let stored = match self.store.insert(&account, record).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                return Err(MessagingError::Failed("the store refused the message as a duplicate".into()));
            }
            Err(e) => return Err(MessagingError::Failed(e.to_string())),
        };
        let resource = Some(info.peer_resource).filter(|r| !r.is_empty());
        let extras = self.message_extras(conversation);
        self.status.send_if_modified(|s| {
            let Some(c) = s.conversations.get_mut(&conversation) else { return false };
            c.last_activity_ms = crate::xmpp::now_ms();
            false
        });
        self.xmpp.command(XmppCommand::Send { message: stored, resource, extras }).await;
        Ok(uid)
    }

    async fn set_chat_state(
        &mut self,
        conversation: ConversationId,
        state: &str,
    ) -> Result<(), MessagingError> {
        let state = parse_chat_state(state).ok_or_else(|| {
            MessagingError::InvalidArgument(format!(
                "unknown chat state {state:?}: active, composing, paused, inactive or gone"
            ))
        })?;
        let info =
            self.status.borrow().conversations.get(&conversation).cloned().ok_or(MessagingError::NotFound)?;
        // XEP-0085 section 5.1: standalone notifications only to a peer that showed support.
        if !info.chat_state.is_empty() {
            self.chat_state_to(&info, state).await;
        }
        Ok(())
    }

    async fn chat_state_to(&self, info: &ConversationInfo, state: xmpp_parsers::chatstates::ChatState) {
        let Ok(peer) = BareJid::new(&info.peer) else { return };
        let resource = Some(info.peer_resource.clone()).filter(|r| !r.is_empty());
        self.xmpp
            .command(XmppCommand::ChatState { peer, resource, thread: info.thread.clone(), state })
            .await;
    }

    async fn subscription(&mut self, jid: &str, action: SubscriptionAction) -> Result<(), MessagingError> {
        if self.config.xmpp.is_none() {
            return Err(MessagingError::NotConfigured);
        }
        let (jid, _) = parse_peer(jid)?;
        if self.status.borrow().xmpp_state != XmppState::Online {
            return Err(MessagingError::NotConnected);
        }
        self.xmpp.command(XmppCommand::Subscription { jid: jid.clone(), action }).await;
        if action != SubscriptionAction::Subscribe {
            self.status.send_if_modified(|s| {
                let before = s.subscription_requests.len();
                s.subscription_requests.retain(|r| r != jid.as_str());
                before != s.subscription_requests.len()
            });
        }
        // Approving someone we do not follow yet asks to follow them too, as Dino and
        // Conversations do: a chat (and CUSAX correlation) wants a mutual subscription.
        let follows =
            self.contact(jid.as_str()).is_some_and(|c| matches!(c.subscription, "to" | "both") || c.asked);
        if action == SubscriptionAction::Approve && !follows {
            self.xmpp.command(XmppCommand::Subscription { jid, action: SubscriptionAction::Subscribe }).await;
        }
        Ok(())
    }

    pub(super) fn contact(&self, jid: &str) -> Option<Arc<ContactInfo>> {
        let id = self.contact_ids.get(jid)?;
        self.status.borrow().contacts.get(id).cloned()
    }

    /// The `Presence` property: what we chose while online, else offline.
    pub(super) fn publish_presence(&mut self) {
        let shown = match self.status.borrow().xmpp_state {
            XmppState::Online => super::Presence {
                show: self.own_presence.show_name().to_owned(),
                status: self.own_presence.status.clone(),
            },
            XmppState::Unconfigured => super::Presence::unconfigured(),
            _ => super::Presence::offline(),
        };
        self.status.send_if_modified(|s| {
            let changed = s.presence != shown;
            s.presence = shown;
            changed
        });
    }

    pub(super) fn on_xmpp(&mut self, event: XmppEvent) {
        match event {
            XmppEvent::State { state, reason } => {
                if (state == XmppState::Unconfigured) != self.config.xmpp.is_none() {
                    // A report from before the last reload reached us after it.
                    return;
                }
                self.status.send_if_modified(|status| {
                    let changed = status.xmpp_state != state || status.xmpp_state_reason != reason;
                    status.xmpp_state = state;
                    status.xmpp_state_reason = reason;
                    changed
                });
                // While the stream reconnects it may be resumed, and then no presence is
                // sent again: only a real loss of the session forgets contacts' presence.
                if matches!(state, XmppState::Offline | XmppState::Failed | XmppState::Unconfigured) {
                    self.forget_presences();
                }
                self.publish_presence();
            }
            XmppEvent::NewSession { jid } => {
                self.own_full_jid = Some(jid);
                self.forget_presences();
            }
            XmppEvent::Message { message, from, via, delayed, cusax } => {
                let direct = via == "direct";
                let resource = from.split_once('/').map(|(_, r)| r.to_owned()).filter(|_| direct);
                let known = self.status.borrow().conversations.values().any(|c| c.peer == message.peer);
                if !known && self.status.borrow().conversations.len() >= MAX_CONVERSATIONS {
                    warn!("too many conversations: a message is kept in the history only");
                    return;
                }
                let conversation = self.conversation_with(&message.peer, resource.clone());
                self.status.send_if_modified(|s| {
                    let Some(c) = s.conversations.get_mut(&conversation) else { return false };
                    let before = c.clone();
                    // Only what happens now keeps the thread alive: a delay stamp is the
                    // sender's word, and an archive result is old (P12, P21).
                    if !delayed && via != "archive" {
                        c.last_activity_ms = crate::xmpp::now_ms();
                    }
                    if message.direction == Direction::In && via == "direct" {
                        // XEP-0201 section 6: a reply continues the thread the peer chose.
                        // A new thread is a new context (P13): our sip-contact goes again.
                        if let Some(thread) = message.thread.as_ref().filter(|t| **t != c.thread) {
                            c.thread = thread.clone();
                            c.peer_targets.clear();
                            c.contact_sent = None;
                        }
                        c.ended &= delayed;
                        if let Some(resource) = &resource {
                            c.peer_resource = resource.clone();
                        }
                    }
                    *c != before
                });
                if message.direction == Direction::In && !cusax.is_empty() {
                    self.on_message_cusax(conversation, &from, cusax, via == "direct" && !delayed);
                }
                let received = Box::new(ReceivedMessage { conversation, from, message, via, delayed });
                let _ = self.signals.send(HubSignal::MessageReceived(received));
            }
            XmppEvent::MessageStatus { peer, uid, status } => {
                let conversation = self
                    .status
                    .borrow()
                    .conversations
                    .iter()
                    .find(|(_, c)| c.peer == peer)
                    .map(|(id, _)| *id);
                if let Some(conversation) = conversation {
                    let _ = self.signals.send(HubSignal::MessageStatus { conversation, uid, status });
                }
            }
            XmppEvent::ChatState { peer, resource, state } => {
                self.status.send_if_modified(|s| {
                    let Some(c) = s.conversations.values_mut().find(|c| c.peer == peer) else { return false };
                    let before = c.clone();
                    c.chat_state = state.to_owned();
                    // XEP-0085 5.4: the peer left; its thread links no new call.
                    c.ended = state == "gone";
                    if let Some(resource) = resource {
                        c.peer_resource = resource;
                    }
                    *c != before
                });
            }
            XmppEvent::Roster { items } => {
                let known: Vec<String> = self.contact_ids.keys().cloned().collect();
                for jid in known.iter().filter(|jid| !items.iter().any(|i| &i.jid == *jid)) {
                    self.remove_contact(jid);
                }
                for item in items {
                    self.update_contact(item);
                }
            }
            XmppEvent::RosterPush { item } => {
                if item.removed {
                    self.remove_contact(&item.jid);
                } else {
                    self.update_contact(item);
                }
            }
            XmppEvent::Presence { jid, resource, presence } => {
                let Some(id) = self.contact_ids.get(&jid).copied() else {
                    debug!(from = %jid, "presence from someone not in the roster");
                    return;
                };
                self.status.send_if_modified(|s| {
                    let Some(contact) = s.contacts.get(&id) else { return false };
                    let mut contact = (**contact).clone();
                    match (presence, resource.is_empty()) {
                        (Some(presence), _) => {
                            let features = contact.resources.get(&resource).map(|r| r.features.clone());
                            let features = features.unwrap_or_else(|| Arc::from([]));
                            contact
                                .resources
                                .insert(resource.clone(), ContactResource { presence, features });
                        }
                        (None, true) => contact.resources.clear(),
                        (None, false) => {
                            contact.resources.remove(&resource);
                        }
                    }
                    // A resource that went away no longer receives our messages.
                    for c in s.conversations.values_mut().filter(|c| c.peer == jid) {
                        if !contact.resources.contains_key(&c.peer_resource) {
                            c.peer_resource.clear();
                        }
                    }
                    s.contacts.insert(id, Arc::new(contact));
                    true
                });
            }
            XmppEvent::Capabilities { jid, resource, features } => {
                let Some(id) = self.contact_ids.get(&jid).copied() else { return };
                self.status.send_if_modified(|s| {
                    let Some(contact) = s.contacts.get(&id) else { return false };
                    let mut contact = (**contact).clone();
                    let Some(r) = contact.resources.get_mut(&resource) else { return false };
                    if r.features == features {
                        return false;
                    }
                    r.features = features;
                    s.contacts.insert(id, Arc::new(contact));
                    true
                });
            }
            XmppEvent::VCard { jid, tels } => {
                let Some(id) = self.contact_ids.get(&jid).copied() else { return };
                self.status.send_if_modified(|s| {
                    let Some(contact) = s.contacts.get(&id) else { return false };
                    if contact.telephones == tels && contact.vcard_read {
                        return false;
                    }
                    let mut contact = (**contact).clone();
                    contact.telephones = tels;
                    contact.vcard_read = true;
                    s.contacts.insert(id, Arc::new(contact));
                    true
                });
                self.recheck_calls_of(id);
            }
            XmppEvent::PepReach { jid, addresses } => {
                self.update_contact_with(&jid, |c| c.pep_reach = addresses)
            }
            XmppEvent::Activity { jid, on_the_phone } => {
                self.update_contact_with(&jid, |c| c.on_the_phone = on_the_phone)
            }
            XmppEvent::SubscriptionRequest { jid } => {
                let approved = self.contact(&jid).is_some_and(|c| matches!(c.subscription, "from" | "both"));
                self.status.send_if_modified(|s| {
                    if approved
                        || s.subscription_requests.contains(&jid)
                        || s.subscription_requests.len() >= MAX_REQUESTS
                    {
                        return false;
                    }
                    s.subscription_requests.push(jid);
                    true
                });
            }
        }
    }

    /// Changes a roster contact with `change`; published only when that changed something.
    fn update_contact_with(&mut self, jid: &str, change: impl FnOnce(&mut ContactInfo)) {
        let Some(id) = self.contact_ids.get(jid).copied() else { return };
        self.status.send_if_modified(|s| {
            let Some(known) = s.contacts.get(&id) else { return false };
            let mut contact = (**known).clone();
            change(&mut contact);
            if contact == **known {
                return false;
            }
            s.contacts.insert(id, Arc::new(contact));
            true
        });
    }

    /// Nobody's presence is known any more (the session that told us is gone).
    fn forget_presences(&mut self) {
        self.status.send_if_modified(|s| {
            let mut changed = false;
            for (id, contact) in s.contacts.clone() {
                if !contact.resources.is_empty() {
                    let mut contact = (*contact).clone();
                    contact.resources.clear();
                    s.contacts.insert(id, Arc::new(contact));
                    changed = true;
                }
            }
            changed
        });
    }

    fn update_contact(&mut self, item: RosterEntry) {
        let id = match self.contact_ids.get(&item.jid) {
            Some(id) => *id,
            None => {
                let id = self.next_contact;
                self.next_contact += 1;
                self.contact_ids.insert(item.jid.clone(), id);
                id
            }
        };
        self.status.send_if_modified(|s| {
            let known = s.contacts.get(&id);
            let contact = ContactInfo {
                jid: item.jid.clone(),
                name: item.name,
                subscription: item.subscription,
                asked: item.asked,
                resources: known.map(|c| c.resources.clone()).unwrap_or_default(),
                telephones: known.map(|c| c.telephones.clone()).unwrap_or_default(),
                on_the_phone: known.is_some_and(|c| c.on_the_phone),
                vcard_read: known.is_some_and(|c| c.vcard_read),
                pep_reach: known.map(|c| c.pep_reach.clone()).unwrap_or_default(),
            };
            if s.contacts.get(&id).is_some_and(|c| **c == contact) {
                return false;
            }
            // A request that the roster shows answered (from another client) is done.
            if matches!(contact.subscription, "from" | "both") {
                s.subscription_requests.retain(|r| *r != contact.jid);
            }
            s.contacts.insert(id, Arc::new(contact));
            for c in s.conversations.values_mut().filter(|c| c.peer == item.jid) {
                c.contact = Some(id);
            }
            true
        });
    }

    fn remove_contact(&mut self, jid: &str) {
        let Some(id) = self.contact_ids.remove(jid) else { return };
        self.status.send_modify(|s| {
            s.contacts.remove(&id);
            for c in s.conversations.values_mut().filter(|c| c.contact == Some(id)) {
                c.contact = None;
            }
        });
        if self.status.borrow().conversations.values().any(|c| c.peer == jid) {
            warn!("a contact with an open conversation left the roster");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(show: &str, priority: i8, features: &[&str]) -> ContactResource {
        ContactResource {
            presence: ResourcePresence {
                show: show.into(),
                status: format!("{show} {priority}"),
                priority,
                reach: Vec::new(),
                sip_tags: Vec::new(),
                sip_status: None,
            },
            features: features.iter().map(|f| f.to_string()).collect::<Vec<_>>().into(),
        }
    }

    #[test]
    fn the_most_available_resource_speaks_for_the_contact() {
        let mut contact = ContactInfo {
            jid: "bob@x".into(),
            name: String::new(),
            subscription: "both",
            asked: false,
            resources: BTreeMap::new(),
            telephones: Vec::new(),
            on_the_phone: false,
            vcard_read: false,
            pep_reach: Vec::new(),
        };
        assert_eq!(contact.presence(), ("offline".into(), String::new()));
        contact.resources.insert("laptop".into(), resource("away", 5, &[xmpp_parsers::ns::RECEIPTS]));
        contact.resources.insert("phone".into(), resource("available", 0, &[xmpp_parsers::ns::CHATSTATES]));
        assert_eq!(contact.presence().0, "away", "priority first");
        contact.resources.insert("desk".into(), resource("chat", 5, &[]));
        assert_eq!(contact.presence().0, "chat", "then the show");
        assert_eq!(contact.capabilities(), ["chat-states", "receipts"]);
    }

    #[test]
    fn bodies_and_addresses_are_checked() {
        assert!(check_body("hi").is_ok());
        assert!(matches!(check_body(" \n\t"), Err(MessagingError::InvalidArgument(_))));
        assert!(check_body(&"x".repeat(MAX_BODY)).is_ok());
        assert!(
            matches!(check_body(&"x".repeat(MAX_BODY + 1)), Err(MessagingError::InvalidArgument(m)) if m.contains("65537"))
        );
        assert!(
            matches!(check_body("bell\u{7}"), Err(MessagingError::InvalidArgument(m)) if m.contains("cannot carry"))
        );
        assert!(check_body("tab\tand\nlines\r\n").is_ok());
        assert_eq!(parse_peer("xmpp:bob@example.org/phone").unwrap().1.as_deref(), Some("phone"));
        assert!(matches!(parse_peer("example.org"), Err(MessagingError::InvalidAddress(_))));
        assert!(matches!(parse_peer("bob@@example.org"), Err(MessagingError::InvalidAddress(_))));
        assert!(matches!(parse_peer(""), Err(MessagingError::InvalidAddress(_))));
    }
}
