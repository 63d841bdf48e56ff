//! The XMPP actor: keeps the account's stream up and tells the truth about it.
//!
//! tokio-xmpp's `StanzaStream` carries the stream once it is open (resource binding, XEP-0198
//! stream management with resumption, the liveness probe) and asks for a new connection
//! whenever one breaks. The connection itself is ours ([`connect`]): each request starts a
//! task that reports `connecting`, tries once, and on a transient failure reports `offline`
//! with the reason and tries again after a jittered backoff (2 s doubling up to 5 min, the
//! same as SIP). A refused password or an untrusted certificate is reported `failed` and not
//! retried until the config changes. `online` comes when the stream is bound.
//!
//! Presence, roster and chat build on this actor in the issues that follow; today it sends
//! its initial presence and answers what RFC 6120 obliges it to answer (IQs).

mod connect;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cusax_protocol::sip::registration::backoff;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_xmpp::stanzastream::{Connection, Event, StanzaStream, StreamEvent};
use tracing::{Instrument, debug, info, info_span, warn};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::ns;
use xmpp_parsers::presence::Presence;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::config::XmppAccount;
use crate::hub::{HubEvent, XmppState};
use crate::sip::OsEntropy;

/// Stanzas queued each way before the sender waits.
const QUEUE_DEPTH: usize = 64;
/// How long a clean stop waits for our unavailable presence to go out.
const GOODBYE_GRACE: Duration = Duration::from_millis(500);
/// One connection attempt (DNS, TCP, TLS, SASL) gives up after this.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// A session that ends sooner than this after it began counts as a failed attempt, so that a
/// server that drops us right after login is not hammered.
const SHORT_SESSION: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum XmppCommand {
    /// Use this account and private CA from now on (`None`: no XMPP account).
    Configure { account: Option<Box<XmppAccount>>, extra_ca: Option<PathBuf> },
    /// Say goodbye (unavailable presence) and stop.
    Shutdown { done: oneshot::Sender<()> },
}

#[derive(Debug, Clone)]
pub struct XmppHandle {
    commands: mpsc::Sender<XmppCommand>,
}

impl XmppHandle {
    pub async fn configure(&self, account: Option<XmppAccount>, extra_ca: Option<PathBuf>) {
        let _ = self.commands.send(XmppCommand::Configure { account: account.map(Box::new), extra_ca }).await;
    }

    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(XmppCommand::Shutdown { done }).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// Starts the XMPP actor; it reports to the hub through `events`.
pub fn spawn(events: mpsc::UnboundedSender<HubEvent>) -> XmppHandle {
    let (commands_tx, commands) = mpsc::channel(16);
    let actor = XmppActor { events, stream: None, cancel: None, online: false };
    tokio::spawn(actor.run(commands).instrument(info_span!("xmpp")));
    XmppHandle { commands: commands_tx }
}

struct XmppActor {
    events: mpsc::UnboundedSender<HubEvent>,
    stream: Option<StanzaStream>,
    /// Dropped with the stream: its connection attempts stop and report nothing more.
    cancel: Option<watch::Sender<()>>,
    online: bool,
}

impl XmppActor {
    async fn run(mut self, mut commands: mpsc::Receiver<XmppCommand>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(XmppCommand::Configure { account, extra_ca }) => {
                        self.goodbye().await;
                        match account {
                            None => report(&self.events, XmppState::Unconfigured, ""),
                            Some(account) => {
                                let (cancel, cancelled) = watch::channel(());
                                self.stream = Some(open(*account, extra_ca, self.events.clone(), cancelled));
                                self.cancel = Some(cancel);
                            }
                        }
                    }
                    Some(XmppCommand::Shutdown { done }) => {
                        self.goodbye().await;
                        let _ = done.send(());
                        break;
                    }
                },
                event = next_event(&mut self.stream) => match event {
                    Some(event) => self.on_event(event).await,
                    None => {
                        // The worker ended, which it does only when it cannot go on.
                        warn!("the XMPP stream ended");
                        self.stream = None;
                        self.cancel = None;
                        self.online = false;
                        report(&self.events, XmppState::Failed, "the XMPP stream ended unexpectedly");
                    }
                },
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Stream(StreamEvent::Reset { bound_jid, .. }) => {
                info!(jid = %bound_jid, "online");
                self.online = true;
                self.send(Presence::available().into()).await;
                report(&self.events, XmppState::Online, "");
            }
            Event::Stream(StreamEvent::Resumed) => {
                info!("stream resumed");
                self.online = true;
                report(&self.events, XmppState::Online, "");
            }
            Event::Stream(StreamEvent::Suspended) => {
                // The reconnect task says what happens next (connecting, offline ...).
                self.online = false;
                debug!("stream suspended");
            }
            Event::Stanza(Stanza::Iq(iq)) => self.on_iq(iq).await,
            Event::Stanza(_) => {}
        }
    }

    /// RFC 6120 section 8.2.3: every get or set gets a result or an error. We answer pings
    /// (XEP-0199, a get); the rest is not implemented yet. No `from` is our own server or
    /// account (section 8.1.2.1): then the reply has no `to`.
    async fn on_iq(&mut self, iq: Iq) {
        let (from, reply) = match iq {
            Iq::Get { from, id, payload, .. } if payload.is("ping", ns::PING) => {
                (from, Iq::Result { from: None, to: None, id, payload: None })
            }
            Iq::Get { from, id, .. } | Iq::Set { from, id, .. } => {
                let error = StanzaError::new(
                    ErrorType::Cancel,
                    DefinedCondition::ServiceUnavailable,
                    "en",
                    "not implemented by cusaxd",
                );
                (from, Iq::from_error(id, error))
            }
            Iq::Result { .. } | Iq::Error { .. } => return,
        };
        let reply = match from {
            Some(to) => reply.with_to(to),
            None => reply,
        };
        self.send(reply.into()).await;
    }

    async fn send(&self, stanza: Stanza) {
        if let Some(stream) = &self.stream {
            let _ = stream.send(Box::new(stanza)).await;
        }
    }

    /// Leaves the network politely when online (unavailable presence, a closed stream), then
    /// forgets the stream either way.
    async fn goodbye(&mut self) {
        self.cancel = None;
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
    let _ = events.send(HubEvent::Xmpp { state, reason: reason.to_owned() });
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
