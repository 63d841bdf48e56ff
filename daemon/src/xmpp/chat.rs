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
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_xmpp::stanzastream::{StanzaStage, StanzaState, StanzaToken};
use tracing::{debug, info, warn};
use xmpp_parsers::carbons;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::disco::{DiscoInfoQuery, DiscoInfoResult};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::mam;
use xmpp_parsers::message::Message;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::rsm::SetQuery;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use super::{IqClient, IqFailure, XmppActor, XmppEvent, new_id, roster};
use crate::hub::HubEvent;
use crate::sip::OsEntropy;
use crate::store::{Direction, NewMessage, Status, StoreHandle, StoredMessage};

/// The account-state key of the last archive id we have seen.
pub(super) const ARCHIVE_LAST: &str = "mam-last";
/// The account-state key of when (Unix ms) we found the archive empty: no id to go on from.
const ARCHIVE_EMPTY_SINCE: &str = "mam-empty-since";
/// Archive pages: this many messages each, at most this many pages per walk.
const ARCHIVE_PAGE: usize = 100;
const ARCHIVE_PAGES: usize = 50;
/// How far before a possibly-sent message the archive is searched (clock skew between us and
/// the server).
const ARCHIVE_SLACK_MS: i64 = 120_000;

/// A message written but refused this many times (by the stream, not the server) is failed.
const MAX_WRITE_FAILURES: u8 = 3;

/// A message of the outbox.
#[derive(Debug)]
pub(super) struct Outgoing {
    message: StoredMessage,
    resource: Option<String>,
    /// CUSAX elements that go with it (sip-contact, reach, sip-correlation). Not stored:
    /// after a restart the calls and threads they name are gone too.
    extras: Vec<Element>,
    /// It may have reached the server before (an earlier session or process): look in the
    /// archive before sending it again.
    maybe_sent: bool,
    /// How often the stream failed to write it.
    write_failures: u8,
}

/// The outbox: `pending` has not gone to the stream; `in_flight` has, and waits for the
/// server's ack. One message at a time is handed to tokio-xmpp and written before the next
/// follows, so that a broken link leaves at most one message inside tokio-xmpp, not a
/// queue of them that would go out on the next session ahead of older ones.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pending: VecDeque<Outgoing>,
    in_flight: Vec<Outgoing>,
    /// A message is handed over and not yet written.
    writing: bool,
}

/// What became of a message handed to the stream.
pub(super) enum Fate {
    /// Written to the stream: now wait for the server's ack.
    Written(StanzaToken),
    /// Settled: acked (or written, without XEP-0198), or failed, or let go of by the stream
    /// (`None`: its session ended without saying).
    Settled(Option<StanzaState>),
}

/// Resolves when the next step of a sent message's fate is known.
pub(super) type AckWait = Pin<Box<dyn Future<Output = (String, Fate)> + Send + Sync>>;

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
            .map(|message| Outgoing {
                message,
                resource: None,
                extras: Vec::new(),
                maybe_sent: true,
                write_failures: 0,
            })
            .collect();
        Self { pending, in_flight: Vec::new(), writing: false }
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

    /// The possibly-sent messages an archive check started now covers.
    pub(super) fn to_check(&self) -> Vec<String> {
        self.pending.iter().filter(|o| o.maybe_sent).map(|o| o.message.uid.clone()).collect()
    }

    /// The archive check of `checked` is over: those it found are out of the queue already
    /// (marked sent); the others never reached the server and go out now.
    pub(super) fn archive_checked(&mut self, checked: &[String]) {
        for outgoing in self.pending.iter_mut().filter(|o| checked.contains(&o.message.uid)) {
            outgoing.maybe_sent = false;
        }
    }

    fn contains(&self, uid: &str) -> bool {
        self.pending.iter().chain(&self.in_flight).any(|o| o.message.uid == uid)
    }

    /// Puts a message back in the queue, in the order it was accepted.
    fn requeue(&mut self, outgoing: Outgoing) {
        let at = self.pending.iter().position(|o| o.message.at_ms > outgoing.message.at_ms);
        self.pending.insert(at.unwrap_or(self.pending.len()), outgoing);
    }

    /// Takes the message `uid` to `peer` out (it is known to be sent, or it bounced).
    fn remove(&mut self, peer: &str, uid: &str) -> bool {
        let before = self.pending.len() + self.in_flight.len();
        let other = |o: &Outgoing| o.message.uid != uid || o.message.peer != peer;
        self.pending.retain(other);
        self.in_flight.retain(other);
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
    /// A message the hub stored: at the back of the queue, which goes out in order once the
    /// session is ready. One the outbox has already (read from the store while the hub's
    /// command was on its way) is not taken twice.
    pub(super) async fn queue_message(
        &mut self,
        message: StoredMessage,
        resource: Option<String>,
        extras: Vec<Element>,
    ) {
        if self.outbox.contains(&message.uid) {
            return;
        }
        let outgoing = Outgoing { message, resource, extras, maybe_sent: false, write_failures: 0 };
        self.outbox.pending.push_back(outgoing);
        self.flush_outbox().await;
    }

    /// Hands the next queued message to the stream when the session is ready and nothing
    /// is being written. A possibly-sent message waits for an archive check instead.
    pub(super) async fn flush_outbox(&mut self) {
        if !self.online || !self.caught_up || self.outbox.writing {
            return;
        }
        if self.outbox.pending.iter().any(|o| o.maybe_sent) {
            // Came back from a session that ended without saying (after the catch-up):
            // look in the archive again before anything goes out.
            self.caught_up = false;
            self.start_catch_up();
            return;
        }
        let Some(outgoing) = self.outbox.pending.pop_front() else { return };
        self.send_message(outgoing).await;
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
        let mut stanza = stanzas::chat_message(
            roster::address(&peer, outgoing.resource.as_deref()),
            &m.uid,
            &m.body,
            &thread,
        );
        stanza.payloads.extend(outgoing.extras.iter().cloned());
        let Some(token) = self.send(stanza.into()).await else {
            self.outbox.pending.push_front(outgoing);
            return;
        };
        let (uid, mut waiting) = (m.uid.clone(), token);
        self.acks.push(Box::pin(async move {
            match waiting.wait_for(StanzaStage::Sent).await {
                Some(StanzaState::Sent {} | StanzaState::Acked {}) => (uid, Fate::Written(waiting)),
                other => (uid, Fate::Settled(other)),
            }
        }));
        self.outbox.writing = true;
        self.outbox.in_flight.push(outgoing);
    }

    pub(super) async fn on_ack(&mut self, (uid, fate): (String, Fate)) {
        let Some(own) = self.account.clone() else { return };
        let Some(at) = self.outbox.in_flight.iter().position(|o| o.message.uid == uid) else { return };
        match fate {
            // Without stream management "written" is the most we will ever learn.
            Fate::Written(mut token) if self.sm => {
                self.outbox.writing = false;
                self.acks.push(Box::pin(async move {
                    (uid, Fate::Settled(token.wait_for(StanzaStage::Acked).await))
                }));
                self.flush_outbox().await;
            }
            Fate::Written(_) | Fate::Settled(Some(StanzaState::Acked {})) => {
                let written = matches!(fate, Fate::Written(_));
                let outgoing = self.outbox.in_flight.remove(at);
                mark(&self.store, &self.events, &own, &outgoing.message.peer, &uid, Status::Sent).await;
                if written {
                    self.outbox.writing = false;
                    self.flush_outbox().await;
                }
            }
            Fate::Settled(Some(StanzaState::Failed { error })) => {
                // Not written: the stream broke under it, or it cannot be serialised.
                let mut outgoing = self.outbox.in_flight.remove(at);
                self.outbox.writing = false;
                outgoing.write_failures += 1;
                if outgoing.write_failures >= MAX_WRITE_FAILURES {
                    warn!(%error, "a message could not be written: failed");
                    mark(&self.store, &self.events, &own, &outgoing.message.peer, &uid, Status::Failed).await;
                } else {
                    self.outbox.requeue(outgoing);
                }
                self.flush_outbox().await;
            }
            Fate::Settled(_) => {
                // Written in a session that ended before the server acked it: it may have
                // arrived. The archive decides.
                let mut outgoing = self.outbox.in_flight.remove(at);
                outgoing.maybe_sent = true;
                outgoing.resource = None;
                self.outbox.writing = false;
                self.outbox.requeue(outgoing);
                self.flush_outbox().await;
            }
        }
    }

    /// Settles what the last session's end already decided, before a new session starts:
    /// messages it wrote and never had acked go back to the queue as possibly sent.
    pub(super) async fn settle_finished_acks(&mut self) {
        while let Some(Some(ack)) = self.acks.next().now_or_never() {
            self.on_ack(ack).await;
        }
    }

    pub(super) async fn on_message(&mut self, message: Message) {
        let Some(own) = self.account.clone() else { return };
        match stanzas::read_message(message, &own, self.server_ids) {
            Err(e) => warn!(error = %e, "a message was refused"),
            Ok(Inbound::Other(message)) => self.on_other_message(&message),
            Ok(Inbound::Bounced { peer, id }) => {
                warn!(peer = %peer, "a message bounced");
                self.outbox.remove(peer.as_str(), &id);
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
                if self.outbox.remove(&peer, id) {
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
        let Some(body) = chat.body.clone() else { return };
        let record = NewMessage {
            message: StoredMessage {
                uid: uuid_v4(&mut OsEntropy),
                peer: peer.clone(),
                direction: if chat.way == Way::In { Direction::In } else { Direction::Out },
                thread: chat.thread.clone(),
                body,
                at_ms: chat.sent_at_ms.unwrap_or_else(now_ms),
                status: if chat.way == Way::In { Status::Received } else { Status::Sent },
            },
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
                    Via::Archive => "archive",
                };
                let delayed = chat.sent_at_ms.is_some();
                self.emit(XmppEvent::Message { message, from, via, delayed, cusax: chat.cusax.clone() });
            }
            Ok(None) => debug!("a message we have already"),
            Err(e) => {
                // No receipt and the archive position stays: the next catch-up fetches it.
                warn!(error = %e, "cannot store an incoming message");
                return;
            }
        }
        // Live messages move the archive position on once this session has caught up; until
        // then the catch-up's own walk does (a live id would skip what came before it).
        if let (Some(stanza_id), true, false) = (&chat.stanza_id, self.caught_up, chat.via == Via::Archive)
            && let Err(e) = self.store.set_state(own.as_str(), ARCHIVE_LAST, stanza_id.clone()).await
        {
            warn!(error = %e, "cannot record the archive position");
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
    pub own: BareJid,
    pub store: StoreHandle,
    pub iq: IqClient,
    /// Where our archive was last seen to end (read before our presence went out, so that
    /// offline messages cannot move it on first).
    pub start_after: Option<String>,
    /// Search our archive from here (Unix ms) for messages we may have sent already.
    pub check_since_ms: Option<i64>,
}

/// What our server says about our account (XEP-0030 on our bare JID).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AccountFeatures {
    /// XEP-0313: our messages are archived.
    pub archive: bool,
    /// XEP-0359: the server stamps stanza-ids (then ours can be trusted).
    pub stanza_ids: bool,
}

/// Why a catch-up did not finish; it is tried again.
#[derive(Debug, thiserror::Error)]
#[error("the archive could not be searched: {0}")]
pub(super) struct CatchUpFailed(IqFailure);

impl CatchUp {
    /// Asks what the account supports (`features` gets the answer as soon as it is known:
    /// our presence waits for it), turns carbons on, then searches the archive. `Ok` when
    /// every possibly-sent message has been looked for and everything missed fetched, or
    /// there is no archive to look in.
    pub(super) async fn run(self, features: impl FnOnce(AccountFeatures)) -> Result<(), CatchUpFailed> {
        let query = Iq::from_get(new_id(), DiscoInfoQuery { node: None }).with_to(self.own.clone().into());
        let answer = self.iq.ask(query).await;
        let known = match &answer {
            Ok(Some(payload)) => DiscoInfoResult::try_from(payload.clone()).map_or_else(
                |_| AccountFeatures::default(),
                |info| AccountFeatures {
                    archive: info.features.contains(xmpp_parsers::ns::MAM),
                    stanza_ids: info.features.contains(xmpp_parsers::ns::SID),
                },
            ),
            _ => AccountFeatures::default(),
        };
        features(known);
        answer.map_err(CatchUpFailed)?;
        // XEP-0280: copies of what our other clients send and receive.
        if let Err(e) = self.iq.ask(Iq::from_set(new_id(), carbons::Enable)).await {
            debug!(error = %e, "carbons are not available");
        }
        if !known.archive {
            // Nothing to look in: possibly-sent messages go again (at least once).
            return Ok(());
        }
        if let Some(since) = self.check_since_ms {
            self.walk(Some(since), None).await?;
        }
        let last = match self.start_after.clone() {
            Some(after) => match self.walk(None, Some(after)).await {
                // XEP-0313 section 5.1.2: an id the archive no longer has (it expired).
                Err(CatchUpFailed(IqFailure::Error(e)))
                    if e.defined_condition == DefinedCondition::ItemNotFound =>
                {
                    self.archive_end().await?
                }
                other => other?,
            },
            None => match self.store.state(self.own.as_str(), ARCHIVE_EMPTY_SINCE).await.ok().flatten() {
                Some(since) => {
                    self.walk(since.parse::<i64>().ok().map(|t| t - ARCHIVE_SLACK_MS), None).await?
                }
                None => self.archive_end().await?,
            },
        };
        if let Some(last) = last
            && let Err(e) = self.store.set_state(self.own.as_str(), ARCHIVE_LAST, last).await
        {
            warn!(error = %e, "cannot record the archive position");
        }
        Ok(())
    }

    /// Where the archive ends now (its last message), or, for an empty archive, the time we
    /// found it empty: the next catch-up starts there.
    async fn archive_end(&self) -> Result<Option<String>, CatchUpFailed> {
        let set = SetQuery { max: Some(1), after: None, before: Some(String::new()), index: None };
        let started = now_ms();
        let fin = self.page(archive_query(None, set)).await?;
        if fin.set.last.is_none() {
            let _ = self.store.set_state(self.own.as_str(), ARCHIVE_EMPTY_SINCE, started.to_string()).await;
        }
        Ok(fin.set.last)
    }

    /// Pages through our archive from `start_ms` or after the id `after`. The results arrive
    /// as messages, which the actor takes in before the answer that ends each page. Returns
    /// the last id seen.
    async fn walk(
        &self,
        start_ms: Option<i64>,
        mut after: Option<String>,
    ) -> Result<Option<String>, CatchUpFailed> {
        let mut last = None;
        for _ in 0..ARCHIVE_PAGES {
            let set = SetQuery { max: Some(ARCHIVE_PAGE), after: after.clone(), before: None, index: None };
            let fin = self.page(archive_query(start_ms, set)).await?;
            let Some(id) = fin.set.last else { break };
            last = Some(id.clone());
            after = Some(id);
            if fin.complete {
                break;
            }
        }
        Ok(last)
    }

    async fn page(&self, query: mam::Query) -> Result<mam::Fin, CatchUpFailed> {
        let payload = self.iq.ask(Iq::from_set(new_id(), query)).await.map_err(CatchUpFailed)?;
        let malformed = || {
            let error = StanzaError::new(
                ErrorType::Cancel,
                DefinedCondition::UndefinedCondition,
                "en",
                "a malformed archive answer",
            );
            CatchUpFailed(IqFailure::Error(Box::new(error)))
        };
        mam::Fin::try_from(payload.ok_or_else(malformed)?).map_err(|_| malformed())
    }
}

fn archive_query(start_ms: Option<i64>, set: SetQuery) -> mam::Query {
    let form = start_ms.and_then(chrono::DateTime::from_timestamp_millis).map(|start| {
        let start = start.to_rfc3339_opts(SecondsFormat::Millis, true);
        DataForm::new(DataFormType::Submit, xmpp_parsers::ns::MAM, vec![Field::text_single("start", &start)])
    });
    mam::Query { queryid: Some(mam::QueryId(new_id())), node: None, form, set: Some(set), flip_page: false }
}
