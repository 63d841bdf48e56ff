//! The hub: the one owner of the daemon's correlated state.
//!
//! The D-Bus side sends it [`HubCommand`]s through a [`HubHandle`]; the protocol actors (SIP
//! and each call's media now, XMPP later) report to it with [`HubEvent`]s and take its
//! commands. It publishes what it knows as a [`DaemonStatus`] on a `watch` channel: readers
//! always see a consistent snapshot, and a reader that falls behind skips to the newest one.
//! Things that happen rather than hold (a DTMF digit arrived) go out as [`HubSignal`]s on a
//! broadcast channel.

mod correlation;
mod messaging;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{info, warn};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cusax_protocol::sdp::{self, Codec as SdpCodec};
pub use cusax_protocol::sip::call::CallState;
use tokio::time::Instant;

use crate::config::{Codec, Config, ConfigError, ConfigSource};
use crate::media::CallMedia;
use crate::sip::{self, CallCommand, CallError, CallFacts, CallId, SipHandle};
use crate::store::{Status, StoreHandle, StoredMessage};
use crate::xmpp::{self, OwnPresence, SipPresence, XmppCommand, XmppEvent, XmppHandle};

pub use correlation::{CallLink, ChatCorrelation, PlacedLink};
pub use messaging::{
    ContactId, ContactInfo, ContactResource, ConversationId, ConversationInfo, MAX_BODY, MessagingCommand,
    MessagingError, find_by_sip, xml_forbidden,
};

/// How long an ended call stays visible (its object, with State "ended" and the reason).
const ENDED_CALL_LINGER: Duration = Duration::from_secs(2);

/// How the SIP account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipState {
    /// No `[sip]` section in the config.
    Unconfigured,
    Unregistered,
    Registering,
    Registered,
    Failed,
}

impl SipState {
    pub fn as_str(self) -> &'static str {
        match self {
            SipState::Unconfigured => "unconfigured",
            SipState::Unregistered => "unregistered",
            SipState::Registering => "registering",
            SipState::Registered => "registered",
            SipState::Failed => "failed",
        }
    }
}

/// How the XMPP account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmppState {
    /// No `[xmpp]` section in the config.
    Unconfigured,
    Offline,
    Connecting,
    Online,
    Failed,
}

impl XmppState {
    pub fn as_str(self) -> &'static str {
        match self {
            XmppState::Unconfigured => "unconfigured",
            XmppState::Offline => "offline",
            XmppState::Connecting => "connecting",
            XmppState::Online => "online",
            XmppState::Failed => "failed",
        }
    }
}

/// Our own presence as contacts see it: `show` (`offline`, `available`, `chat`, `away`, `xa`,
/// `dnd`, or `unconfigured` without an XMPP account) and a free-text status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub show: String,
    pub status: String,
}

impl Presence {
    pub fn offline() -> Self {
        Self { show: "offline".into(), status: String::new() }
    }

    pub fn unconfigured() -> Self {
        Self { show: "unconfigured".into(), status: String::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    Incoming,
    Outgoing,
}

impl CallDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Incoming => "incoming",
            CallDirection::Outgoing => "outgoing",
        }
    }
}

/// What the daemon shows of a call: the `org.cusax.Cusax1.Call` properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub state: CallState,
    /// Why the call is in its state (for an ended call: who hung up, busy, declined ...).
    pub reason: String,
    pub direction: CallDirection,
    pub remote_uri: String,
    /// The far end's display name, or "".
    pub remote_name: String,
    /// We send silence instead of the microphone.
    pub muted: bool,
    /// What the call's media reports (the SIP actor leaves it default; the hub keeps it).
    pub media: CallMedia,
    /// Its XMPP side (the SIP actor leaves it default; the hub keeps it).
    pub link: CallLink,
}

/// What the daemon shows of itself: the `org.cusax.Cusax1.Daemon` properties, and its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonStatus {
    pub sip_state: SipState,
    /// Why the SIP account is in its state, for people (empty when there is nothing to say).
    pub sip_state_reason: String,
    pub xmpp_state: XmppState,
    /// Why the XMPP account is in its state, for people (empty when there is nothing to say).
    pub xmpp_state_reason: String,
    /// Our SIP address of record, or empty without a SIP account.
    pub sip_address: String,
    /// Our bare JID, or empty without an XMPP account.
    pub jid: String,
    pub presence: Presence,
    pub calls: BTreeMap<CallId, CallInfo>,
    pub conversations: BTreeMap<ConversationId, ConversationInfo>,
    /// The roster. A persistent map: a snapshot of thousands of contacts is a pointer copy,
    /// and a reader finds what changed without comparing the unchanged ones.
    pub contacts: imbl::OrdMap<ContactId, Arc<ContactInfo>>,
    /// Bare JIDs that asked to see our presence and wait for Approve or Deny.
    pub subscription_requests: Vec<String>,
}

impl DaemonStatus {
    /// The status that follows from a config before any network activity: a configured account
    /// is not registered or online until its stack says so.
    fn from_config(config: &Config) -> Self {
        Self {
            sip_state: if config.sip.is_some() { SipState::Unregistered } else { SipState::Unconfigured },
            sip_state_reason: String::new(),
            xmpp_state: if config.xmpp.is_some() { XmppState::Offline } else { XmppState::Unconfigured },
            xmpp_state_reason: String::new(),
            sip_address: config.sip.as_ref().map(|s| s.aor.to_string()).unwrap_or_default(),
            jid: config.xmpp.as_ref().map(|x| x.jid.to_string()).unwrap_or_default(),
            presence: if config.xmpp.is_some() { Presence::offline() } else { Presence::unconfigured() },
            calls: BTreeMap::new(),
            conversations: BTreeMap::new(),
            contacts: imbl::OrdMap::new(),
            subscription_requests: Vec::new(),
        }
    }
}

/// A request to the hub.
#[derive(Debug)]
pub enum HubCommand {
    /// Read the config file again and apply it; the old config stays when the new one is bad.
    Reload {
        reply: oneshot::Sender<Result<(), ConfigError>>,
    },
    /// Passed on to the SIP actor, which answers the caller directly.
    Call(CallCommand),
    /// Call the peer of a conversation (REQ-1, REQ-2); answered like `CallCommand::Place`.
    StartCall {
        conversation: ConversationId,
        reply: oneshot::Sender<Result<CallId, CallError>>,
    },
    Messaging(MessagingCommand),
    /// Ask a SIP address with OPTIONS who it is on XMPP; the SIP actor answers.
    Probe {
        target: String,
        reply: sip::ProbeReply,
    },
    /// Leave the networks cleanly (hang up, unregister), then stop.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// What a protocol actor reports to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    Sip {
        state: SipState,
        reason: String,
    },
    /// The public GRUU the registrar gave us (RFC 5627), if any, with each registration.
    Gruu(Option<String>),
    Xmpp(XmppEvent),
    Call {
        id: CallId,
        info: CallInfo,
    },
    Media {
        id: CallId,
        media: CallMedia,
    },
    Dtmf {
        id: CallId,
        digit: char,
    },
    /// A call we placed went out with what the hub asked for.
    CallPlaced {
        id: CallId,
        link: Box<PlacedLink>,
    },
    /// What an incoming call's INVITE says (before the call is reported).
    CallInvited {
        id: CallId,
        facts: Box<CallFacts>,
    },
    /// What the 2xx to our INVITE says.
    CallAnswered {
        id: CallId,
        facts: Box<CallFacts>,
    },
    /// An OPTIONS from `asker` waits for our word: does its answer name our JID?
    OptionsAsked {
        request: u64,
        asker: String,
    },
}

/// Something that happened, for whoever listens (the D-Bus signals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubSignal {
    DtmfReceived {
        call: CallId,
        digits: String,
    },
    /// A message we did not have before: the peer's, or ours from another client.
    MessageReceived(Box<ReceivedMessage>),
    MessageStatus {
        conversation: ConversationId,
        uid: String,
        status: Status,
    },
}

/// What `HubSignal::MessageReceived` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub conversation: ConversationId,
    /// The sender's full JID (our own JID for ours from another client).
    pub from: String,
    pub message: StoredMessage,
    /// direct, carbon or archive.
    pub via: &'static str,
    /// It carried a XEP-0203 delay.
    pub delayed: bool,
}

/// The hub is gone: the daemon is shutting down.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the daemon is shutting down")]
pub struct HubGone;

/// A cheap, cloneable way to talk to the hub.
#[derive(Debug, Clone)]
pub struct HubHandle {
    commands: mpsc::Sender<HubCommand>,
    status: watch::Receiver<DaemonStatus>,
    signals: broadcast::Sender<HubSignal>,
}

impl HubHandle {
    pub async fn reload(&self) -> Result<Result<(), ConfigError>, HubGone> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(HubCommand::Reload { reply }).await.map_err(|_| HubGone)?;
        answer.await.map_err(|_| HubGone)
    }

    pub async fn place_call(&self, target: String) -> Result<CallId, CallError> {
        self.ask(|reply| CallCommand::Place { target, link: None, reply }).await?
    }

    pub async fn start_call(&self, conversation: ConversationId) -> Result<CallId, CallError> {
        let (reply, answer) = oneshot::channel();
        let gone = || CallError::Failed(HubGone.to_string());
        self.commands.send(HubCommand::StartCall { conversation, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The XMPP address `target` (a SIP address) names in the Call-Info of its OPTIONS 200.
    pub async fn probe(&self, target: String) -> Result<Option<String>, CallError> {
        let (reply, answer) = oneshot::channel();
        let gone = || CallError::Failed(HubGone.to_string());
        self.commands.send(HubCommand::Probe { target, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub async fn answer(&self, call: CallId) -> Result<(), CallError> {
        self.ask(|reply| CallCommand::Answer { call, headers: Vec::new(), reply }).await?
    }

    pub async fn hangup(&self, call: CallId) -> Result<(), CallError> {
        self.ask(|reply| CallCommand::Hangup { call, reply }).await?
    }

    pub async fn hold(&self, call: CallId, hold: bool) -> Result<(), CallError> {
        self.ask(|reply| CallCommand::Hold { call, hold, reply }).await?
    }

    pub async fn mute(&self, call: CallId, muted: bool) -> Result<(), CallError> {
        self.ask(|reply| CallCommand::Mute { call, muted, reply }).await?
    }

    pub async fn send_dtmf(&self, call: CallId, digits: String) -> Result<(), CallError> {
        self.ask(|reply| CallCommand::SendDtmf { call, digits, reply }).await?
    }

    /// A chat, presence or history request, answered by the hub.
    pub async fn messaging<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, MessagingError>>) -> MessagingCommand,
    ) -> Result<T, MessagingError> {
        let (reply, answer) = oneshot::channel();
        let gone = || MessagingError::Failed(HubGone.to_string());
        self.commands.send(HubCommand::Messaging(command(reply))).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> CallCommand) -> Result<T, CallError> {
        let (reply, answer) = oneshot::channel();
        let gone = || CallError::Failed(HubGone.to_string());
        self.commands.send(HubCommand::Call(command(reply))).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// Unregisters and stops the actors; returns when they are done.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(HubCommand::Shutdown { done }).await.is_ok() {
            let _ = finished.await;
        }
    }

    /// A receiver of status snapshots; `changed()` wakes on every new one.
    pub fn status(&self) -> watch::Receiver<DaemonStatus> {
        self.status.clone()
    }

    /// A receiver of the signals from now on.
    pub fn signals(&self) -> broadcast::Receiver<HubSignal> {
        self.signals.subscribe()
    }
}

/// Starts the hub task, and the protocol actors under it, with a config that was already
/// validated. `instance` is our `+sip.instance` URN; `store` keeps the messages. The task ends
/// when every [`HubHandle`] is dropped or on [`HubHandle::shutdown`].
pub fn spawn(source: ConfigSource, config: Config, instance: String, store: StoreHandle) -> HubHandle {
    let (commands_tx, commands) = mpsc::channel(32);
    let (events_tx, events) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(DaemonStatus::from_config(&config));
    // A catch-up brings archive pages of 100 messages at a time; a listener further behind
    // than this has stopped listening.
    let (signals, _) = broadcast::channel(1024);
    let sip = sip::spawn(events_tx.clone(), instance);
    let xmpp = xmpp::spawn(events_tx, store.clone());
    let hub = Hub {
        source,
        config,
        status: status_tx,
        signals: signals.clone(),
        sip,
        xmpp,
        store,
        ended: Vec::new(),
        own_presence: OwnPresence::default(),
        next_conversation: 1,
        next_contact: 1,
        contact_ids: HashMap::new(),
        gruu: None,
        sip_presence: None,
        own_full_jid: None,
        call_contexts: HashMap::new(),
    };
    tokio::spawn(hub.run(commands, events));
    HubHandle { commands: commands_tx, status, signals }
}

struct Hub {
    source: ConfigSource,
    config: Config,
    status: watch::Sender<DaemonStatus>,
    signals: broadcast::Sender<HubSignal>,
    sip: SipHandle,
    xmpp: XmppHandle,
    store: StoreHandle,
    /// Ended calls, and when to drop them from the status.
    ended: Vec<(CallId, Instant)>,
    /// The presence the user chose (shown while online).
    own_presence: OwnPresence,
    next_conversation: ConversationId,
    next_contact: ContactId,
    /// Roster contacts by bare JID.
    contact_ids: HashMap<String, ContactId>,
    /// Our public GRUU, while registered with a registrar that gives one.
    gruu: Option<String>,
    /// What our XMPP presence last said about SIP.
    sip_presence: Option<SipPresence>,
    /// Our full JID in the current XMPP session.
    own_full_jid: Option<String>,
    /// What correlation keeps of each call (secrets included).
    call_contexts: HashMap<CallId, correlation::CallCorrelation>,
}

/// The codec preference of the config, as SDP names the codecs.
fn sdp_codecs(config: &Config) -> Vec<SdpCodec> {
    config
        .media
        .codecs
        .iter()
        .map(|c| match c {
            Codec::Opus => sdp::OPUS,
            Codec::Pcmu => sdp::PCMU,
            Codec::Pcma => sdp::PCMA,
        })
        .collect()
}

impl Hub {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<HubCommand>,
        mut events: mpsc::UnboundedReceiver<HubEvent>,
    ) {
        self.sip.media(sdp_codecs(&self.config), self.config.media.clone()).await;
        self.sip.configure(self.config.sip.clone(), self.config.tls.extra_ca.clone()).await;
        self.xmpp.configure(self.config.xmpp.clone(), self.config.tls.extra_ca.clone()).await;
        self.xmpp.command(XmppCommand::SipAddress(self.sip_aor())).await;
        loop {
            let linger = self.ended.iter().map(|(_, at)| *at).min();
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(HubCommand::Reload { reply }) => {
                        let result = self.reload().await;
                        self.publish_sip_presence().await;
                        // The caller may have timed out and gone; the reload stands either way.
                        let _ = reply.send(result);
                    }
                    Some(HubCommand::Call(command)) => self.on_call_command(command).await,
                    Some(HubCommand::Probe { target, reply }) => {
                        self.sip.command(sip::SipCommand::Probe { target, reply }).await;
                    }
                    Some(HubCommand::StartCall { conversation, reply }) => {
                        self.start_call(conversation, reply).await;
                    }
                    Some(HubCommand::Messaging(command)) => self.on_messaging(command).await,
                    Some(HubCommand::Shutdown { done }) => {
                        // Both leave at once: each bounds its own goodbye.
                        tokio::join!(self.sip.shutdown(), self.xmpp.shutdown());
                        let _ = done.send(());
                        break;
                    }
                },
                Some(event) = events.recv() => {
                    match event {
                        HubEvent::OptionsAsked { request, asker } => {
                            let impp = self.options_impp(&asker);
                            self.sip.command(sip::SipCommand::OptionsAnswer { request, impp }).await;
                        }
                        event => self.on_event(event),
                    }
                    self.publish_sip_presence().await;
                }
                _ = sleep_until(linger) => self.forget_ended(),
            }
        }
    }

    fn forget_ended(&mut self) {
        let now = Instant::now();
        let due: Vec<CallId> = self.ended.iter().filter(|(_, at)| *at <= now).map(|(id, _)| *id).collect();
        self.ended.retain(|(_, at)| *at > now);
        self.status.send_if_modified(|status| {
            let before = status.calls.len();
            status.calls.retain(|id, _| !due.contains(id));
            status.calls.len() != before
        });
        self.call_contexts.retain(|id, _| !due.contains(id));
    }

    fn on_event(&mut self, event: HubEvent) {
        match event {
            HubEvent::Sip { state, reason } => {
                self.status.send_if_modified(|status| {
                    let changed = status.sip_state != state || status.sip_state_reason != reason;
                    status.sip_state = state;
                    status.sip_state_reason = reason;
                    changed
                });
            }
            HubEvent::Xmpp(event) => self.on_xmpp(event),
            HubEvent::Gruu(gruu) => self.gruu = gruu,
            HubEvent::Call { id, mut info } => {
                if info.state == CallState::Ended {
                    self.ended.push((id, Instant::now() + ENDED_CALL_LINGER));
                }
                if let Some(context) = self.call_contexts.get_mut(&id) {
                    context.active = info.state != CallState::Ended;
                    info.link = context.shown.clone();
                }
                self.status.send_if_modified(|status| {
                    if let Some(known) = status.calls.get(&id) {
                        info.media = known.media.clone();
                    }
                    let changed = status.calls.get(&id) != Some(&info);
                    status.calls.insert(id, info);
                    changed
                });
            }
            HubEvent::Media { id, media } => {
                self.status.send_if_modified(|status| match status.calls.get_mut(&id) {
                    Some(call) if call.media != media => {
                        call.media = media;
                        true
                    }
                    _ => false,
                });
            }
            HubEvent::CallPlaced { id, link } => self.on_call_placed(id, *link),
            HubEvent::CallInvited { id, facts } => self.on_call_invited(id, *facts),
            HubEvent::CallAnswered { id, facts } => self.on_call_answered(id, *facts),
            HubEvent::OptionsAsked { .. } => {}
            HubEvent::Dtmf { id, digit } => {
                // Nobody listening is fine: a digit is not state to keep.
                let _ = self.signals.send(HubSignal::DtmfReceived { call: id, digits: digit.to_string() });
            }
        }
    }

    async fn reload(&mut self) -> Result<(), ConfigError> {
        // File reads stay off the runtime's only thread.
        let source = self.source.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&source)).await.unwrap_or_else(|e| {
            Err(ConfigError::Read { path: self.source.path.clone(), source: std::io::Error::other(e) })
        });
        let config = match loaded {
            Ok(config) => config,
            Err(e) => {
                warn!(error = %e, "reload refused; keeping the running config");
                return Err(e);
            }
        };
        if config == self.config {
            info!(path = %self.source.path.display(), "config reloaded, unchanged");
            // A failed account is not retried on its own; a reload is how the user (or a
            // network-up hook) says that what it depends on (a password file, a CA file, the
            // server, the network) was mended: a failed account, or one waiting out its
            // backoff, tries again now.
            let status = self.status.borrow().clone();
            if status.sip_state == SipState::Failed {
                self.sip.configure(self.config.sip.clone(), self.config.tls.extra_ca.clone()).await;
            }
            if matches!(status.xmpp_state, XmppState::Failed | XmppState::Offline) {
                self.xmpp.configure(self.config.xmpp.clone(), self.config.tls.extra_ca.clone()).await;
            }
            return Ok(());
        }
        info!(path = %self.source.path.display(), "config reloaded");
        let fresh = DaemonStatus::from_config(&config);
        let sip_changed = config.sip != self.config.sip || config.tls != self.config.tls;
        let media_changed = config.media != self.config.media;
        let xmpp_changed = config.xmpp != self.config.xmpp || config.tls != self.config.tls;
        self.status.send_if_modified(|status| {
            let before = status.clone();
            // An account whose settings did not change keeps its live state; a changed one
            // starts over, and its actor reports from there.
            if sip_changed {
                status.sip_state = fresh.sip_state;
                status.sip_state_reason = String::new();
                status.sip_address = fresh.sip_address.clone();
            }
            if xmpp_changed {
                status.xmpp_state = fresh.xmpp_state;
                status.xmpp_state_reason = String::new();
                status.presence = fresh.presence.clone();
                if status.jid != fresh.jid {
                    // Another account: its own roster and conversations.
                    status.jid = fresh.jid.clone();
                    status.contacts = imbl::OrdMap::new();
                    status.conversations.clear();
                    status.subscription_requests.clear();
                }
            }
            *status != before
        });
        if self.status.borrow().contacts.is_empty() {
            self.contact_ids.clear();
        }
        self.config = config;
        if media_changed {
            self.sip.media(sdp_codecs(&self.config), self.config.media.clone()).await;
        }
        if sip_changed {
            self.sip.configure(self.config.sip.clone(), self.config.tls.extra_ca.clone()).await;
            self.xmpp.command(XmppCommand::SipAddress(self.sip_aor())).await;
        }
        if xmpp_changed {
            self.xmpp.configure(self.config.xmpp.clone(), self.config.tls.extra_ca.clone()).await;
        }
        Ok(())
    }
}

impl Hub {
    fn sip_aor(&self) -> Option<String> {
        self.config.sip.as_ref().map(|s| s.aor.to_string())
    }

    /// REQ-5 (cusax-wire 2, 3.2, 3.8): while SIP is registered our presence carries our
    /// addresses (GRUU first, then the AoR) and open, or busy during a call; unregistered,
    /// neither. Sent to the XMPP actor when it changes.
    async fn publish_sip_presence(&mut self) {
        let now = {
            let status = self.status.borrow();
            match (status.sip_state, self.sip_aor()) {
                (SipState::Registered, Some(aor)) => {
                    let targets = self.gruu.iter().cloned().chain(std::iter::once(aor)).collect();
                    // Up, not ringing: a stranger's INVITE must not make us busy for everyone.
                    let busy =
                        status.calls.values().any(|c| matches!(c.state, CallState::Active | CallState::Held));
                    Some(SipPresence { targets, busy, on_the_phone: self.config.presence.on_the_phone })
                }
                _ => None,
            }
        };
        if now != self.sip_presence {
            self.sip_presence = now.clone();
            self.xmpp.command(XmppCommand::SipPresence(now)).await;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &std::path::Path, text: &str) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[tokio::test]
    async fn reload_publishes_the_new_addresses_and_keeps_old_config_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        write(&path, "");
        let source = ConfigSource { path: path.clone(), explicit: true };
        let store = crate::store::spawn_with(crate::store::History::in_memory().unwrap());
        let hub = spawn(source.clone(), Config::load(&source).unwrap(), "urn:uuid:test".into(), store);
        let mut status = hub.status();
        assert_eq!(status.borrow().sip_state, SipState::Unconfigured);
        assert_eq!(status.borrow().xmpp_state, XmppState::Unconfigured);

        // The account starts connecting at once (to port 9, where nothing listens: its states
        // move on their own; the end-to-end tests check them against real servers).
        write(&path, "[xmpp]\njid = \"alice@localhost\"\nserver = \"127.0.0.1:9\"\n");
        hub.reload().await.unwrap().unwrap();
        assert!(status.has_changed().unwrap());
        let now = status.borrow_and_update().clone();
        assert_ne!(now.xmpp_state, XmppState::Unconfigured);
        assert_eq!(now.jid, "alice@localhost");
        assert_eq!(now.presence, Presence::offline());

        write(&path, "[xmpp]\njid = \"nonsense\"\n");
        let refused = hub.reload().await.unwrap().unwrap_err();
        assert_eq!(refused.name(), "bad-jid");
        assert_eq!(status.borrow().jid, "alice@localhost");
    }
}
