//! One-to-one chat on the XMPP actor: the outbox, incoming messages, and the catch-up that
//! starts every new session.
//!
//! The outbox never loses or doubles a message:
//! - every message in it is already in the store (status queued); it goes to the stream only
//!   when the session is online and caught up, in the order it was accepted;
//! - it is marked sent when the server acks it (XEP-0198), and delivered on the peer's
//!   receipt (XEP-0184);
//! - when a session ends without resumption, what the server had not acked may or may not
//!   have reached it. Such messages (and after a restart, everything still queued) are looked
//!   up in our own archive (XEP-0313) first: found, they are marked sent; only the others are
//!   sent again. A server without an archive gets them again (at least once, then).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use chrono::SecondsFormat;
use cusax_protocol::sip::registration::uuid_v4;
use cusax_protocol::xmpp::chat::{self as stanzas, Inbound, InboundChat, Via, Way};
use tokio::sync::mpsc;
use tokio_xmpp::stanzastream::{StanzaStage, StanzaState, StanzaToken};
use tracing::{debug, info, warn};
use xmpp_parsers::carbons;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::mam;
use xmpp_parsers::message::Message;
use xmpp_parsers::rsm::SetQuery;

use super::{IqClient, XmppActor, XmppEvent, new_id, roster};
use crate::hub::HubEvent;
use crate::sip::OsEntropy;
use crate::store::{Direction, NewMessage, Status, StoreHandle, StoredMessage};

/// The account-state key of the last archive id we have seen.
const ARCHIVE_LAST: &str = "mam-last";
/// The account-state key of when (Unix ms) we found the archive empty: no id to go on from.
const ARCHIVE_EMPTY_SINCE: &str = "mam-empty-since";
/// Archive pages: this many messages each, at most this many pages per walk.
const ARCHIVE_PAGE: usize = 100;
const ARCHIVE_PAGES: usize = 50;
/// How far before a possibly-sent message the archive is searched (clock skew between us and
/// the server).
const ARCHIVE_SLACK_MS: i64 = 120_000;

/// A message of the outbox.
#[derive(Debug)]
pub(super) struct Outgoing {
    message: StoredMessage,
    resource: Option<String>,
    /// It may have reached the server before (an earlier session or process): look in the
    /// archive before sending it again.
    maybe_sent: bool,
}

/// The outbox: `pending` has not gone to this session's stream; `in_flight` has, and waits
/// for the server's ack.
#[derive(Default)]
pub(super) struct Outbox {
    pending: VecDeque<Outgoing>,
    in_flight: Vec<(Outgoing, StanzaToken)>,
}

/// Resolves when a sent message's fate is known: its uid and final state (`None`: the stream
/// let go of it without saying).
pub(super) type AckWait = Pin<Box<dyn Future<Output = (String, Option<StanzaState>)> + Send + Sync>>;

impl Outbox {
    /// Everything the account still has queued, from an earlier run perhaps.
    pub(super) async fn load(store: &StoreHandle, own: &BareJid) -> Self {
        let queued = store.outbox(own.as_str()).await.unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the outbox");
            Vec::new()
        });
        if !queued.is_empty() {
            debug!(messages = queued.len(), "queued messages from before");
        }
        let pending = queued
            .into_iter()
            .map(|message| Outgoing { message, resource: None, maybe_sent: true })
            .collect();
        Self { pending, in_flight: Vec::new() }
    }

    /// Where the archive search for possibly-sent messages starts (Unix ms), if any.
    pub(super) fn check_since_ms(&self) -> Option<i64> {
        self.pending
            .iter()
            .filter(|o| o.maybe_sent)
            .map(|o| o.message.at_ms)
            .min()
            .map(|at| at - ARCHIVE_SLACK_MS)
    }

    /// A new session began without resumption: what the old one sent and the server never
    /// acked goes back to the front of the queue, to be checked against the archive. What
    /// tokio-xmpp had not sent yet stays with it (it goes out on the new stream).
    pub(super) async fn on_reset(
        &mut self,
        store: &StoreHandle,
        own: Option<&BareJid>,
        events: &mpsc::UnboundedSender<HubEvent>,
    ) {
        let mut back = Vec::new();
        for (mut outgoing, token) in std::mem::take(&mut self.in_flight) {
            match token.state() {
                StanzaState::Queued => self.in_flight.push((outgoing, token)),
                StanzaState::Acked { .. } => {
                    if let Some(own) = own {
                        mark(store, events, own, &outgoing.message.peer, &outgoing.message.uid, Status::Sent)
                            .await;
                    }
                }
                _ => {
                    outgoing.maybe_sent = true;
                    outgoing.resource = None;
                    back.push(outgoing);
                }
            }
        }
        for outgoing in back.into_iter().rev() {
            self.pending.push_front(outgoing);
        }
    }

    /// Takes the message `uid` out (it is known to be sent), wherever it is.
    fn remove(&mut self, uid: &str) -> bool {
        let before = self.pending.len() + self.in_flight.len();
        self.pending.retain(|o| o.message.uid != uid);
        self.in_flight.retain(|(o, _)| o.message.uid != uid);
        before != self.pending.len() + self.in_flight.len()
    }
}

/// Moves a message on in the store and, when that changed it, tells the hub.
async fn mark(
    store: &StoreHandle,
    events: &mpsc::UnboundedSender<HubEvent>,
    own: &BareJid,
    peer: &str,
    uid: &str,
    status: Status,
) {
    match store.advance(own.as_str(), peer, uid, status).await {
        Ok(true) => {
            let event = XmppEvent::MessageStatus { peer: peer.to_owned(), uid: uid.to_owned(), status };
            let _ = events.send(HubEvent::Xmpp(event));
        }
        Ok(false) => {}
        Err(e) => warn!(error = %e, "cannot record a message's status"),
    }
}

impl XmppActor {
    /// A message the hub stored: straight out when the session is ready and nothing waits
    /// before it, else at the back of the queue.
    pub(super) async fn queue_message(&mut self, message: StoredMessage, resource: Option<String>) {
        let outgoing = Outgoing { message, resource, maybe_sent: false };
        if self.online && self.caught_up && self.outbox.pending.is_empty() {
            self.send_message(outgoing).await;
        } else {
            self.outbox.pending.push_back(outgoing);
        }
    }

    /// Sends the queue, in order, while the session lasts.
    pub(super) async fn flush_outbox(&mut self) {
        while self.online {
            let Some(outgoing) = self.outbox.pending.pop_front() else { break };
            self.send_message(outgoing).await;
        }
    }

    async fn send_message(&mut self, outgoing: Outgoing) {
        let m = &outgoing.message;
        let Ok(peer) = BareJid::new(&m.peer) else {
            warn!("a queued message to an invalid address: dropped from the outbox");
            if let Some(own) = self.account.clone() {
                mark(&self.store, &self.events, &own, &m.peer, &m.uid, Status::Failed).await;
            }
            return;
        };
        let thread = m.thread.clone().unwrap_or_default();
        let stanza = stanzas::chat_message(
            roster::address(&peer, outgoing.resource.as_deref()),
            &m.uid,
            &m.body,
            &thread,
        );
        let Some(token) = self.send(stanza.into()).await else {
            self.outbox.pending.push_front(outgoing);
            return;
        };
        // Without stream management "sent" is the most we will ever learn.
        let target = if self.sm { StanzaStage::Acked } else { StanzaStage::Sent };
        let (uid, mut waiting) = (m.uid.clone(), token.clone());
        self.acks.push(Box::pin(async move { (uid, waiting.wait_for(target).await) }));
        self.outbox.in_flight.push((outgoing, token));
    }

    pub(super) async fn on_ack(&mut self, (uid, state): (String, Option<StanzaState>)) {
        let Some(own) = self.account.clone() else { return };
        if !matches!(state, Some(StanzaState::Acked { .. } | StanzaState::Sent { .. })) {
            // Dropped with its session: the reset puts it back in the queue.
            return;
        }
        let Some(at) = self.outbox.in_flight.iter().position(|(o, _)| o.message.uid == uid) else { return };
        let (outgoing, _) = self.outbox.in_flight.remove(at);
        mark(&self.store, &self.events, &own, &outgoing.message.peer, &uid, Status::Sent).await;
    }

    pub(super) async fn on_message(&mut self, message: Message) {
        let Some(own) = self.account.clone() else { return };
        match stanzas::read_message(message, &own) {
            Err(e) => warn!(error = %e, "a message was refused"),
            Ok(Inbound::Other(message)) => debug!(from = ?message.from, "a message that is not a chat"),
            Ok(Inbound::Bounced { peer, id }) => {
                warn!(peer = %peer, "a message bounced");
                self.outbox.remove(&id);
                mark(&self.store, &self.events, &own, peer.as_str(), &id, Status::Failed).await;
            }
            Ok(Inbound::Chat(chat)) => self.on_chat(*chat, &own).await,
        }
    }

    async fn on_chat(&mut self, chat: InboundChat, own: &BareJid) {
        let peer = chat.peer.to_string();
        if let (Some(id), Way::In) = (&chat.receipt_for, chat.way) {
            mark(&self.store, &self.events, own, &peer, id, Status::Delivered).await;
        }
        if chat.way == Way::Out {
            // Our own message seen in the archive or a carbon: it has reached the server.
            for id in [&chat.origin_id, &chat.id].into_iter().flatten() {
                if self.outbox.remove(id) {
                    info!(via = ?chat.via, "a queued message has reached the server already: not sending it again");
                    mark(&self.store, &self.events, own, &peer, id, Status::Sent).await;
                }
            }
        }
        let live = chat.via == Via::Direct && chat.sent_at_ms.is_none();
        if let (Some(state), Way::In, true) = (&chat.chat_state, chat.way, live) {
            let state = stanzas::chat_state_name(state.clone());
            self.emit(XmppEvent::ChatState { peer: peer.clone(), resource: chat.resource.clone(), state });
        }
        if let (Some(stanza_id), false) = (&chat.stanza_id, matches!(chat.via, Via::Archive { .. }))
            && let Err(e) = self.store.set_state(own.as_str(), ARCHIVE_LAST, stanza_id.clone()).await
        {
            warn!(error = %e, "cannot record the archive position");
        }
        let Some(body) = chat.body.clone() else { return };
        let record = NewMessage {
            uid: uuid_v4(&mut OsEntropy),
            peer: peer.clone(),
            direction: if chat.way == Way::In { Direction::In } else { Direction::Out },
            thread: chat.thread.clone(),
            body,
            at_ms: chat.sent_at_ms.unwrap_or_else(now_ms),
            status: if chat.way == Way::In { Status::Received } else { Status::Sent },
            stanza_id: chat.stanza_id.clone(),
            origin_id: chat.origin_id.clone(),
            message_id: chat.id.clone(),
        };
        match self.store.insert(own.as_str(), record).await {
            Ok(Some(message)) => {
                let from = match (chat.way, &chat.resource) {
                    (Way::In, Some(resource)) => format!("{peer}/{resource}"),
                    (Way::In, None) => peer.clone(),
                    (Way::Out, _) => own.to_string(),
                };
                let via = match chat.via {
                    Via::Direct => "direct",
                    Via::Carbon => "carbon",
                    Via::Archive { .. } => "archive",
                };
                self.emit(XmppEvent::Message { message, from, via, delayed: chat.sent_at_ms.is_some() });
            }
            Ok(None) => debug!("a message we have already"),
            Err(e) => {
                // Not acknowledged: the sender's client (or our archive) still has it.
                warn!(error = %e, "cannot store an incoming message");
                return;
            }
        }
        // XEP-0184 section 5.4: a receipt only for a message that reached this client itself.
        if let (true, Way::In, Via::Direct, Some(id)) =
            (chat.receipt_requested, chat.way, &chat.via, &chat.id)
        {
            let to = roster::address(&chat.peer, chat.resource.as_deref());
            self.send(stanzas::receipt(to, id, chat.thread.as_deref()).into()).await;
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The work at the start of a session, before the outbox opens.
pub(super) struct CatchUp {
    pub session: u64,
    pub own: BareJid,
    pub store: StoreHandle,
    pub iq: IqClient,
    /// Search our archive from here (Unix ms) for messages we may have sent already.
    pub check_since_ms: Option<i64>,
}

impl CatchUp {
    pub(super) async fn run(self) {
        // XEP-0280: copies of what our other clients send and receive.
        if let Err(e) = self.iq.ask(Iq::from_set(new_id(), carbons::Enable)).await {
            debug!(error = %e, "carbons are not available");
        }
        if let Some(since) = self.check_since_ms {
            self.walk(Some(since), None).await;
        }
        match self.store.state(self.own.as_str(), ARCHIVE_LAST).await {
            Ok(Some(last)) => {
                if let Some(last) = self.walk(None, Some(last)).await
                    && let Err(e) = self.store.set_state(self.own.as_str(), ARCHIVE_LAST, last).await
                {
                    warn!(error = %e, "cannot record the archive position");
                }
            }
            Ok(None) => {
                // No id yet: from when the archive was found empty, or else learn where it
                // ends now (its last message), so that the next catch-up starts there.
                let empty_since =
                    self.store.state(self.own.as_str(), ARCHIVE_EMPTY_SINCE).await.ok().flatten();
                let last = match empty_since.and_then(|t| t.parse::<i64>().ok()) {
                    Some(since) => self.walk(Some(since - ARCHIVE_SLACK_MS), None).await,
                    None => {
                        let set =
                            SetQuery { max: Some(1), after: None, before: Some(String::new()), index: None };
                        let started = now_ms();
                        let fin = self.page(archive_query(None, set)).await;
                        if fin.as_ref().is_some_and(|f| f.set.last.is_none()) {
                            let _ = self
                                .store
                                .set_state(self.own.as_str(), ARCHIVE_EMPTY_SINCE, started.to_string())
                                .await;
                        }
                        fin.and_then(|fin| fin.set.last)
                    }
                };
                if let Some(last) = last
                    && let Err(e) = self.store.set_state(self.own.as_str(), ARCHIVE_LAST, last).await
                {
                    warn!(error = %e, "cannot record the archive position");
                }
            }
            Err(e) => warn!(error = %e, "cannot read the archive position"),
        }
    }

    /// Pages through our archive from `start_ms` or after the id `after`. The results arrive
    /// as messages, which the actor takes in before the answer that ends each page. Returns
    /// the last id seen.
    async fn walk(&self, start_ms: Option<i64>, mut after: Option<String>) -> Option<String> {
        let mut last = None;
        for _ in 0..ARCHIVE_PAGES {
            let set = SetQuery { max: Some(ARCHIVE_PAGE), after: after.clone(), before: None, index: None };
            let Some(fin) = self.page(archive_query(start_ms, set)).await else { break };
            let Some(id) = fin.set.last else { break };
            last = Some(id.clone());
            after = Some(id);
            if fin.complete {
                break;
            }
        }
        last
    }

    async fn page(&self, query: mam::Query) -> Option<mam::Fin> {
        match self.iq.ask(Iq::from_set(new_id(), query)).await {
            Ok(Some(payload)) => {
                mam::Fin::try_from(payload).map_err(|_| warn!("a malformed archive answer")).ok()
            }
            Ok(None) => None,
            Err(e) => {
                debug!(error = %e, "the archive cannot be searched");
                None
            }
        }
    }
}

fn archive_query(start_ms: Option<i64>, set: SetQuery) -> mam::Query {
    let form = start_ms.and_then(chrono::DateTime::from_timestamp_millis).map(|start| {
        let start = start.to_rfc3339_opts(SecondsFormat::Millis, true);
        DataForm::new(DataFormType::Submit, xmpp_parsers::ns::MAM, vec![Field::text_single("start", &start)])
    });
    mam::Query { queryid: Some(mam::QueryId(new_id())), node: None, form, set: Some(set), flip_page: false }
}
