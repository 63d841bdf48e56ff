//! The XMPP actor: keeps the account's stream up, tells the truth about it, and carries
//! presence, the roster and one-to-one chat.
//!
//! tokio-xmpp's `StanzaStream` carries the stream once it is open (resource binding, XEP-0198
//! stream management with resumption, the liveness probe) and asks for a new connection
//! whenever one breaks. The connection itself is ours ([`connect`]): each request starts a
//! task that reports `connecting`, tries once, and on a transient failure reports `offline`
//! with the reason and tries again after a jittered backoff (2 s doubling up to 5 min, the
//! same as SIP). A refused password or an untrusted certificate is reported `failed` and not
//! retried until the config changes. `online` comes when the stream is bound. Its TCP
//! stream ([`quick_ack`]) acknowledges each read at once, so that a server with Nagle's
//! algorithm on does not hold our next stanza for a delayed ACK.
//!
//! On top of the stream:
//! - [`chat`]: the outbox (messages the hub stored, sent in order once online, marked sent on
//!   the server's ack, delivered on a receipt), incoming messages into the store, and the
//!   catch-up after a new session (carbons on, our archive searched for what we may have
//!   sent already and for what we missed).
//! - [`roster`]: the roster and its pushes, contacts' presence per resource with their caps
//!   (resolved by disco#info and checked against the hash), subscription requests, our own
//!   presence, and the disco#info answer about ourselves.
//!
//! IQs we send are answered through [`Internal::Iq`]: a task that needs an answer hands the
//! actor its request with a oneshot; the actor sends it and routes the reply by id.

mod chat;
mod connect;
mod quick_ack;
mod roster;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cusax_protocol::sip::registration::{backoff, random_hex};
use cusax_protocol::xmpp::cusax::MessageCusax;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_xmpp::stanzastream::{Connection, Event, StanzaStream, StreamEvent};
use tracing::{Instrument, debug, info, info_span, warn};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::presence::Presence;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::StanzaError;

use crate::config::XmppAccount;
use crate::hub::{HubEvent, XmppState};
use crate::sip::OsEntropy;
use crate::store::{Status, StoreHandle, StoredMessage};

pub use chat::now_ms;
pub use roster::{OwnPresence, ResourcePresence, RosterEntry, SipPresence, SubscriptionAction};

/// Stanzas queued each way before the sender waits.
const QUEUE_DEPTH: usize = 64;
/// How long a clean stop waits for our unavailable presence to go out.
const GOODBYE_GRACE: Duration = Duration::from_millis(500);
/// One connection attempt (DNS, TCP, TLS, SASL) gives up after this.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// A session that ends sooner than this after it began counts as a failed attempt, so that a
/// server that drops us right after login is not hammered.
const SHORT_SESSION: Duration = Duration::from_secs(30);
/// An IQ we sent that has no answer after this is given up.
const IQ_TIMEOUT: Duration = Duration::from_secs(30);
/// A catch-up that could not search the archive is tried again after this.
const CATCH_UP_RETRY: Duration = Duration::from_secs(10);
/// Handing a stanza to tokio-xmpp's queue waits at most this long (a full queue while the
/// link is down must not stall the actor).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Who waits for the answer to an IQ we sent.
enum Waiting {
    Task(oneshot::Sender<IqAnswer>),
    /// Our roster request: its answer goes to the hub in order with the pushes.
    Roster,
}

#[derive(Debug)]
pub enum XmppCommand {
    /// Use this account and private CA from now on (`None`: no XMPP account).
    Configure {
        account: Option<Box<XmppAccount>>,
        extra_ca: Option<PathBuf>,
    },
    /// A message the hub has stored (status queued): send it, in order with the others.
    Send {
        message: StoredMessage,
        resource: Option<String>,
        /// CUSAX elements for this message only.
        extras: Vec<Element>,
    },
    /// Tell the peer our chat state (dropped when offline: it is not worth keeping).
    ChatState {
        peer: BareJid,
        resource: Option<String>,
        thread: String,
        state: xmpp_parsers::chatstates::ChatState,
    },
    /// Our presence from now on.
    Presence(OwnPresence),
    Subscription {
        jid: BareJid,
        action: SubscriptionAction,
    },
    /// Our SIP address of record (none without a SIP account): our vCard carries it.
    SipAddress(Option<String>),
    /// What our presence says about SIP from now on (none: not registered).
    SipPresence(Option<SipPresence>),
    /// Read a contact's vCards (XEP-0054 and XEP-0292); the answer comes as `XmppEvent::VCard`.
    FetchVCard {
        jid: BareJid,
    },
    /// Say goodbye (unavailable presence) and stop.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// What the XMPP actor reports to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmppEvent {
    State {
        state: XmppState,
        reason: String,
    },
    /// A session began that kept nothing of the last one: contacts' presence comes anew.
    /// `jid`: our full JID in it.
    NewSession {
        jid: String,
    },
    /// A message we did not have before, either way (ours from another client too).
    /// `delayed`: it carried a XEP-0203 delay (sent while we were away).
    Message {
        message: StoredMessage,
        from: String,
        via: &'static str,
        delayed: bool,
        cusax: MessageCusax,
    },
    MessageStatus {
        peer: String,
        uid: String,
        status: Status,
    },
    ChatState {
        peer: String,
        resource: Option<String>,
        state: &'static str,
    },
    /// The whole roster, as the server sent it at login.
    Roster {
        items: Vec<RosterEntry>,
    },
    /// One roster item changed (or was removed).
    RosterPush {
        item: RosterEntry,
    },
    /// A contact's resource came, changed or (`None`) went.
    Presence {
        jid: String,
        resource: String,
        presence: Option<ResourcePresence>,
    },
    /// What a contact's resource can do (its verified disco#info features).
    Capabilities {
        jid: String,
        resource: String,
        features: Arc<[String]>,
    },
    /// The telephone entries of a contact's vCard (fetched, or pushed over PEP).
    VCard {
        jid: String,
        tels: Vec<cusax_protocol::xmpp::vcard::Tel>,
    },
    SubscriptionRequest {
        jid: String,
    },
    /// A contact's `<reach>` over PEP (per account, XEP-0152 4.2): its addresses, or none.
    PepReach {
        jid: String,
        addresses: Vec<String>,
    },
    /// A contact's XEP-0108 activity says (or no longer says) "on the phone".
    Activity {
        jid: String,
        on_the_phone: bool,
    },
}

#[derive(Debug, Clone)]
pub struct XmppHandle {
    commands: mpsc::Sender<XmppCommand>,
}

impl XmppHandle {
    pub async fn configure(&self, account: Option<XmppAccount>, extra_ca: Option<PathBuf>) {
        let _ = self.commands.send(XmppCommand::Configure { account: account.map(Box::new), extra_ca }).await;
    }

    pub async fn command(&self, command: XmppCommand) {
        let _ = self.commands.send(command).await;
    }

    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(XmppCommand::Shutdown { done }).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// Requests from the actor's own tasks.
enum Internal {
    /// Send this IQ and hand its answer (result payload or error) back.
    Iq { iq: Box<Iq>, reply: oneshot::Sender<IqAnswer> },
    /// What our server supports for our account, learnt at the start of session `session`.
    AccountFeatures { session: u64, features: chat::AccountFeatures },
    /// The catch-up of session `session` is over: the outbox may go; or it failed and is
    /// tried again after [`CATCH_UP_RETRY`].
    CaughtUp { session: u64, failed: Option<String> },
    /// Time to try the catch-up of session `session` again.
    RetryCatchUp { session: u64 },
    /// A caps hash was resolved (`None`: the answer did not match it, or none came).
    CapsResolved { ver: Vec<u8>, features: Option<Arc<[String]>> },
}

/// The answer to an IQ we sent: its result payload, or why there is none.
type IqAnswer = Result<Option<Element>, IqFailure>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum IqFailure {
    #[error("{}", .0.texts.values().next().cloned().unwrap_or_else(|| format!("{:?}", .0.defined_condition)))]
    Error(Box<StanzaError>),
    #[error("no answer (the session ended or timed out)")]
    NoAnswer,
}

/// A way for tasks to ask IQs through the actor.
#[derive(Clone)]
struct IqClient {
    internal: mpsc::UnboundedSender<Internal>,
}

impl IqClient {
    async fn ask(&self, iq: Iq) -> IqAnswer {
        let (reply, answer) = oneshot::channel();
        self.internal.send(Internal::Iq { iq: Box::new(iq), reply }).map_err(|_| IqFailure::NoAnswer)?;
        match tokio::time::timeout(IQ_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            _ => Err(IqFailure::NoAnswer),
        }
    }
}

/// A fresh id for a stanza of ours.
fn new_id() -> String {
    random_hex(&mut OsEntropy, 12)
}

/// Starts the XMPP actor; it reports to the hub through `events` and keeps messages in
/// `store`.
pub fn spawn(events: mpsc::UnboundedSender<HubEvent>, store: StoreHandle) -> XmppHandle {
    let (commands_tx, commands) = mpsc::channel(64);
    let (internal_tx, internal) = mpsc::unbounded_channel();
    let actor = XmppActor {
        events,
        store,
        internal: internal_tx,
        account: None,
        stream: None,
        cancel: None,
        online: false,
        session: 0,
        caught_up: false,
        sip_address: None,
        sip_presence: None,
        presence_sent: false,
        activity_published: None,
        checking: Vec::new(),
        archive_start: None,
        server_ids: false,
        sm: false,
        iqs: HashMap::new(),
        outbox: chat::Outbox::default(),
        acks: FuturesUnordered::new(),
        presence: OwnPresence::default(),
        caps: roster::CapsCache::default(),
    };
    tokio::spawn(actor.run(commands, internal).instrument(info_span!("xmpp")));
    XmppHandle { commands: commands_tx }
}

struct XmppActor {
    events: mpsc::UnboundedSender<HubEvent>,
    store: StoreHandle,
    internal: mpsc::UnboundedSender<Internal>,
    /// Our bare JID, with an account.
    account: Option<BareJid>,
    stream: Option<StanzaStream>,
    /// Dropped with the stream: its connection attempts stop and report nothing more.
    cancel: Option<watch::Sender<()>>,
    online: bool,
    /// Counts sessions (stream resets), so that a late report of an old one is ignored.
    session: u64,
    /// This session's catch-up is over: the outbox goes straight out.
    caught_up: bool,
    /// Our SIP address of record, for our vCard.
    sip_address: Option<String>,
    /// What our presence says about SIP.
    sip_presence: Option<SipPresence>,
    /// The XEP-0108 "on the phone" we published in this session, if any yet.
    activity_published: Option<bool>,
    /// The possibly-sent messages the running catch-up looks for in the archive.
    checking: Vec<String>,
    /// This session's initial presence is out.
    presence_sent: bool,
    /// Where our archive ended when this session began.
    archive_start: Option<String>,
    /// Our server stamps XEP-0359 stanza-ids (so ids by us are its).
    server_ids: bool,
    /// The server acks our stanzas (XEP-0198 is on).
    sm: bool,
    /// IQs we sent, by id: whom we asked, and who waits for the answer.
    iqs: HashMap<String, (Option<Jid>, Waiting)>,
    outbox: chat::Outbox,
    acks: FuturesUnordered<chat::AckWait>,
    presence: OwnPresence,
    caps: roster::CapsCache,
}

impl XmppActor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<XmppCommand>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(XmppCommand::Shutdown { done }) => {
                        self.goodbye().await;
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.on_command(command).await,
                },
                event = next_event(&mut self.stream) => match event {
                    Some(event) => self.on_event(event).await,
                    None => {
                        // The worker ended, which it does only when it cannot go on.
                        warn!("the XMPP stream ended");
                        self.stream = None;
                        self.cancel = None;
                        self.online = false;
                        self.report(XmppState::Failed, "the XMPP stream ended unexpectedly");
                    }
                },
                Some(request) = internal.recv() => self.on_internal(request).await,
                Some(ack) = self.acks.next(), if !self.acks.is_empty() => self.on_ack(ack).await,
            }
        }
    }

    async fn on_command(&mut self, command: XmppCommand) {
        match command {
            XmppCommand::Configure { account, extra_ca } => {
                self.goodbye().await;
                self.iqs.clear();
                match account {
                    None => {
                        self.account = None;
                        self.outbox = chat::Outbox::default();
                        self.report(XmppState::Unconfigured, "");
                    }
                    Some(account) => {
                        let own = account.jid.bare().clone();
                        self.outbox = chat::Outbox::load(&self.store, &own).await;
                        self.account = Some(own);
                        let (cancel, cancelled) = watch::channel(());
                        self.stream = Some(open(*account, extra_ca, self.events.clone(), cancelled));
                        self.cancel = Some(cancel);
                    }
                }
            }
            XmppCommand::Send { message, resource, extras } => {
                self.queue_message(message, resource, extras).await
            }
            XmppCommand::ChatState { peer, resource, thread, state } => {
                if self.online {
                    let to = roster::address(&peer, resource.as_deref());
                    self.send(cusax_protocol::xmpp::chat::chat_state(to, state, &thread).into()).await;
                }
            }
            XmppCommand::Presence(presence) => {
                self.presence = presence;
                if self.online {
                    self.send(self.presence.stanza(self.sip_presence.as_ref()).into()).await;
                }
            }
            XmppCommand::Subscription { jid, action } => {
                // The hub refuses these while we are not online.
                self.send(action.stanza(jid).into()).await;
            }
            XmppCommand::SipAddress(aor) => {
                let changed = self.sip_address != aor;
                self.sip_address = aor;
                if changed && self.caught_up {
                    self.publish_own_vcard();
                }
            }
            XmppCommand::FetchVCard { jid } => self.fetch_vcard(jid),
            XmppCommand::SipPresence(sip) => {
                self.sip_presence = sip;
                if self.online && self.presence_sent {
                    self.send(self.presence.stanza(self.sip_presence.as_ref()).into()).await;
                }
                self.publish_activity();
            }
            XmppCommand::Shutdown { .. } => {}
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Stream(StreamEvent::Reset { bound_jid, features }) => {
                info!(jid = %bound_jid, "online");
                // What the old session's end decided about our messages, first.
                self.settle_finished_acks().await;
                self.online = true;
                self.session += 1;
                self.caught_up = false;
                self.presence_sent = false;
                self.activity_published = None;
                self.server_ids = false;
                self.sm = features.stream_management.is_some();
                // Answers to the old session's IQs will not come.
                self.iqs.clear();
                self.emit(XmppEvent::NewSession { jid: bound_jid.to_string() });
                self.start_session().await;
                self.report(XmppState::Online, "");
            }
            Event::Stream(StreamEvent::Resumed) => {
                info!("stream resumed");
                self.online = true;
                self.report(XmppState::Online, "");
                // What changed while suspended (a call, the SIP registration, our show) was
                // not sent: say it now.
                if self.presence_sent {
                    self.send(self.presence.stanza(self.sip_presence.as_ref()).into()).await;
                }
                if self.caught_up {
                    self.flush_outbox().await;
                }
            }
            Event::Stream(StreamEvent::Suspended) => {
                // The reconnect task says what happens next (connecting, offline ...).
                self.online = false;
                debug!("stream suspended");
            }
            Event::Stanza(Stanza::Iq(iq)) => self.on_iq(iq).await,
            Event::Stanza(Stanza::Message(message)) => self.on_message(message).await,
            Event::Stanza(Stanza::Presence(presence)) => self.on_presence(presence),
        }
    }

    /// A new session (no state kept from the last one): the roster first (RFC 6121 section
    /// 2.1.3) and what the server supports for us, then our presence (which brings offline
    /// messages), and the catch-up, which opens the outbox when done.
    async fn start_session(&mut self) {
        let Some(own) = self.account.clone() else { return };
        self.archive_start = self.store.state(own.as_str(), chat::ARCHIVE_LAST).await.unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the archive position");
            None
        });
        self.request_roster().await;
        self.start_catch_up();
    }

    /// Runs the catch-up of this session in a task of its own.
    fn start_catch_up(&mut self) {
        let Some(own) = self.account.clone() else { return };
        let session = self.session;
        let task = chat::CatchUp {
            own,
            store: self.store.clone(),
            iq: IqClient { internal: self.internal.clone() },
            start_after: self.archive_start.clone(),
            check_since_ms: self.outbox.check_since_ms(),
        };
        self.checking = self.outbox.to_check();
        let internal = self.internal.clone();
        tokio::spawn(
            async move {
                let told = internal.clone();
                let result = task
                    .run(move |features| {
                        let _ = told.send(Internal::AccountFeatures { session, features });
                    })
                    .await;
                let failed = result.err().map(|e| e.to_string());
                let _ = internal.send(Internal::CaughtUp { session, failed });
            }
            .in_current_span(),
        );
    }

    async fn on_internal(&mut self, request: Internal) {
        match request {
            Internal::Iq { iq, reply } => {
                if !self.online {
                    let _ = reply.send(Err(IqFailure::NoAnswer));
                    return;
                }
                // Whoever gave up waiting (timed out) leaves no entry behind.
                self.iqs
                    .retain(|_, (_, waiting)| !matches!(waiting, Waiting::Task(reply) if reply.is_closed()));
                self.iqs.insert(iq.id().to_owned(), (iq.to().cloned(), Waiting::Task(reply)));
                self.send((*iq).into()).await;
            }
            Internal::AccountFeatures { session, features } if session == self.session => {
                self.server_ids = features.stanza_ids;
                if !std::mem::replace(&mut self.presence_sent, true) {
                    self.send(self.presence.stanza(self.sip_presence.as_ref()).into()).await;
                }
            }
            Internal::CaughtUp { session, failed: None } if session == self.session => {
                debug!("caught up");
                self.caught_up = true;
                let checked = std::mem::take(&mut self.checking);
                self.outbox.archive_checked(&checked);
                self.publish_own_vcard();
                self.publish_activity();
                self.flush_outbox().await;
            }
            Internal::CaughtUp { session, failed: Some(why) } if session == self.session => {
                warn!(%why, retry_in = ?CATCH_UP_RETRY, "catching up failed; the outbox waits");
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CATCH_UP_RETRY).await;
                    let _ = internal.send(Internal::RetryCatchUp { session });
                });
            }
            Internal::RetryCatchUp { session } if session == self.session && !self.caught_up => {
                if self.online {
                    self.start_catch_up();
                } else {
                    // Suspended: try again when the stream is back (resumed or not).
                    let _ =
                        self.internal.send(Internal::CaughtUp { session, failed: Some("offline".into()) });
                }
            }
            Internal::AccountFeatures { .. } | Internal::CaughtUp { .. } | Internal::RetryCatchUp { .. } => {}
            Internal::CapsResolved { ver, features } => self.on_caps_resolved(ver, features),
        }
    }

    /// RFC 6120 section 8.2.3: every get or set gets a result or an error. Results and errors
    /// go to whoever waits for them.
    async fn on_iq(&mut self, iq: Iq) {
        let own_server = |from: &Option<Jid>, own: Option<&BareJid>| {
            from.as_ref().is_none_or(|f| own.is_some_and(|o| f.to_bare() == *o && f.resource().is_none()))
        };
        let get = matches!(iq, Iq::Get { .. });
        match iq {
            Iq::Result { id, payload, from, .. } => match self.take_waiting(&id, &from) {
                Some(Waiting::Task(waiting)) => {
                    let _ = waiting.send(Ok(payload));
                }
                Some(Waiting::Roster) => self.on_roster(payload),
                None => {}
            },
            Iq::Error { id, error, from, .. } => match self.take_waiting(&id, &from) {
                Some(Waiting::Task(waiting)) => {
                    let _ = waiting.send(Err(IqFailure::Error(Box::new(error))));
                }
                Some(Waiting::Roster) => {
                    warn!(condition = ?error.defined_condition, "the server refused our roster request")
                }
                None => {}
            },
            Iq::Set { from, id, payload, .. }
                if payload.is("query", xmpp_parsers::ns::ROSTER)
                    && own_server(&from, self.account.as_ref()) =>
            {
                self.on_roster_push(payload);
                self.send(Iq::Result { from: None, to: None, id, payload: None }.into()).await;
            }
            Iq::Get { from, id, payload, .. } | Iq::Set { from, id, payload, .. } => {
                let reply = roster::answer(id, payload, get);
                let reply = match from {
                    Some(to) => reply.with_to(to),
                    None => reply,
                };
                self.send(reply.into()).await;
            }
        }
    }

    /// The waiter for our IQ `id`, if `from` is who we asked (RFC 6120 section 8.1.2.1: an
    /// answer from anyone else is not the answer; no `from` is our own server or account).
    fn take_waiting(&mut self, id: &str, from: &Option<Jid>) -> Option<Waiting> {
        let (asked, _) = self.iqs.get(id)?;
        let own = self.account.as_ref();
        let is_own = |j: &Jid| own.is_some_and(|o| j.to_bare() == *o && j.resource().is_none());
        let is_own_server = |j: &Jid| own.is_some_and(|o| j.node().is_none() && j.domain() == o.domain());
        let expected = match (asked, from) {
            (None, None) => true,
            (None, Some(from)) => is_own(from) || is_own_server(from),
            (Some(asked), None) => is_own(asked),
            (Some(asked), Some(from)) => asked == from,
        };
        if !expected {
            warn!(from = ?from, "an IQ answer from someone we did not ask: ignored");
            return None;
        }
        self.iqs.remove(id).map(|(_, waiting)| waiting)
    }

    async fn send(&self, stanza: Stanza) -> Option<tokio_xmpp::stanzastream::StanzaToken> {
        let stream = self.stream.as_ref()?;
        match tokio::time::timeout(SEND_TIMEOUT, stream.send(Box::new(stanza))).await {
            Ok(token) => Some(token),
            Err(_) => {
                warn!("the stream takes no more stanzas: one dropped");
                None
            }
        }
    }

    fn report(&self, state: XmppState, reason: &str) {
        report(&self.events, state, reason);
    }

    fn emit(&self, event: XmppEvent) {
        let _ = self.events.send(HubEvent::Xmpp(event));
    }

    /// Leaves the network politely when online (unavailable presence, a closed stream), then
    /// forgets the stream either way.
    async fn goodbye(&mut self) {
        self.cancel = None;
        self.acks = FuturesUnordered::new();
        let Some(stream) = self.stream.take() else { return };
        if std::mem::take(&mut self.online) {
            let unavailable = Presence::new(xmpp_parsers::presence::Type::Unavailable);
            // Both steps wait on the worker; a worker waiting on a connection never answers,
            // and then dropping the stream is the only way out.
            let leave = async {
                let _ = stream.send(Box::new(unavailable.into())).await;
                stream.close().await;
            };
            let _ = tokio::time::timeout(GOODBYE_GRACE, leave).await;
        }
    }
}

async fn next_event(stream: &mut Option<StanzaStream>) -> Option<Event> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

fn report(events: &mpsc::UnboundedSender<HubEvent>, state: XmppState, reason: &str) {
    let _ = events.send(HubEvent::Xmpp(XmppEvent::State { state, reason: reason.to_owned() }));
}

/// A stream for `account` whose connections come from [`connect`], as described above.
/// When `cancelled` fires (the actor dropped its sender with the stream), attempts stop.
fn open(
    account: XmppAccount,
    extra_ca: Option<PathBuf>,
    events: mpsc::UnboundedSender<HubEvent>,
    cancelled: watch::Receiver<()>,
) -> StanzaStream {
    info!(jid = %account.jid, "connecting");
    let account = Arc::new(account);
    let start = Instant::now();
    // When the last session began, in ms since `start` (MAX: none yet).
    let began = Arc::new(AtomicU64::new(u64::MAX));
    let mut short_sessions = 0;
    let connector = move |_previous: Option<String>, slot: oneshot::Sender<Connection>| {
        let (account, extra_ca, events) = (account.clone(), extra_ca.clone(), events.clone());
        let mut cancelled = cancelled.clone();
        let since = began.load(Ordering::Relaxed);
        let lasted = start.elapsed().saturating_sub(Duration::from_millis(since));
        short_sessions = if since != u64::MAX && lasted < SHORT_SESSION { short_sessions + 1 } else { 0 };
        let (began, failures) = (began.clone(), short_sessions);
        tokio::spawn(
            async move {
                let connection = tokio::select! {
                    // Reconfigured or stopped: stop trying and say nothing more. The slot is
                    // kept: the orphaned worker would panic if it were dropped.
                    _ = cancelled.changed() => std::future::pending().await,
                    connection = connect_with_backoff(&account, extra_ca, &events, failures) => connection,
                };
                began.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                let _ = slot.send(connection);
            }
            .in_current_span(),
        );
    };
    StanzaStream::new(Box::new(connector), QUEUE_DEPTH)
}

/// Tries until a connection opens. A failure for good is reported `failed` and then waits
/// for ever (until cancelled). `failures` counts sessions that ended right after they began:
/// the first attempt after one waits its backoff too.
async fn connect_with_backoff(
    account: &XmppAccount,
    extra_ca: Option<PathBuf>,
    events: &mpsc::UnboundedSender<HubEvent>,
    mut failures: u32,
) -> Connection {
    if failures > 0 {
        let wait = backoff(failures - 1, &mut OsEntropy);
        warn!(retry_in = ?wait, "the session ended right after it began");
        report(events, XmppState::Offline, "the server ended the session right after login");
        tokio::time::sleep(wait).await;
    }
    loop {
        report(events, XmppState::Connecting, "");
        let attempt = match crate::tls::client_config(extra_ca.clone()).await {
            Ok(tls) => tokio::time::timeout(ATTEMPT_TIMEOUT, connect::connect(account, tls))
                .await
                .unwrap_or_else(|_| Err(connect::ConnectError::Network("no answer within 30 s".into()))),
            Err(e) => Err(connect::ConnectError::Config(e)),
        };
        match attempt {
            Ok(connection) => return connection,
            Err(e) if e.is_fatal() => {
                warn!(error = %e, "cannot log in; not retrying until the config changes");
                report(events, XmppState::Failed, &e.to_string());
                return std::future::pending().await;
            }
            Err(e) => {
                let wait = backoff(failures, &mut OsEntropy);
                failures += 1;
                warn!(error = %e, retry_in = ?wait, "cannot connect");
                report(events, XmppState::Offline, &e.to_string());
                tokio::time::sleep(wait).await;
            }
        }
    }
}
