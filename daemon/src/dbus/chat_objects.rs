//! The chat side of the API: `Conversations`, `Contacts` and `History` on the root object,
//! one `/org/cusax/Cusax1/conversation/N` per conversation and one
//! `/org/cusax/Cusax1/contact/N` per roster contact. Objects read the hub's published status;
//! methods become hub commands.

use std::collections::HashMap;

use tokio::sync::watch;
use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::{OwnedObjectPath, OwnedVariant, Variant, interface};

use std::sync::Arc;

use cusax_protocol::correlation::{identity, vcard_lists};

use super::call_objects::{call_path, exported_call};
use super::{CusaxError, ROOT_PATH};
use crate::hub::{
    ContactId, ContactInfo, ConversationId, ConversationInfo, DaemonStatus, HubHandle, MessagingCommand,
    find_by_sip,
};
use crate::sip::CallError;
use crate::store::{HistoryFilter, StoredMessage, history::MAX_PAGE};
use crate::xmpp::SubscriptionAction;

/// The object path of conversation `id`.
pub fn conversation_path(id: ConversationId) -> OwnedObjectPath {
    // A number after a fixed prefix is always a valid path.
    OwnedObjectPath::try_from(format!("{ROOT_PATH}/conversation/{id}")).unwrap_or_default()
}

/// The object path of contact `id`.
pub fn contact_path(id: ContactId) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("{ROOT_PATH}/contact/{id}")).unwrap_or_default()
}

/// Exports conversation `id` unless it already is.
pub async fn export_conversation(
    server: &ObjectServer,
    hub: &HubHandle,
    id: ConversationId,
) -> zbus::Result<()> {
    server
        .at(conversation_path(id), ConversationObject { id, hub: hub.clone(), status: hub.status() })
        .await
        .map(|_| ())
}

/// Exports contact `id` unless it already is.
pub async fn export_contact(server: &ObjectServer, hub: &HubHandle, id: ContactId) -> zbus::Result<()> {
    server
        .at(contact_path(id), ContactObject { id, hub: hub.clone(), status: hub.status() })
        .await
        .map(|_| ())
}

pub struct ConversationsObject {
    pub hub: HubHandle,
    pub status: watch::Receiver<DaemonStatus>,
}

/// One-to-one chats.
#[interface(name = "org.cusax.Cusax1.Conversations")]
impl ConversationsObject {
    /// Opens the conversation with jid (a bare JID; a full JID also picks the resource), or
    /// returns the one there is. options: none yet; unknown keys fail with InvalidArgument.
    /// Fails with InvalidAddress for a malformed JID, NotConfigured without an XMPP account.
    #[zbus(out_args("conversation"))]
    async fn start_conversation(
        &self,
        jid: String,
        options: HashMap<String, OwnedVariant>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, CusaxError> {
        if let Some(key) = options.keys().next() {
            return Err(CusaxError::InvalidArgument(format!("unknown option {key:?}")));
        }
        let id = self.hub.messaging(|reply| MessagingCommand::StartConversation { jid, reply }).await?;
        export_conversation(server, &self.hub, id).await?;
        Ok(conversation_path(id))
    }

    /// The open conversations, oldest first.
    #[zbus(property)]
    fn conversations(&self) -> Vec<OwnedObjectPath> {
        self.status.borrow().conversations.keys().map(|id| conversation_path(*id)).collect()
    }
}

/// One conversation.
pub struct ConversationObject {
    id: ConversationId,
    hub: HubHandle,
    status: watch::Receiver<DaemonStatus>,
}

impl ConversationObject {
    fn info<T>(&self, read: impl FnOnce(&ConversationInfo) -> T, missing: T) -> T {
        self.status.borrow().conversations.get(&self.id).map_or(missing, read)
    }
}

/// A one-to-one chat with a peer.
#[interface(name = "org.cusax.Cusax1.Conversation")]
impl ConversationObject {
    /// Sends body (at most 65536 bytes, not empty). Returns the message's id as soon as the
    /// message is safely stored; it goes out at once when online, else after reconnecting.
    /// Its progress comes as MessageStatus (sent, delivered, failed). options: none yet.
    /// Fails with InvalidArgument for an empty or oversized body, NotFound after Close.
    #[zbus(out_args("id"))]
    async fn send_message(
        &self,
        body: String,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<String, CusaxError> {
        if let Some(key) = options.keys().next() {
            return Err(CusaxError::InvalidArgument(format!("unknown option {key:?}")));
        }
        let conversation = self.id;
        Ok(self.hub.messaging(|reply| MessagingCommand::SendMessage { conversation, body, reply }).await?)
    }

    /// Tells the peer our chat state: active, composing, paused, inactive or gone (XEP-0085;
    /// sent only once the peer has shown it understands chat states).
    async fn set_chat_state(&self, state: String) -> Result<(), CusaxError> {
        let conversation = self.id;
        Ok(self.hub.messaging(|reply| MessagingCommand::SetChatState { conversation, state, reply }).await?)
    }

    /// Calls the peer (REQ-1, REQ-2): the SIP address they sent in this chat, else the one
    /// their presence or vCard names. A contact we share with learns the chat's thread and
    /// our JID from the INVITE; their cusaxd links the call to this chat, and echoes the
    /// thread (then Call.Correlated). Returns the call's object. Fails with InvalidAddress
    /// when no SIP address of theirs is known, NotRegistered, NotFound after Close.
    /// options: none yet; an unknown key fails with InvalidArgument.
    #[zbus(out_args("call"))]
    async fn start_call(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, CusaxError> {
        if let Some(key) = options.keys().next() {
            return Err(CusaxError::InvalidArgument(format!("unknown option {key:?}")));
        }
        let id = self.hub.start_call(self.id).await?;
        exported_call(server, &self.hub, id).await
    }

    /// The calls that belong to this conversation.
    #[zbus(property)]
    fn calls(&self) -> Vec<OwnedObjectPath> {
        let status = self.status.borrow();
        status
            .calls
            .iter()
            .filter(|(_, c)| c.link.conversation == Some(self.id))
            .map(|(id, _)| call_path(*id))
            .collect()
    }

    /// Ends the conversation (its object goes; history stays).
    async fn close(&self) -> Result<(), CusaxError> {
        let conversation = self.id;
        Ok(self.hub.messaging(|reply| MessagingCommand::Close { conversation, reply }).await?)
    }

    /// The peer's bare JID.
    #[zbus(property(emits_changed_signal = "const"))]
    fn peer(&self) -> String {
        self.info(|c| c.peer.clone(), String::new())
    }

    /// The peer's resource our messages go to: the one that last wrote, until it goes
    /// offline; "" when they go to the bare JID.
    #[zbus(property)]
    fn peer_resource(&self) -> String {
        self.info(|c| c.peer_resource.clone(), String::new())
    }

    /// The peer's chat state: active, composing, paused, inactive, gone, or "" before any.
    #[zbus(property)]
    fn chat_state(&self) -> String {
        self.info(|c| c.chat_state.clone(), String::new())
    }

    /// The peer's contact object, or "/" when they are not in the roster.
    #[zbus(property)]
    fn contact(&self) -> OwnedObjectPath {
        self.info(|c| c.contact.map(contact_path), None).unwrap_or_else(root_path)
    }

    /// A message that we did not have before: the peer's, or ours sent from another client
    /// (from is then our own JID). details: direction (in, out), via (direct, carbon,
    /// archive), delayed (b: it was sent earlier than now, e.g. while we were offline).
    #[zbus(signal)]
    pub async fn message_received(
        emitter: &SignalEmitter<'_>,
        id: &str,
        from: &str,
        body: &str,
        unix_ms: i64,
        details: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<()>;

    /// A message of ours moved on: sent (the server has it), delivered (the peer's client
    /// has it) or failed.
    #[zbus(signal)]
    pub async fn message_status(emitter: &SignalEmitter<'_>, id: &str, status: &str) -> zbus::Result<()>;
}

pub fn root_path() -> OwnedObjectPath {
    OwnedObjectPath::try_from("/").unwrap_or_default()
}

pub struct ContactsObject {
    pub hub: HubHandle,
    pub status: watch::Receiver<DaemonStatus>,
}

/// The roster and subscriptions.
impl ContactsObject {
    fn contact_of(&self, jid: &str) -> Option<ContactId> {
        self.status.borrow().contacts.iter().find(|(_, c)| c.jid == jid).map(|(id, _)| *id)
    }

    /// The contact, after its vCards were read (asked for now if they were not, and waited
    /// for at most [`VCARD_WAIT`]).
    async fn with_vcard(&self, id: ContactId) -> Option<Arc<ContactInfo>> {
        let read = |s: &DaemonStatus| s.contacts.get(&id).is_none_or(|c| c.vcard_read);
        if !read(&self.status.borrow())
            && self
                .hub
                .messaging(|reply| MessagingCommand::RefreshContact { contact: id, reply })
                .await
                .is_ok()
        {
            let mut status = self.status.clone();
            let _ = tokio::time::timeout(VCARD_WAIT, status.wait_for(read)).await;
        }
        self.status.borrow().contacts.get(&id).cloned()
    }
}

/// How long a lookup waits for a contact's vCard.
const VCARD_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long a lookup waits for the answer to its OPTIONS.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[interface(name = "org.cusax.Cusax1.Contacts")]
impl ContactsObject {
    /// Who address is on both networks: a JID in the roster, or a SIP address or number
    /// (sip:, sips:, tel:, +E.164) that a contact's own vCard lists, else that their presence
    /// names, else whose user@host is their JID, else (SIP registered) whose JID the address
    /// itself names in the Call-Info of its answer to our OPTIONS. Reads the contact's vCard
    /// first when it was not read yet (at most 3 s). verified: their own vCard lists every
    /// address of theirs (for a JID), or this one (for a SIP address or number); otherwise
    /// it is a hint. Fails with InvalidAddress or NotFound.
    #[zbus(out_args("contact", "verified"))]
    async fn lookup(&self, address: &str) -> Result<(OwnedObjectPath, bool), CusaxError> {
        let lower = address.trim().to_ascii_lowercase();
        if !["sip:", "sips:", "tel:", "+"].iter().any(|s| lower.starts_with(s)) {
            let jid = address.trim().strip_prefix("xmpp:").unwrap_or(address.trim());
            let jid = xmpp_parsers::jid::BareJid::new(jid)
                .map_err(|e| CusaxError::InvalidAddress(format!("not a JID: {address:?} ({e})")))?;
            let id = self
                .contact_of(jid.as_str())
                .ok_or_else(|| CusaxError::NotFound(format!("{jid} is not in the roster")))?;
            let contact = self.with_vcard(id).await;
            return Ok((contact_path(id), contact.is_some_and(|c| c.verified())));
        }
        if identity(address).is_none() {
            return Err(CusaxError::InvalidAddress(format!("not a SIP address or number: {address:?}")));
        }
        let known = find_by_sip(&self.status.borrow().contacts, address);
        let id = match known {
            Some(id) => id,
            None => {
                let probe = tokio::time::timeout(PROBE_WAIT, self.hub.probe(address.trim().to_owned())).await;
                let named = match probe {
                    Ok(Ok(Some(jid))) => jid,
                    Ok(Err(e)) if !matches!(e, CallError::NotRegistered) => return Err(e.into()),
                    _ => return Err(CusaxError::NotFound(format!("no contact is known for {address}"))),
                };
                self.contact_of(&named).ok_or_else(|| {
                    CusaxError::NotFound(format!("{address} says it is {named}, who is not in the roster"))
                })?
            }
        };
        let contact = self.with_vcard(id).await;
        Ok((contact_path(id), contact.is_some_and(|c| vcard_lists(&c.telephones, address))))
    }

    /// Asks jid to let us see their presence (it adds them to the roster).
    async fn subscribe(&self, jid: String) -> Result<(), CusaxError> {
        self.subscription(jid, SubscriptionAction::Subscribe).await
    }

    /// Lets jid see our presence (answering their request); also asks to see theirs when we
    /// do not yet.
    async fn approve(&self, jid: String) -> Result<(), CusaxError> {
        self.subscription(jid, SubscriptionAction::Approve).await
    }

    /// Refuses jid's request (or takes back their view of our presence).
    async fn deny(&self, jid: String) -> Result<(), CusaxError> {
        self.subscription(jid, SubscriptionAction::Deny).await
    }

    /// The roster contacts.
    #[zbus(property)]
    fn contacts(&self) -> Vec<OwnedObjectPath> {
        self.status.borrow().contacts.keys().map(|id| contact_path(*id)).collect()
    }

    /// Bare JIDs that asked to see our presence and wait for Approve or Deny.
    #[zbus(property)]
    fn subscription_requests(&self) -> Vec<String> {
        self.status.borrow().subscription_requests.clone()
    }
}

impl ContactsObject {
    async fn subscription(&self, jid: String, action: SubscriptionAction) -> Result<(), CusaxError> {
        Ok(self.hub.messaging(|reply| MessagingCommand::Subscription { jid, action, reply }).await?)
    }
}

/// One roster contact.
pub struct ContactObject {
    id: ContactId,
    hub: HubHandle,
    status: watch::Receiver<DaemonStatus>,
}

impl ContactObject {
    fn info<T>(&self, read: impl FnOnce(&ContactInfo) -> T, missing: T) -> T {
        self.status.borrow().contacts.get(&self.id).map_or(missing, |c| read(c))
    }
}

/// A person in the roster.
#[interface(name = "org.cusax.Cusax1.Contact")]
impl ContactObject {
    /// Reads the contact's vCards again (XEP-0054 and XEP-0292); Telephones follows. Fails
    /// with NotConnected while offline.
    async fn refresh(&self) -> Result<(), CusaxError> {
        let contact = self.id;
        Ok(self.hub.messaging(|reply| MessagingCommand::RefreshContact { contact, reply }).await?)
    }

    /// The telephone entries of the contact's vCards: (number as written, types such as
    /// work, voice, video, cell). Read by Refresh, and kept current by their vCard4 PEP
    /// notifications.
    #[zbus(property)]
    fn telephones(&self) -> Vec<(String, Vec<String>)> {
        self.info(|c| c.telephones.iter().map(|t| (t.number.clone(), t.types.clone())).collect(), Vec::new())
    }

    /// The name the user gave the contact, or "".
    #[zbus(property)]
    fn name(&self) -> String {
        self.info(|c| c.name.clone(), String::new())
    }

    /// The contact's bare JID.
    #[zbus(property(emits_changed_signal = "const"))]
    fn jid(&self) -> String {
        self.info(|c| c.jid.clone(), String::new())
    }

    /// The presence of the contact's most available resource: (show, status); show is
    /// offline, available, chat, away, xa or dnd.
    #[zbus(property)]
    fn presence(&self) -> (String, String) {
        self.info(ContactInfo::presence, ("offline".into(), String::new()))
    }

    /// Each online resource: (resource, show, status).
    #[zbus(property)]
    fn resources(&self) -> Vec<(String, String, String)> {
        self.info(ContactInfo::resource_list, Vec::new())
    }

    /// What the contact's clients can do, from their verified caps: chat-states, receipts.
    #[zbus(property)]
    fn capabilities(&self) -> Vec<String> {
        self.info(|c| c.capabilities().into_iter().map(String::from).collect(), Vec::new())
    }

    /// Their SIP addresses: those their presence names (XEP-0152 reach: GRUU, AoR), then
    /// those of their vCard.
    #[zbus(property)]
    fn sip_addresses(&self) -> Vec<String> {
        self.info(ContactInfo::sip_addresses, Vec::new())
    }

    /// Their telephone numbers as tel: URIs (E.164), from their presence and their vCard.
    #[zbus(property)]
    fn numbers(&self) -> Vec<String> {
        self.info(ContactInfo::numbers, Vec::new())
    }

    /// Their SIP availability as their presence says: open, busy (in a call), closed, or
    /// unknown.
    #[zbus(property)]
    fn sip_status(&self) -> String {
        self.info(|c| c.sip_status().to_owned(), "unknown".to_owned())
    }

    /// Their own vCard lists every SIP address and number above (RFC 7081 3.3): the
    /// bindings are verified; otherwise some are hints.
    #[zbus(property)]
    fn verified(&self) -> bool {
        self.info(ContactInfo::verified, false)
    }

    /// none, to (we see their presence), from (they see ours) or both.
    #[zbus(property)]
    fn subscription(&self) -> String {
        self.info(|c| c.subscription.to_owned(), String::new())
    }

    /// We asked to see their presence and they have not answered yet.
    #[zbus(property)]
    fn subscription_pending(&self) -> bool {
        self.info(|c| c.asked, false)
    }
}

pub struct HistoryObject {
    pub hub: HubHandle,
}

/// The message history.
#[interface(name = "org.cusax.Cusax1.History")]
impl HistoryObject {
    /// The newest messages that match filter, oldest first. filter keys: peer (s, a bare
    /// JID), conversation (o), before (x, Unix ms, exclusive), after (x, Unix ms), limit (u,
    /// default 50, at most 500). Each message: id, peer, direction (in, out), body, unix_ms,
    /// status (queued, sent, delivered, failed, received). Unknown keys or wrong types fail
    /// with InvalidArgument.
    #[zbus(out_args("messages"))]
    async fn query(
        &self,
        filter: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<HashMap<String, OwnedVariant>>, CusaxError> {
        let filter = self.read_filter(filter)?;
        let page = self.hub.messaging(|reply| MessagingCommand::History { filter, reply }).await?;
        Ok(page.iter().map(message_entry).collect())
    }
}

impl HistoryObject {
    fn read_filter(&self, filter: HashMap<String, OwnedVariant>) -> Result<HistoryFilter, CusaxError> {
        let mut out = HistoryFilter { limit: 50, ..Default::default() };
        let wrong = |key: &str, kind: &str| CusaxError::InvalidArgument(format!("{key} must be {kind}"));
        for (key, value) in filter {
            match key.as_str() {
                "peer" => {
                    let peer: String = value.try_into().map_err(|_| wrong("peer", "a string (s)"))?;
                    let peer = xmpp_parsers::jid::BareJid::new(&peer)
                        .map_err(|e| CusaxError::InvalidAddress(format!("not a JID: {peer:?} ({e})")))?;
                    out.peer = Some(peer.to_string());
                }
                "conversation" => {
                    let path: OwnedObjectPath =
                        value.try_into().map_err(|_| wrong("conversation", "an object path (o)"))?;
                    let id = path
                        .as_str()
                        .strip_prefix(&format!("{ROOT_PATH}/conversation/"))
                        .and_then(|n| n.parse::<ConversationId>().ok());
                    let status = self.hub.status();
                    let peer =
                        id.and_then(|id| status.borrow().conversations.get(&id).map(|c| c.peer.clone()));
                    out.peer =
                        Some(peer.ok_or_else(|| CusaxError::NotFound(format!("no conversation {path}")))?);
                }
                "before" => {
                    out.before_ms = Some(value.try_into().map_err(|_| wrong("before", "Unix ms (x)"))?)
                }
                "after" => out.after_ms = Some(value.try_into().map_err(|_| wrong("after", "Unix ms (x)"))?),
                "limit" => {
                    let limit: u32 = value.try_into().map_err(|_| wrong("limit", "a count (u)"))?;
                    if limit == 0 || limit > MAX_PAGE {
                        return Err(CusaxError::InvalidArgument(format!("limit must be 1 to {MAX_PAGE}")));
                    }
                    out.limit = limit;
                }
                other => return Err(CusaxError::InvalidArgument(format!("unknown filter key {other:?}"))),
            }
        }
        Ok(out)
    }
}

fn message_entry(m: &StoredMessage) -> HashMap<String, OwnedVariant> {
    let mut entry = HashMap::new();
    let mut put = |key: &str, value: Variant<'_>| {
        if let Ok(value) = OwnedVariant::try_from(value) {
            entry.insert(key.to_owned(), value);
        }
    };
    put("id", Variant::from(m.uid.as_str()));
    put("peer", Variant::from(m.peer.as_str()));
    put("direction", Variant::from(m.direction.as_str()));
    put("body", Variant::from(m.body.as_str()));
    put("unix_ms", Variant::from(m.at_ms));
    put("status", Variant::from(m.status.as_str()));
    entry
}

/// The `details` of a MessageReceived signal.
pub fn received_details(
    message: &StoredMessage,
    via: &'static str,
    delayed: bool,
) -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([
        ("direction", Variant::from(message.direction.as_str())),
        ("via", Variant::from(via)),
        ("delayed", Variant::from(delayed)),
    ])
}
