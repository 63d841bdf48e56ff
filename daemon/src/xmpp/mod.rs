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

use cusax_protocol::sip::registration::backoff;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::stanzastream::{Connection, Event, StanzaStream, StreamEvent};
use tracing::{Instrument, debug, info, info_span, warn};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::presence::Presence;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::config::XmppAccount;
use crate::hub::{HubEvent, XmppState};
use crate::sip::OsEntropy;

/// Stanzas queued each way before the sender waits.
const QUEUE_DEPTH: usize = 64;
/// How long a clean stop waits for our unavailable presence to go out.
const GOODBYE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

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
    let actor = XmppActor { events, stream: None, online: false };
    tokio::spawn(actor.run(commands).instrument(info_span!("xmpp")));
    XmppHandle { commands: commands_tx }
}

struct XmppActor {
    events: mpsc::UnboundedSender<HubEvent>,
    stream: Option<StanzaStream>,
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
                            Some(account) => self.stream = Some(open(*account, extra_ca, self.events.clone())),
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
                        // The worker ended (it only does when told to): nothing to follow.
                        self.stream = None;
                        self.online = false;
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
    /// (XEP-0199); the rest is not implemented yet.
    async fn on_iq(&mut self, iq: Iq) {
        let reply = match iq {
            Iq::Get { from, id, payload, .. } | Iq::Set { from, id, payload, .. } => {
                let Some(to) = from else { return };
                if Ping::try_from(payload).is_ok() {
                    Iq::empty_result(to, id)
                } else {
                    let error = StanzaError::new(
                        ErrorType::Cancel,
                        DefinedCondition::ServiceUnavailable,
                        "en",
                        "not implemented by cusaxd",
                    );
                    Iq::from_error(id, error).with_to(to)
                }
            }
            Iq::Result { .. } | Iq::Error { .. } => return,
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
        let Some(stream) = self.stream.take() else { return };
        if std::mem::take(&mut self.online) {
            let _ =
                stream.send(Box::new(Presence::new(xmpp_parsers::presence::Type::Unavailable).into())).await;
            // close() waits for the worker; a worker waiting on a connection never ends, and
            // then dropping the stream is the only way out.
            let _ = tokio::time::timeout(GOODBYE_GRACE, stream.close()).await;
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
fn open(
    account: XmppAccount,
    extra_ca: Option<PathBuf>,
    events: mpsc::UnboundedSender<HubEvent>,
) -> StanzaStream {
    info!(jid = %account.jid, "connecting");
    let account = Arc::new(account);
    let connector = move |_previous: Option<String>, mut slot: oneshot::Sender<Connection>| {
        let (account, extra_ca, events) = (account.clone(), extra_ca.clone(), events.clone());
        tokio::spawn(
            async move {
                let connection = tokio::select! {
                    // The stream was dropped (reconfigured, stopped): stop trying.
                    () = slot.closed() => None,
                    connection = connect_with_backoff(&account, extra_ca, &events) => connection,
                };
                if let Some(connection) = connection {
                    let _ = slot.send(connection);
                }
            }
            .in_current_span(),
        );
    };
    StanzaStream::new(Box::new(connector), QUEUE_DEPTH)
}

/// Tries until a connection opens (`Some`) or fails for good (`None`, reported `failed`).
async fn connect_with_backoff(
    account: &XmppAccount,
    extra_ca: Option<PathBuf>,
    events: &mpsc::UnboundedSender<HubEvent>,
) -> Option<Connection> {
    let mut failures = 0;
    loop {
        report(events, XmppState::Connecting, "");
        let attempt = match crate::tls::client_config(extra_ca.clone()).await {
            Ok(tls) => connect::connect(account, tls).await,
            Err(e) => Err(connect::ConnectError::Config(e)),
        };
        match attempt {
            Ok(connection) => return Some(connection),
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
