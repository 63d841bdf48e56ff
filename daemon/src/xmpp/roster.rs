//! Roster and presence on the XMPP actor (RFC 6121), with caps (XEP-0115) and the answers we
//! owe to IQs addressed to us.

use std::collections::HashMap;
use std::sync::Arc;

use cusax_protocol::xmpp::{caps, cusax, vcard};
use tracing::{debug, info, warn};
use xmpp_parsers::caps::Caps;
use xmpp_parsers::disco::{DiscoInfoQuery, DiscoInfoResult};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;
use xmpp_parsers::presence::{Presence, Show, Type};
use xmpp_parsers::pubsub::NodeName;
use xmpp_parsers::pubsub::pubsub::{Items, PubSub};
use xmpp_parsers::roster::{Ask, Item, Roster, Subscription};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use super::{Internal, IqClient, IqFailure, Waiting, XmppActor, XmppEvent, new_id};
use crate::config::OnThePhone;
use crate::hub::HubEvent;

/// A roster item as the hub keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    pub jid: String,
    /// The name the user gave the contact, or "".
    pub name: String,
    /// none, to, from or both (RFC 6121 section 2.1.2.5).
    pub subscription: &'static str,
    /// We asked to see the contact's presence and they have not answered.
    pub asked: bool,
    /// The item was removed from the roster.
    pub removed: bool,
}

impl RosterEntry {
    fn from_item(item: Item) -> Self {
        let subscription = match item.subscription {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
            Subscription::Remove => "remove",
        };
        Self {
            jid: item.jid.to_string(),
            name: item.name.unwrap_or_default(),
            subscription,
            asked: item.ask == Ask::Subscribe,
            removed: item.subscription == Subscription::Remove,
        }
    }
}

/// One available resource of a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePresence {
    /// available, chat, away, xa or dnd.
    pub show: String,
    pub status: String,
    pub priority: i8,
    /// The SIP addresses its `<reach>` names, in order (XEP-0152).
    pub reach: Vec<String>,
    /// Its draft `<contact>`: the target's feature tags, and open, busy or closed.
    pub sip_tags: Vec<String>,
    pub sip_status: Option<&'static str>,
}

/// Our own presence: `show` is none for plain available.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnPresence {
    pub show: Option<Show>,
    pub status: String,
}

impl OwnPresence {
    /// Reads what `Daemon.SetPresence` was given: show is available, chat, away, xa or dnd.
    pub fn parse(show: &str, status: &str) -> Result<Self, String> {
        let show = match show {
            "available" | "" => None,
            "chat" => Some(Show::Chat),
            "away" => Some(Show::Away),
            "xa" => Some(Show::Xa),
            "dnd" => Some(Show::Dnd),
            other => return Err(format!("unknown show {other:?}: available, chat, away, xa or dnd")),
        };
        if status.len() > 1024 {
            return Err("the status text is longer than 1024 bytes".into());
        }
        if let Some(c) = crate::hub::xml_forbidden(status) {
            return Err(format!("the status text holds {c:?}, which XMPP cannot carry"));
        }
        Ok(Self { show, status: status.to_owned() })
    }

    pub fn show_name(&self) -> &'static str {
        show_name(self.show.as_ref())
    }

    /// Our broadcast presence, with our caps (XEP-0115 section 4: in every available
    /// presence) and, while SIP is registered, our addresses and SIP availability (REQ-5).
    pub(super) fn stanza(&self, sip: Option<&SipPresence>) -> Presence {
        let mut presence = Presence::available();
        presence.show = self.show.clone();
        let mut status = self.status.clone();
        // Jitsi's "On the phone" (cusax-wire 7.3), only over a plain available: a show the
        // user chose stays.
        if sip.is_some_and(SipPresence::on_the_phone_shown) && self.show.is_none() {
            presence.show = Some(Show::Away);
            status = ON_THE_PHONE.to_owned();
        }
        if !status.is_empty() {
            presence.set_status("", status);
        }
        let mut presence = presence.with_payload(caps::own_caps());
        if let Some(sip) = sip
            && let Some(first) = sip.targets.first()
        {
            presence.payloads.push(cusax::reach(&sip.targets));
            let target = cusax::SipTarget { uri: first.clone(), tags: vec!["audio".into()] };
            let availability = if sip.busy { cusax::Availability::Busy } else { cusax::Availability::Open };
            presence.payloads.push(cusax::contact(&target, availability));
        }
        presence
    }
}

fn show_name(show: Option<&Show>) -> &'static str {
    match show {
        None => "available",
        Some(Show::Chat) => "chat",
        Some(Show::Away) => "away",
        Some(Show::Xa) => "xa",
        Some(Show::Dnd) => "dnd",
    }
}

/// The status text Jitsi shows and reads for a call (an English string: cusax-wire P14).
const ON_THE_PHONE: &str = "On the phone";

/// What our presence says about SIP while it is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipPresence {
    /// Our addresses, in the order to try them: GRUU, then AoR (XEP-0152 section 4).
    pub targets: Vec<String>,
    /// A call is up.
    pub busy: bool,
    /// How a call shows (`[presence] on_the_phone`).
    pub on_the_phone: OnThePhone,
}

impl SipPresence {
    fn on_the_phone_shown(&self) -> bool {
        self.busy && self.on_the_phone == OnThePhone::ShowAway
    }

    fn on_the_phone_pep(&self) -> bool {
        self.busy && self.on_the_phone != OnThePhone::Off
    }
}

/// What to do about a subscription (RFC 6121 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionAction {
    /// Ask to see the contact's presence.
    Subscribe,
    /// Let the contact see ours.
    Approve,
    /// Refuse (or revoke) the contact's view of ours.
    Deny,
}

impl SubscriptionAction {
    pub(super) fn stanza(self, jid: BareJid) -> Presence {
        let type_ = match self {
            SubscriptionAction::Subscribe => Type::Subscribe,
            SubscriptionAction::Approve => Type::Subscribed,
            SubscriptionAction::Deny => Type::Unsubscribed,
        };
        Presence::new(type_).with_to(jid)
    }
}

/// `peer`, or its full JID when a resource is known.
pub(super) fn address(peer: &BareJid, resource: Option<&str>) -> Jid {
    match resource.and_then(|r| peer.with_resource_str(r).ok()) {
        Some(full) => full.into(),
        None => peer.clone().into(),
    }
}

/// Our answer to a get or set addressed to us: pings, disco#info about ourselves (also at
/// our caps node), and service-unavailable for the rest (RFC 6120 section 8.4).
pub(super) fn answer(id: String, payload: Element, get: bool) -> Iq {
    if get && payload.is("ping", ns::PING) {
        return Iq::Result { from: None, to: None, id, payload: None };
    }
    if get && let Ok(query) = DiscoInfoQuery::try_from(payload) {
        let own_node = caps::own_node();
        return match query.node {
            None => Iq::from_result(id, Some(caps::disco_info(None))),
            Some(node) if node == own_node => Iq::from_result(id, Some(caps::disco_info(Some(node)))),
            Some(_) => Iq::from_error(
                id,
                StanzaError::new(ErrorType::Cancel, DefinedCondition::ItemNotFound, "en", "no such node"),
            ),
        };
    }
    let error = StanzaError::new(
        ErrorType::Cancel,
        DefinedCondition::ServiceUnavailable,
        "en",
        "not implemented by cusaxd",
    );
    Iq::from_error(id, error)
}

/// Caps hashes kept at most (anyone can mint new ones; a real roster shows a few dozen).
const MAX_CAPS: usize = 512;

/// Caps hashes we have verified (XEP-0115 section 5.4), and those being resolved with who
/// waits for them.
#[derive(Debug, Default)]
pub(super) struct CapsCache {
    known: HashMap<Vec<u8>, Arc<[String]>>,
    waiting: HashMap<Vec<u8>, Vec<(String, String)>>,
}

impl XmppActor {
    /// Puts our SIP address in our vcard-temp (cusax-wire 3.10), keeping what else is there;
    /// nothing is written when it is there already.
    pub(super) fn publish_own_vcard(&self) {
        let Some(aor) = self.sip_address.clone() else { return };
        let iq = IqClient { internal: self.internal.clone() };
        tokio::spawn(async move {
            let query = Element::builder("vCard", vcard::VCARD_TEMP).build();
            let existing = match iq.ask(Iq::Get { from: None, to: None, id: new_id(), payload: query }).await
            {
                Ok(answer) => answer,
                // A server says item-not-found for an account that never had a vCard.
                Err(IqFailure::Error(e)) if e.defined_condition == DefinedCondition::ItemNotFound => None,
                Err(e) => {
                    warn!(error = %e, "cannot read our vCard");
                    return;
                }
            };
            let Some(updated) = vcard::with_own_tels(existing.as_ref(), &vcard::own_tels(&aor)) else {
                return;
            };
            match iq.ask(Iq::Set { from: None, to: None, id: new_id(), payload: updated }).await {
                Ok(_) => info!("our vCard now carries our SIP address"),
                Err(e) => warn!(error = %e, "cannot publish our vCard"),
            }
        });
    }

    /// XEP-0108 over PEP (cusax-wire 3.8, P22): "on the phone" while a call is up (unless the
    /// policy is off), none otherwise; published when that changes, and once per session
    /// after the catch-up, which clears one that a crash left on the server.
    pub(super) fn publish_activity(&mut self) {
        let wanted = self.sip_presence.as_ref().is_some_and(SipPresence::on_the_phone_pep);
        if !self.online || !self.caught_up || self.activity_published == Some(wanted) {
            return;
        }
        self.activity_published = Some(wanted);
        let iq = IqClient { internal: self.internal.clone() };
        tokio::spawn(async move {
            let payload = cusax::activity_publish(wanted);
            match iq.ask(Iq::Set { from: None, to: None, id: new_id(), payload }).await {
                Ok(_) => debug!(on_the_phone = wanted, "activity published"),
                Err(e) => warn!(error = %e, "cannot publish our activity"),
            }
        });
    }

    /// Reads a contact's vcard-temp and vCard4 (its PEP node) and reports their telephones.
    pub(super) fn fetch_vcard(&self, jid: BareJid) {
        let iq = IqClient { internal: self.internal.clone() };
        let events = self.events.clone();
        tokio::spawn(async move {
            let to = Jid::from(jid.clone());
            let temp = Iq::Get {
                from: None,
                to: Some(to.clone()),
                id: new_id(),
                payload: Element::builder("vCard", vcard::VCARD_TEMP).build(),
            };
            let items = Items {
                max_items: None,
                node: NodeName(vcard::VCARD4_NODE.to_owned()),
                subid: None,
                items: Vec::new(),
            };
            let pep = Iq::from_get(new_id(), PubSub::Items(items)).with_to(to);
            let (temp, pep) = tokio::join!(iq.ask(temp), iq.ask(pep));
            let mut tels = match temp {
                Ok(Some(v)) if v.is("vCard", vcard::VCARD_TEMP) => vcard::read_vcard_temp(&v),
                _ => Vec::new(),
            };
            if let Ok(Some(pubsub)) = pep
                && let Some(card) = pubsub.get_child("items", ns::PUBSUB).and_then(vcard::vcard4_in_items)
            {
                for tel in vcard::read_vcard4(card) {
                    if !tels.iter().any(|o| o.number == tel.number) {
                        tels.push(tel);
                    }
                }
            }
            let _ = events.send(HubEvent::Xmpp(XmppEvent::VCard { jid: jid.to_string(), tels }));
        });
    }

    /// A message that is not a chat: PEP notifications of a contact's vCard4, XEP-0108
    /// activity and XEP-0152 reach are taken in (only about the account that sent it: a
    /// server stamps the sender).
    pub(super) fn on_other_message(&self, message: &xmpp_parsers::message::Message) {
        let Some(from) = &message.from else { return };
        let jid = from.to_bare().to_string();
        let items: Vec<&Element> = message
            .payloads
            .iter()
            .filter(|p| p.is("event", ns::PUBSUB_EVENT))
            .filter_map(|e| e.get_child("items", ns::PUBSUB_EVENT))
            .collect();
        let card = items.iter().find(|i| i.attr("node") == Some(vcard::VCARD4_NODE));
        if let Some(card) = card.and_then(|i| vcard::vcard4_in_items(i)) {
            self.emit(XmppEvent::VCard { jid: jid.clone(), tels: vcard::read_vcard4(card) });
        }
        if let Some(on_the_phone) = items.iter().find_map(|i| cusax::read_activity_items(i)) {
            self.emit(XmppEvent::Activity { jid: jid.clone(), on_the_phone });
        }
        if let Some(addresses) = items.iter().find_map(|i| cusax::read_reach_items(i)) {
            self.emit(XmppEvent::PepReach { jid, addresses });
        }
    }

    /// Asks for the whole roster; [`Self::on_roster`] takes the answer, in order with the
    /// pushes that may follow it.
    pub(super) async fn request_roster(&mut self) {
        let id = new_id();
        self.iqs.insert(id.clone(), (None, Waiting::Roster));
        self.send(Iq::from_get(id, Roster { ver: None, items: Vec::new() }).into()).await;
    }

    pub(super) fn on_roster(&mut self, payload: Option<Element>) {
        match payload.map(Roster::try_from) {
            Some(Ok(roster)) => {
                let items = roster.items.into_iter().map(RosterEntry::from_item).collect();
                self.emit(XmppEvent::Roster { items });
            }
            Some(Err(e)) => warn!(error = %e, "a malformed roster"),
            None => warn!("an empty roster answer"),
        }
    }

    /// A roster push from our server (the caller checked who sent it).
    pub(super) fn on_roster_push(&mut self, payload: Element) {
        match Roster::try_from(payload) {
            // RFC 6121 section 2.1.6: a push holds exactly one item.
            Ok(roster) if roster.items.len() == 1 => {
                for item in roster.items {
                    self.emit(XmppEvent::RosterPush { item: RosterEntry::from_item(item) });
                }
            }
            Ok(_) => warn!("a roster push without exactly one item: ignored"),
            Err(e) => warn!(error = %e, "a malformed roster push"),
        }
    }

    pub(super) fn on_presence(&mut self, presence: Presence) {
        let Some(from) = presence.from.clone() else { return };
        let jid = from.to_bare();
        if self.account.as_ref() == Some(&jid) {
            // Our own other clients.
            return;
        }
        let resource = from.resource().map(|r| r.to_string()).unwrap_or_default();
        match presence.type_ {
            Type::Subscribe => self.emit(XmppEvent::SubscriptionRequest { jid: jid.to_string() }),
            Type::None => {
                let status = presence.statuses.values().next().cloned().unwrap_or_default();
                let contact = presence.payloads.iter().find_map(|p| cusax::read_contact(p).ok());
                // SIP addresses only, a few: a contact cannot fill our memory with them.
                let mut reach: Vec<String> = presence
                    .payloads
                    .iter()
                    .find_map(|p| cusax::read_reach(p).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| cusax::SipTarget::parse(a).is_ok())
                    .take(cusax::MAX_REACH)
                    .collect();
                // A draft <contact> without <reach> still names where SIP reaches them.
                if let (true, Some((target, _))) = (reach.is_empty(), &contact) {
                    reach.push(target.uri.clone());
                }
                // Jitsi's "On the phone" (cusax-wire 7.3) reads as busy too.
                let on_the_phone = status.contains("On the phone");
                let sip_status = match contact.as_ref().and_then(|(_, s)| *s) {
                    Some(s) if on_the_phone && s == cusax::Availability::Open => Some("busy"),
                    Some(s) => Some(s.as_str()),
                    None if on_the_phone => Some("busy"),
                    None => None,
                };
                let state = ResourcePresence {
                    show: show_name(presence.show.as_ref()).to_owned(),
                    status,
                    priority: presence.priority.0,
                    reach,
                    sip_tags: contact.map(|(t, _)| t.tags).unwrap_or_default(),
                    sip_status,
                };
                let caps = presence
                    .payloads
                    .iter()
                    .find(|p| p.is("c", ns::CAPS))
                    .and_then(|c| Caps::try_from(c.clone()).ok());
                self.emit(XmppEvent::Presence {
                    jid: jid.to_string(),
                    resource: resource.clone(),
                    presence: Some(state),
                });
                if let Some(caps) = caps {
                    self.resolve_caps(from, jid.to_string(), resource, caps);
                }
            }
            Type::Unavailable => {
                self.emit(XmppEvent::Presence { jid: jid.to_string(), resource, presence: None })
            }
            other => debug!(?other, from = %jid, "presence"),
        }
    }

    /// Finds out what `caps` stands for: from the cache, or by asking `from` once per hash.
    fn resolve_caps(&mut self, from: Jid, jid: String, resource: String, caps: Caps) {
        if let Some(features) = self.caps.known.get(&caps.ver) {
            let features = features.clone();
            self.emit(XmppEvent::Capabilities { jid, resource, features });
            return;
        }
        if self.caps.waiting.len() >= MAX_CAPS && !self.caps.waiting.contains_key(&caps.ver) {
            debug!("too many caps being resolved: one left alone");
            return;
        }
        let waiting = self.caps.waiting.entry(caps.ver.clone()).or_default();
        waiting.push((jid, resource));
        if waiting.len() > 1 {
            return;
        }
        let iq = IqClient { internal: self.internal.clone() };
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let query = xmpp_parsers::caps::query_caps(caps.clone());
            let answer = iq.ask(Iq::from_get(new_id(), query).with_to(from)).await;
            let features = match answer {
                Ok(Some(payload)) => DiscoInfoResult::try_from(payload)
                    .ok()
                    .filter(|info| caps::matches(info, &caps))
                    .map(|info| info.features.into_iter().collect::<Vec<_>>().into()),
                _ => None,
            };
            let _ = internal.send(Internal::CapsResolved { ver: caps.ver, features });
        });
    }

    pub(super) fn on_caps_resolved(&mut self, ver: Vec<u8>, features: Option<Arc<[String]>>) {
        let waiting = self.caps.waiting.remove(&ver).unwrap_or_default();
        let Some(features) = features else {
            debug!("a caps hash did not resolve or did not match its answer");
            return;
        };
        if self.caps.known.len() >= MAX_CAPS {
            self.caps.known.clear();
        }
        self.caps.known.insert(ver, features.clone());
        for (jid, resource) in waiting {
            self.emit(XmppEvent::Capabilities { jid, resource, features: features.clone() });
        }
    }
}
