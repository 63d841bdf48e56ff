//! One-to-one chat as stanzas: what arrives is read into an [`Inbound`], what we send is built
//! here. The rules of trust live here too, so they are tested without a network:
//! - a carbon (XEP-0280) counts only when our own bare JID wrapped it (a stranger can forge
//!   the wrapper, and servers pass it through: cusax-wire P21);
//! - an archive result (XEP-0313) counts only from our own archive;
//! - a server `<stanza-id>` (XEP-0359) counts only when it is by our own bare JID, and only
//!   when our server says it stamps them (else a peer could forge one and make us drop
//!   messages as duplicates);
//! - a malformed optional element (a delay, an id, a receipt) is ignored, not the message:
//!   the server has it acked already, and the text must not be lost over an annotation.

use jid::{BareJid, Jid};
use xmpp_parsers::carbons;
use xmpp_parsers::chatstates::ChatState;
use xmpp_parsers::delay::Delay;
use xmpp_parsers::mam;
use xmpp_parsers::message::{Id, Lang, Message, MessageType, Thread};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::receipts;
use xmpp_parsers::stanza_id::{OriginId, StanzaId};

use super::cusax::MessageCusax;

/// XEP-0334 message processing hints.
const HINTS: &str = "urn:xmpp:hints";

/// Which way a message went, seen from our account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    In,
    /// Ours, sent by another client of the account (seen through a carbon or the archive).
    Out,
}

/// How a message reached us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Addressed to us (live, or from the server's offline storage).
    Direct,
    /// A copy for another of our clients (XEP-0280).
    Carbon,
    /// A result of a query of our archive (XEP-0313); its archive id is the `stanza_id`.
    Archive,
}

/// A chat message (or a bare receipt or chat state) that concerns one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundChat {
    /// The other side's bare JID.
    pub peer: BareJid,
    /// The other side's resource, when it wrote to us.
    pub resource: Option<String>,
    pub way: Way,
    pub via: Via,
    /// The stanza's `id` attribute.
    pub id: Option<String>,
    /// The sender's XEP-0359 `<origin-id>`.
    pub origin_id: Option<String>,
    /// Our server's XEP-0359 `<stanza-id>` (or the archive id of an archive result).
    pub stanza_id: Option<String>,
    pub thread: Option<String>,
    pub body: Option<String>,
    /// When the sender sent it (XEP-0203), as Unix ms, if it was delayed or archived.
    pub sent_at_ms: Option<i64>,
    /// The sender asks for a XEP-0184 receipt.
    pub receipt_requested: bool,
    /// This is a XEP-0184 receipt for our message with this id.
    pub receipt_for: Option<String>,
    pub chat_state: Option<ChatState>,
    /// Its CUSAX elements (sip-contact, reach, sip-correlation).
    pub cusax: MessageCusax,
}

/// What a `<message/>` stanza means to us.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Chat(Box<InboundChat>),
    /// The server or the peer bounced our message `id`.
    Bounced {
        peer: BareJid,
        id: String,
    },
    /// Not one-to-one chat (groupchat, headline, a PEP event ...): someone else's business.
    Other(Box<Message>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("a carbon from {0}, not from our own account: ignored")]
    ForgedCarbon(String),
    #[error("an archive result from {0}, not from our own archive: ignored")]
    ForgedArchive(String),
    #[error("a message without a sender or recipient")]
    NoPeer,
    #[error("a malformed {0}")]
    Malformed(&'static str),
}

/// Reads a message that arrived on the account `own`. `server_ids`: our server stamps
/// XEP-0359 stanza-ids (it says so in its disco#info).
pub fn read_message(mut message: Message, own: &BareJid, server_ids: bool) -> Result<Inbound, ChatError> {
    let from_own_account =
        |m: &Message| m.from.as_ref().is_none_or(|f| f.to_bare() == *own && f.resource().is_none());
    if message.type_ == MessageType::Error {
        return match (&message.from, &message.id) {
            (Some(from), Some(id)) => Ok(Inbound::Bounced { peer: from.to_bare(), id: id.0.clone() }),
            _ => Ok(Inbound::Other(Box::new(message))),
        };
    }
    if let Some(result) = take::<mam::Result_>(&mut message, "result", xmpp_parsers::ns::MAM)? {
        if !from_own_account(&message) {
            return Err(ChatError::ForgedArchive(sender(&message)));
        }
        let delay = result.forwarded.delay;
        return read_copy(result.forwarded.message, delay, own, Via::Archive, Some(result.id), server_ids);
    }
    if let Some(received) = take::<carbons::Received>(&mut message, "received", xmpp_parsers::ns::CARBONS)? {
        if !from_own_account(&message) {
            return Err(ChatError::ForgedCarbon(sender(&message)));
        }
        return read_copy(
            received.forwarded.message,
            received.forwarded.delay,
            own,
            Via::Carbon,
            None,
            server_ids,
        );
    }
    if let Some(sent) = take::<carbons::Sent>(&mut message, "sent", xmpp_parsers::ns::CARBONS)? {
        if !from_own_account(&message) {
            return Err(ChatError::ForgedCarbon(sender(&message)));
        }
        return read_copy(sent.forwarded.message, sent.forwarded.delay, own, Via::Carbon, None, server_ids);
    }
    // A PEP notification (XEP-0163) is no chat, whatever its type says.
    let event = message.payloads.iter().any(|p| p.is("event", xmpp_parsers::ns::PUBSUB_EVENT));
    if event || !matches!(message.type_, MessageType::Chat | MessageType::Normal) {
        return Ok(Inbound::Other(Box::new(message)));
    }
    let Some(from) = message.from.clone() else { return Ok(Inbound::Other(Box::new(message))) };
    if from.to_bare() == *own || from.node().is_none() {
        // Our own server or account (a PEP event, a notice): not a chat with a peer.
        return Ok(Inbound::Other(Box::new(message)));
    }
    let delay = take_lenient::<Delay>(&mut message, "delay", xmpp_parsers::ns::DELAY);
    read_chat(message, Way::In, from, delay, own, Via::Direct, None, server_ids)
}

/// A forwarded copy (carbon or archive): its direction follows from who wrote it.
fn read_copy(
    inner: Message,
    delay: Option<Delay>,
    own: &BareJid,
    via: Via,
    archive_id: Option<String>,
    server_ids: bool,
) -> Result<Inbound, ChatError> {
    if !matches!(inner.type_, MessageType::Chat | MessageType::Normal) {
        return Ok(Inbound::Other(Box::new(inner)));
    }
    let ours = inner.from.as_ref().is_some_and(|f| f.to_bare() == *own);
    let (way, peer) = if ours { (Way::Out, inner.to.clone()) } else { (Way::In, inner.from.clone()) };
    let peer = peer.ok_or(ChatError::NoPeer)?;
    read_chat(inner, way, peer, delay, own, via, archive_id, server_ids)
}

#[allow(clippy::too_many_arguments)]
fn read_chat(
    mut message: Message,
    way: Way,
    peer: Jid,
    delay: Option<Delay>,
    own: &BareJid,
    via: Via,
    archive_id: Option<String>,
    server_ids: bool,
) -> Result<Inbound, ChatError> {
    let delay = match delay {
        Some(delay) => Some(delay),
        None => take_lenient::<Delay>(&mut message, "delay", xmpp_parsers::ns::DELAY),
    };
    let mut stanza_id = archive_id;
    let mut origin_id = None;
    let mut receipt_requested = false;
    let mut receipt_for = None;
    let mut chat_state = None;
    let mut cusax = MessageCusax::default();
    for payload in std::mem::take(&mut message.payloads) {
        if cusax.take(&payload) {
            continue;
        }
        if payload.is("stanza-id", xmpp_parsers::ns::SID) {
            if let Ok(id) = StanzaId::try_from(payload)
                && server_ids
                && id.by.as_str() == own.as_str()
                && stanza_id.is_none()
            {
                stanza_id = Some(id.id);
            }
        } else if payload.is("origin-id", xmpp_parsers::ns::SID) {
            origin_id = OriginId::try_from(payload).ok().map(|o| o.id);
        } else if payload.is("request", xmpp_parsers::ns::RECEIPTS) {
            receipt_requested = true;
        } else if payload.is("received", xmpp_parsers::ns::RECEIPTS) {
            receipt_for = receipts::Received::try_from(payload).ok().map(|r| r.id);
        } else if payload.ns() == xmpp_parsers::ns::CHATSTATES {
            chat_state = ChatState::try_from(payload).ok();
        }
    }
    let body = message.get_best_body_cloned(vec![]).map(|(_, body)| body);
    Ok(Inbound::Chat(Box::new(InboundChat {
        peer: peer.to_bare(),
        resource: if way == Way::In { peer.resource().map(|r| r.to_string()) } else { None },
        way,
        via,
        id: message.id.map(|id| id.0),
        origin_id,
        stanza_id,
        thread: message.thread.map(|t| t.id),
        body,
        sent_at_ms: delay.map(|d| d.stamp.0.timestamp_millis()),
        receipt_requested,
        receipt_for,
        chat_state,
        cusax,
    })))
}

/// Takes the first payload named `name` in `ns` out of the message, parsed; a malformed one
/// is dropped and counts as absent.
fn take_lenient<T: TryFrom<Element>>(message: &mut Message, name: &str, ns: &str) -> Option<T> {
    let at = message.payloads.iter().position(|p| p.is(name, ns))?;
    T::try_from(message.payloads.remove(at)).ok()
}

/// Takes the first payload named `name` in `ns` out of the message, parsed.
fn take<T: TryFrom<Element>>(message: &mut Message, name: &str, ns: &str) -> Result<Option<T>, ChatError> {
    let Some(at) = message.payloads.iter().position(|p| p.is(name, ns)) else { return Ok(None) };
    let element = message.payloads.remove(at);
    T::try_from(element).map(Some).map_err(|_| ChatError::Malformed(static_name(name)))
}

fn static_name(name: &str) -> &'static str {
    match name {
        "result" => "archive result",
        "received" | "sent" => "carbon",
        _ => "payload",
    }
}

fn sender(message: &Message) -> String {
    message.from.as_ref().map(|f| f.to_string()).unwrap_or_default()
}

/// Our chat message: `id` and origin-id are `uid` (so a receipt and our archive name it),
/// with the conversation's thread, a receipt request and `<active/>` (XEP-0085 section 5.1:
/// a first message may carry it to learn whether the peer supports chat states).
pub fn chat_message(to: Jid, uid: &str, body: &str, thread: &str) -> Message {
    let mut message = Message::chat(to).with_body(Lang::new(), body.to_owned());
    message.id = Some(Id(uid.to_owned()));
    message.thread = Some(Thread { parent: None, id: thread.to_owned() });
    message
        .with_payload(OriginId { id: uid.to_owned() })
        .with_payload(receipts::Request)
        .with_payload(ChatState::Active)
}

/// The XEP-0184 receipt for the message `id` from `to`.
pub fn receipt(to: Jid, id: &str, thread: Option<&str>) -> Message {
    let mut message = Message::chat(to).with_payload(receipts::Received { id: id.to_owned() });
    message.thread = thread.map(|t| Thread { parent: None, id: t.to_owned() });
    message
}

/// A standalone chat state notification (XEP-0085 section 5.5), kept out of archives.
pub fn chat_state(to: Jid, state: ChatState, thread: &str) -> Message {
    let mut message = Message::chat(to).with_payload(state);
    message.thread = Some(Thread { parent: None, id: thread.to_owned() });
    message.payloads.push(Element::builder("no-store", HINTS).build());
    message
}

/// The name D-Bus uses for a chat state.
pub fn chat_state_name(state: ChatState) -> &'static str {
    match state {
        ChatState::Active => "active",
        ChatState::Composing => "composing",
        ChatState::Paused => "paused",
        ChatState::Inactive => "inactive",
        ChatState::Gone => "gone",
    }
}

/// Reads a chat state name given over D-Bus.
pub fn parse_chat_state(name: &str) -> Option<ChatState> {
    [ChatState::Active, ChatState::Composing, ChatState::Paused, ChatState::Inactive, ChatState::Gone]
        .into_iter()
        .find(|s| chat_state_name(s.clone()) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> BareJid {
        BareJid::new("alice@example.org").unwrap()
    }

    fn parse(xml: &str) -> Result<Inbound, ChatError> {
        let element: Element = xml.parse().unwrap();
        read_message(Message::try_from(element).unwrap(), &own(), true)
    }

    fn chat(xml: &str) -> InboundChat {
        match parse(xml).unwrap() {
            Inbound::Chat(chat) => *chat,
            other => panic!("not a chat: {other:?}"),
        }
    }

    #[test]
    fn a_live_message_with_everything() {
        let m = chat(
            "<message xmlns='jabber:client' from='bob@example.org/phone' to='alice@example.org/cusax' type='chat' id='m1'>
               <body>hi</body><thread>T</thread><request xmlns='urn:xmpp:receipts'/>
               <active xmlns='http://jabber.org/protocol/chatstates'/>
               <origin-id xmlns='urn:xmpp:sid:0' id='O'/>
               <stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.org' id='forged'/>
               <stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.org' id='S'/>
             </message>",
        );
        assert_eq!(m.peer.as_str(), "bob@example.org");
        assert_eq!(m.resource.as_deref(), Some("phone"));
        assert_eq!((m.way, m.via.clone()), (Way::In, Via::Direct));
        assert_eq!(m.body.as_deref(), Some("hi"));
        assert_eq!(m.thread.as_deref(), Some("T"));
        assert_eq!(m.id.as_deref(), Some("m1"));
        assert_eq!(m.origin_id.as_deref(), Some("O"));
        assert_eq!(m.stanza_id.as_deref(), Some("S"), "only our server's id counts");
        assert!(m.receipt_requested);
        assert_eq!(m.chat_state, Some(ChatState::Active));
        assert_eq!(m.sent_at_ms, None);
        let element: Element =
            "<message xmlns='jabber:client' from='bob@example.org/phone' type='chat'><body>x</body>
               <stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.org' id='forged'/></message>"
                .parse()
                .unwrap();
        let Inbound::Chat(m) = read_message(Message::try_from(element).unwrap(), &own(), false).unwrap()
        else {
            panic!("not a chat")
        };
        assert_eq!(m.stanza_id, None, "a server that does not stamp ids lets forged ones through");
    }

    #[test]
    fn receipts_chat_states_and_offline_delays() {
        let r = chat(
            "<message xmlns='jabber:client' from='bob@example.org/phone'><received xmlns='urn:xmpp:receipts' id='u1'/></message>",
        );
        assert_eq!((r.receipt_for.as_deref(), r.body), (Some("u1"), None));
        let c = chat(
            "<message xmlns='jabber:client' from='bob@example.org/phone' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert_eq!(c.chat_state, Some(ChatState::Composing));
        let d = chat(
            "<message xmlns='jabber:client' from='bob@example.org/phone' type='chat'><body>late</body>
               <delay xmlns='urn:xmpp:delay' from='example.org' stamp='2026-11-27T10:00:00Z'/></message>",
        );
        assert_eq!(d.sent_at_ms, Some(1_795_773_600_000));
    }

    #[test]
    fn carbons_count_only_from_our_own_account() {
        let sent = "<message xmlns='jabber:client' from='alice@example.org' to='alice@example.org/cusax' type='chat'>
               <sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>
                 <message xmlns='jabber:client' from='alice@example.org/laptop' to='bob@example.org/phone' type='chat' id='x'><body>from my laptop</body></message>
               </forwarded></sent></message>";
        let m = chat(sent);
        assert_eq!((m.way, m.via.clone(), m.peer.as_str()), (Way::Out, Via::Carbon, "bob@example.org"));
        assert_eq!(m.resource, None);
        let received = sent.replace("<sent ", "<received ").replace("</sent>", "</received>").replace(
            "from='alice@example.org/laptop' to='bob@example.org/phone'",
            "from='bob@example.org/phone' to='alice@example.org/laptop'",
        );
        let m = chat(&received);
        assert_eq!(
            (m.way, m.peer.as_str(), m.resource.as_deref()),
            (Way::In, "bob@example.org", Some("phone"))
        );
        let forged = received.replacen("from='alice@example.org'", "from='mallory@example.org'", 1);
        assert_eq!(parse(&forged), Err(ChatError::ForgedCarbon("mallory@example.org".into())));
        let from_a_resource =
            received.replacen("from='alice@example.org'", "from='alice@example.org/evil'", 1);
        assert!(matches!(parse(&from_a_resource), Err(ChatError::ForgedCarbon(_))));
    }

    #[test]
    fn archive_results_carry_their_archive_id_and_time() {
        let xml = "<message xmlns='jabber:client' to='alice@example.org/cusax'>
               <result xmlns='urn:xmpp:mam:2' queryid='q1' id='A7'><forwarded xmlns='urn:xmpp:forward:0'>
                 <delay xmlns='urn:xmpp:delay' stamp='2026-11-27T10:00:00.500Z'/>
                 <message xmlns='jabber:client' from='bob@example.org/phone' to='alice@example.org' type='chat'><body>old</body></message>
               </forwarded></result></message>";
        let m = chat(xml);
        assert_eq!(m.via, Via::Archive);
        assert_eq!(m.stanza_id.as_deref(), Some("A7"));
        assert_eq!(m.sent_at_ms, Some(1_795_773_600_500));
        let forged = xml.replacen(
            "to='alice@example.org/cusax'",
            "from='bob@example.org' to='alice@example.org/cusax'",
            1,
        );
        assert!(matches!(parse(&forged), Err(ChatError::ForgedArchive(_))));
    }

    #[test]
    fn errors_groupchat_and_server_messages_are_not_chats() {
        let bounced = parse(
            "<message xmlns='jabber:client' from='nobody@example.org' type='error' id='u9'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
        );
        assert_eq!(
            bounced.unwrap(),
            Inbound::Bounced { peer: BareJid::new("nobody@example.org").unwrap(), id: "u9".into() }
        );
        for xml in [
            "<message xmlns='jabber:client' from='room@muc.example.org/x' type='groupchat'><body>x</body></message>",
            "<message xmlns='jabber:client' from='example.org'><body>motd</body></message>",
            "<message xmlns='jabber:client' from='alice@example.org'><event xmlns='http://jabber.org/protocol/pubsub#event'/></message>",
            "<message xmlns='jabber:client' from='bob@example.org'><event xmlns='http://jabber.org/protocol/pubsub#event'/></message>",
        ] {
            assert!(matches!(parse(xml), Ok(Inbound::Other(_))), "{xml}");
        }
        // Broken annotations are dropped; the text is kept.
        let broken = chat(
            "<message xmlns='jabber:client' from='bob@example.org/p' type='chat'><body>kept</body>
               <received xmlns='urn:xmpp:receipts'/><delay xmlns='urn:xmpp:delay' stamp='yesterday'/>
               <stanza-id xmlns='urn:xmpp:sid:0' id='x'/><origin-id xmlns='urn:xmpp:sid:0'/></message>",
        );
        assert_eq!(
            (broken.body.as_deref(), broken.receipt_for, broken.sent_at_ms),
            (Some("kept"), None, None)
        );
        assert_eq!((broken.stanza_id, broken.origin_id), (None, None));
        let bad_carbon = "<message xmlns='jabber:client' from='alice@example.org'><sent xmlns='urn:xmpp:carbons:2'/></message>";
        assert_eq!(parse(bad_carbon), Err(ChatError::Malformed("carbon")));
    }

    #[test]
    fn what_we_send_reads_back() {
        let to = Jid::new("bob@example.org").unwrap();
        let mut ours = chat_message(to, "u1", "hello", "T");
        ours.from = Some(Jid::new("carol@example.org/x").unwrap());
        let m = match read_message(ours, &own(), true).unwrap() {
            Inbound::Chat(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!((m.id.as_deref(), m.origin_id.as_deref()), (Some("u1"), Some("u1")));
        assert_eq!((m.body.as_deref(), m.thread.as_deref()), (Some("hello"), Some("T")));
        assert!(m.receipt_requested);
        assert_eq!(m.chat_state, Some(ChatState::Active));
        assert_eq!(parse_chat_state("composing"), Some(ChatState::Composing));
        assert_eq!(parse_chat_state("typing"), None);
        let state: Element = chat_state(Jid::new("bob@example.org").unwrap(), ChatState::Paused, "T").into();
        assert!(state.has_child("no-store", HINTS));
    }
}
