//! The SIP actor: owns the account's SIP transport and drives the sans-I/O machines of
//! `cusax-protocol` (the [`Registration`] and one [`Call`] per call) with real sockets, the
//! tokio clock and the OS CSPRNG. It reports to the hub as [`HubEvent::Sip`] and
//! [`HubEvent::Call`], and takes [`SipCommand`]s.
//!
//! Every message goes to and comes from the first hop ([`transport`]); a message is routed
//! by Call-ID to its call, else to the registration. Each call reserves an RTP/RTCP port pair
//! for its SDP; once offer and answer agree, the call's media task ([`crate::media`]) takes
//! the ports, and it stops when the call ends.

mod transport;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use cusax_protocol::sdp::{self, Codec, Direction, LocalAudio, Negotiated, SdpOrigin};
use cusax_protocol::sip::Normalised;
use cusax_protocol::sip::call::{Call, CallOutput, CallSettings, CallState, response_to};
use cusax_protocol::sip::cusax_headers::{SipCusax, call_info_impp};
use cusax_protocol::sip::header::status_code;
use cusax_protocol::sip::probe::{Probe, ProbeOutput};
use cusax_protocol::sip::registration::{
    Entropy, Registration, RegistrationConfig, RegistrationEvent, RegistrationState, backoff, instance_urn,
    random_hex,
};
use cusax_protocol::sip::target::call_target;
use cusax_protocol::sip::transaction::Reliability;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, trace, warn};
use transport::Transport;

use crate::config::{MediaSettings, SipAccount};
use crate::hub::{CallDirection, CallInfo, HubEvent, PlacedLink, SipState};
use crate::media::{self, MediaConfig, MediaHandle, RtpSockets};

/// Calls at once; more incoming ones get 486, so a flood cannot exhaust ports.
const MAX_CALLS: usize = 16;
/// How long an ended call's machine is kept for late messages (a 487 after our CANCEL, a
/// retransmitted BYE): 64 T1.
const ENDED_GRACE: Duration = Duration::from_secs(32);
/// Who waits for what an OPTIONS probe learns: the far end's Call-Info impp JID.
pub type ProbeReply = oneshot::Sender<Result<Option<String>, CallError>>;

/// OPTIONS probes of ours under way at once.
const MAX_PROBES: usize = 8;
/// OPTIONS requests waiting for the hub to say whether the asker learns our JID; more are
/// answered without it at once.
const MAX_OPTIONS_WAITING: usize = 16;
/// The hub answers at once; past this, the OPTIONS is answered without our JID.
const OPTIONS_WAIT: Duration = Duration::from_millis(500);
/// How long we ask the registrar to keep our binding.
const REQUESTED_EXPIRY: u32 = 600;
/// RFC 5626 section 4.4.1: CRLF keep-alives on a stream every 95 to 120 seconds.
const KEEPALIVE_MIN: Duration = Duration::from_secs(95);
/// How long a clean shutdown waits for the registrar to confirm the unREGISTER.
const UNREGISTER_GRACE: Duration = Duration::from_millis(700);

/// The OS's CSPRNG.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, bytes: &mut [u8]) {
        if let Err(e) = getrandom::fill(bytes) {
            // Without randomness no tag, nonce or token is safe; nothing sensible remains.
            tracing::error!(error = %e, "the operating system gave no random bytes");
            std::process::exit(1);
        }
    }
}

/// A new `+sip.instance` URN.
pub fn new_instance() -> String {
    instance_urn(&mut OsEntropy)
}

/// The daemon's number for a call (`/org/cusax/Cusax1/call/N`).
pub type CallId = u32;

/// What the peer's INVITE (or its 2xx to ours) says about its XMPP side (cusax-wire
/// 3.3-3.5), with the SIP identity it claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFacts {
    pub cusax: SipCusax,
    /// The From URI (of a 2xx: the To URI, who answered).
    pub identity: String,
    /// `P-Asserted-Identity`, when a proxy of a trust domain set one (RFC 3325).
    pub asserted: Option<String>,
}

impl CallFacts {
    fn read(headers: &[(String, String)], identity: &str) -> Self {
        let uri = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| cusax_protocol::sip::header::NameAddr::parse(v))
                .map(|a| a.uri)
        };
        Self {
            cusax: SipCusax::read(headers),
            identity: uri(identity).unwrap_or_default(),
            asserted: uri("P-Asserted-Identity"),
        }
    }
}

/// Why a call request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    InvalidAddress(String),
    #[error("the SIP account is not registered")]
    NotRegistered,
    #[error("no such call")]
    NotFound,
    #[error("{0}")]
    Failed(String),
}

/// A request about calls. The hub passes it on unchanged (the correlation issue will have it
/// decide things first); the SIP actor answers on the enclosed reply channel.
#[derive(Debug)]
pub enum CallCommand {
    Place {
        target: String,
        /// What the hub adds for CUSAX (headers, the conversation the call continues).
        link: Option<Box<PlacedLink>>,
        reply: oneshot::Sender<Result<CallId, CallError>>,
    },
    Answer {
        call: CallId,
        /// Headers the hub adds to the 2xx (the CUSAX echo and our contact).
        headers: Vec<(String, String)>,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    Hangup {
        call: CallId,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    /// Put the call on hold (`hold`) or take it off hold.
    Hold {
        call: CallId,
        hold: bool,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    /// Send silence instead of the microphone (`muted`), or stop doing so.
    Mute {
        call: CallId,
        muted: bool,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    /// Send digits as RFC 4733 telephone-events.
    SendDtmf {
        call: CallId,
        digits: String,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
}

#[derive(Debug)]
pub enum SipCommand {
    /// Ask a SIP address with OPTIONS who it is on XMPP (its Call-Info impp JID).
    Probe {
        target: String,
        reply: ProbeReply,
    },
    /// The hub's word on OPTIONS `request`: with `impp`, the answer names our JID.
    OptionsAnswer {
        request: u64,
        impp: Option<String>,
    },
    /// Use this account and private CA from now on (`None`: no SIP account).
    Configure {
        account: Option<Box<SipAccount>>,
        extra_ca: Option<PathBuf>,
    },
    /// Use this codec preference and these media settings for calls from now on; running
    /// calls keep theirs.
    Media {
        codecs: Vec<Codec>,
        settings: MediaSettings,
    },
    Call(CallCommand),
    /// Hang up, unregister (bounded in time) and stop.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

#[derive(Debug, Clone)]
pub struct SipHandle {
    commands: mpsc::Sender<SipCommand>,
}

impl SipHandle {
    pub async fn configure(&self, account: Option<SipAccount>, extra_ca: Option<PathBuf>) {
        let command = SipCommand::Configure { account: account.map(Box::new), extra_ca };
        let _ = self.commands.send(command).await;
    }

    pub async fn media(&self, codecs: Vec<Codec>, settings: MediaSettings) {
        let _ = self.commands.send(SipCommand::Media { codecs, settings }).await;
    }

    /// Hands an OPTIONS probe or the hub's word on an OPTIONS to the actor.
    pub async fn command(&self, command: SipCommand) {
        let _ = self.commands.send(command).await;
    }

    /// Hands a call command to the actor. If the actor is gone, the reply channel is dropped
    /// and the caller learns it from there.
    pub async fn call(&self, command: CallCommand) {
        let _ = self.commands.send(SipCommand::Call(command)).await;
    }

    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(SipCommand::Shutdown { done }).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// Starts the SIP actor; it reports to the hub through `events`.
pub fn spawn(events: mpsc::UnboundedSender<HubEvent>, instance: String) -> SipHandle {
    let (commands_tx, commands) = mpsc::channel(16);
    let actor = SipActor {
        events,
        instance,
        session: None,
        reopen: None,
        codecs: Vec::new(),
        media: MediaSettings::default(),
        extra_ca: None,
        next_call: 1,
        next_request: 1,
    };
    tokio::spawn(actor.run(commands).instrument(info_span!("sip")));
    SipHandle { commands: commands_tx }
}

struct SipActor {
    /// Unbounded so that the actor never waits on the hub, which may be waiting on us.
    events: mpsc::UnboundedSender<HubEvent>,
    instance: String,
    session: Option<Session>,
    /// An account whose transport could not be opened yet: when to try again, and how often
    /// it failed.
    reopen: Option<(SipAccount, Instant, u32)>,
    /// `[tls] extra_ca`: a private CA trusted besides the system's roots.
    extra_ca: Option<PathBuf>,
    codecs: Vec<Codec>,
    media: MediaSettings,
    next_call: CallId,
    /// Numbers the OPTIONS requests that wait for the hub.
    next_request: u64,
}

/// One account over one transport: its registration and its calls.
struct Session {
    account: SipAccount,
    registration: Registration,
    transport: Transport,
    next_keepalive: Option<Instant>,
    settings: CallSettings,
    local_ip: IpAddr,
    /// The host of our AoR: numbers are dialled there.
    domain: String,
    calls: BTreeMap<CallId, CallEntry>,
    /// Our OPTIONS probes, with who waits for what they learn.
    probes: Vec<(Probe, ProbeReply)>,
    /// OPTIONS requests waiting for the hub's word, and until when.
    options_waiting: BTreeMap<u64, (Normalised, Instant)>,
}

/// A call's media: ports held for it, then its running task.
enum MediaSlot {
    Reserved(RtpSockets),
    Running(MediaHandle),
    Stopped,
}

struct CallEntry {
    call: Call,
    direction: CallDirection,
    /// The RTP address our SDP names.
    rtp_address: SocketAddr,
    media: MediaSlot,
    /// Sending silence instead of the microphone (also before the media starts).
    muted: bool,
    /// Why the call is in its state, as last reported.
    reason: String,
    /// The codec preference when the call began: a reload does not change a running call.
    codecs: Vec<Codec>,
    origin: SdpOrigin,
    /// An incoming call's offer, answered when the user answers.
    remote_offer: Option<Vec<u8>>,
    /// We hold the call (our re-INVITEs and answers say sendonly).
    held_here: bool,
    /// When the call ended; its machine is kept [`ENDED_GRACE`] for late messages.
    ended_at: Option<Instant>,
}

impl CallEntry {
    /// Our side of the stream as we offer it now: sendonly while we hold the call, so that an
    /// answer that says sendrecv anyway does not take our microphone off hold.
    fn local_audio(&self) -> LocalAudio {
        let mut local = local_audio(self.rtp_address, self.codecs.clone());
        if self.held_here {
            local.direction = Direction::SendOnly;
        }
        local
    }

    /// What the hub shows of the call (the hub adds the media's part).
    fn info(&self, state: CallState) -> CallInfo {
        CallInfo {
            state,
            reason: self.reason.clone(),
            direction: self.direction,
            remote_uri: self.call.remote_uri().to_owned(),
            remote_name: self.call.remote_name().to_owned(),
            muted: self.muted,
            media: Default::default(),
            link: Default::default(),
        }
    }
}

impl SipActor {
    async fn run(mut self, mut commands: mpsc::Receiver<SipCommand>) {
        loop {
            let wake = earliest(
                self.session.as_ref().and_then(Session::next_timeout),
                self.reopen.as_ref().map(|r| r.1),
            );
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(SipCommand::Shutdown { done }) => {
                        self.stop().await;
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.on_command(command).await,
                },
                received = receive(&mut self.session) => self.on_received(received).await,
                _ = sleep_until(wake) => self.on_timer().await,
            }
        }
    }

    async fn on_command(&mut self, command: SipCommand) {
        match command {
            SipCommand::Configure { account, extra_ca } => {
                self.extra_ca = extra_ca;
                self.configure(account.map(|a| *a)).await;
            }
            SipCommand::Probe { target, reply } => self.probe(&target, reply).await,
            SipCommand::OptionsAnswer { request, impp } => self.answer_options(request, impp).await,
            SipCommand::Media { codecs, settings } => {
                self.codecs = codecs;
                self.media = settings;
            }
            SipCommand::Call(CallCommand::Place { target, link, reply }) => {
                let result = self.place_call(&target, link).await;
                let _ = reply.send(result);
            }
            SipCommand::Call(CallCommand::Answer { call, headers, reply }) => {
                let result = self.answer(call, &headers).await;
                let _ = reply.send(result);
            }
            SipCommand::Call(CallCommand::Hangup { call, reply }) => {
                let result = self.hangup(call).await;
                let _ = reply.send(result);
            }
            SipCommand::Call(CallCommand::Hold { call, hold, reply }) => {
                let result = self.hold(call, hold).await;
                let _ = reply.send(result);
            }
            SipCommand::Call(CallCommand::Mute { call, muted, reply }) => {
                let _ = reply.send(self.mute(call, muted));
            }
            SipCommand::Call(CallCommand::SendDtmf { call, digits, reply }) => {
                self.send_dtmf(call, digits, reply)
            }
            SipCommand::Shutdown { .. } => {}
        }
    }

    async fn report(&self, state: SipState, reason: impl Into<String>) {
        let _ = self.events.send(HubEvent::Sip { state, reason: reason.into() });
    }

    async fn configure(&mut self, account: Option<SipAccount>) {
        self.stop().await;
        self.reopen = None;
        match account {
            None => self.report(SipState::Unconfigured, "").await,
            Some(account) => self.open(account, 0).await,
        }
    }

    /// Opens the transport and starts registering; a failure is retried with backoff.
    async fn open(&mut self, account: SipAccount, failures: u32) {
        self.report(SipState::Registering, "").await;
        match Session::open(&account, &self.instance, self.extra_ca.as_deref()).await {
            Ok(mut session) => {
                let events = session.registration.start(std::time::Instant::now());
                self.session = Some(session);
                self.apply_registration(events).await;
            }
            Err(reason) => {
                let wait = backoff(failures, &mut OsEntropy);
                warn!(%reason, retry_in = ?wait, "SIP account not started");
                self.reopen = Some((account, Instant::now() + wait, failures + 1));
                self.report(SipState::Failed, reason).await;
            }
        }
    }

    /// Hangs up every call and unregisters, waiting at most [`UNREGISTER_GRACE`].
    async fn stop(&mut self) {
        let now = std::time::Instant::now();
        let ids: Vec<CallId> =
            self.session.as_ref().map(|s| s.calls.keys().copied().collect()).unwrap_or_default();
        for id in ids {
            let Some(entry) = self.session.as_mut().and_then(|s| s.calls.get_mut(&id)) else { continue };
            let outputs = entry.call.hangup(now);
            self.apply_call(id, outputs).await;
        }
        let Some(session) = self.session.as_mut() else { return };
        let events = session.registration.unregister(now);
        let deadline = Instant::now() + UNREGISTER_GRACE;
        self.apply_registration(events).await;
        while let Some(current) = self.session.as_ref() {
            if matches!(current.registration.state(), RegistrationState::Unregistered) {
                break;
            }
            let wake = current
                .registration
                .next_timeout()
                .map(Instant::from_std)
                .map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                received = receive(&mut self.session) => self.on_received(received).await,
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        debug!("no answer to the unREGISTER in time");
                        break;
                    }
                    self.on_timer().await;
                }
            }
        }
        self.session = None;
    }

    async fn place_call(&mut self, target: &str, link: Option<Box<PlacedLink>>) -> Result<CallId, CallError> {
        let codecs = self.codecs.clone();
        let session = self.session.as_mut().ok_or(CallError::NotRegistered)?;
        if !matches!(session.registration.state(), RegistrationState::Registered { .. }) {
            return Err(CallError::NotRegistered);
        }
        let uri =
            call_target(target, &session.domain).map_err(|e| CallError::InvalidAddress(e.to_string()))?;
        let sockets = reserve_rtp(session.local_ip, &self.media).await?;
        let rtp_address = rtp_address(&sockets)?;
        let mut origin = new_origin();
        let offer = sdp::offer(&mut origin, &local_audio(rtp_address, codecs));
        let id = self.next_call;
        self.next_call += 1;
        let headers = link.as_ref().map(|l| l.cusax.headers()).unwrap_or_default();
        let (call, outputs) = Call::dial(
            session.settings.clone(),
            Box::new(OsEntropy),
            &uri,
            offer.into_bytes(),
            headers,
            std::time::Instant::now(),
        );
        info!(call = id, "calling");
        // Every call we place is announced, so that the hub knows its 2xx belongs to one.
        let link = link.unwrap_or_else(|| {
            Box::new(PlacedLink {
                cusax: SipCusax::default(),
                conversation: None,
                contact: None,
                target: uri.clone(),
            })
        });
        let _ = self.events.send(HubEvent::CallPlaced { id, link });
        session.calls.insert(
            id,
            CallEntry {
                call,
                direction: CallDirection::Outgoing,
                rtp_address,
                media: MediaSlot::Reserved(sockets),
                muted: false,
                reason: String::new(),
                codecs: self.codecs.clone(),
                origin,
                remote_offer: None,
                held_here: false,
                ended_at: None,
            },
        );
        self.apply_call(id, outputs).await;
        Ok(id)
    }

    async fn answer(&mut self, id: CallId, headers: &[(String, String)]) -> Result<(), CallError> {
        let session = self.session.as_mut().ok_or(CallError::NotFound)?;
        let entry = session.calls.get_mut(&id).ok_or(CallError::NotFound)?;
        if entry.call.state() != CallState::Incoming {
            return Err(CallError::Failed(format!(
                "the call is {}, not incoming",
                entry.call.state().as_str()
            )));
        }
        let now = std::time::Instant::now();
        let local = local_audio(entry.rtp_address, entry.codecs.clone());
        let Some(offer) = entry.remote_offer.clone() else {
            // A delayed offer (RFC 3261 13.2.1): our 200 offers, the ACK will answer.
            let offer = sdp::offer(&mut entry.origin, &local);
            info!(call = id, "answering with an offer");
            let outputs = entry.call.answer(offer.into_bytes(), headers, now);
            self.apply_call(id, outputs).await;
            return Ok(());
        };
        let outputs = match sdp::answer(&mut entry.origin, &local, &offer) {
            Ok((answer, agreed)) => {
                info!(call = id, codec = agreed.codec.name, "answering");
                let outputs = entry.call.answer(answer.into_bytes(), headers, now);
                media_agreed(entry, id, agreed, &self.media, &self.events);
                outputs
            }
            Err(e) => {
                warn!(call = id, error = %e, "cannot answer the offer");
                entry.call.reject(488, "Not Acceptable Here", &format!("no common media: {e}"), now)
            }
        };
        self.apply_call(id, outputs).await;
        Ok(())
    }

    fn mute(&mut self, id: CallId, muted: bool) -> Result<(), CallError> {
        let session = self.session.as_mut().ok_or(CallError::NotFound)?;
        let entry = session.calls.get_mut(&id).filter(|e| e.ended_at.is_none()).ok_or(CallError::NotFound)?;
        entry.muted = muted;
        if let MediaSlot::Running(media) = &entry.media {
            media.mute(muted);
        }
        let _ = self.events.send(HubEvent::Call { id, info: entry.info(entry.call.state()) });
        Ok(())
    }

    /// The media task answers `reply` itself: the actor never waits on it.
    fn send_dtmf(&mut self, id: CallId, digits: String, reply: oneshot::Sender<Result<(), CallError>>) {
        let entry = self.session.as_mut().and_then(|s| s.calls.get(&id)).filter(|e| e.ended_at.is_none());
        match entry.map(|e| &e.media) {
            Some(MediaSlot::Running(media)) => media.send_dtmf(digits, reply),
            Some(_) => {
                let _ = reply.send(Err(CallError::Failed("the call has no media yet".into())));
            }
            None => {
                let _ = reply.send(Err(CallError::NotFound));
            }
        }
    }

    async fn hangup(&mut self, id: CallId) -> Result<(), CallError> {
        let session = self.session.as_mut().ok_or(CallError::NotFound)?;
        let entry = session.calls.get_mut(&id).filter(|e| e.ended_at.is_none()).ok_or(CallError::NotFound)?;
        let outputs = entry.call.hangup(std::time::Instant::now());
        self.apply_call(id, outputs).await;
        Ok(())
    }

    /// Sends a re-INVITE whose SDP holds (sendonly) or resumes (sendrecv) the media.
    async fn hold(&mut self, id: CallId, hold: bool) -> Result<(), CallError> {
        let session = self.session.as_mut().ok_or(CallError::NotFound)?;
        let entry = session.calls.get_mut(&id).ok_or(CallError::NotFound)?;
        let state = entry.call.state();
        if !matches!(state, CallState::Active | CallState::Held) {
            return Err(CallError::Failed(format!("the call is {}, not up", state.as_str())));
        }
        let mut local = local_audio(entry.rtp_address, entry.codecs.clone());
        local.direction = if hold { Direction::SendOnly } else { Direction::SendRecv };
        entry.held_here = hold;
        let offer = sdp::offer(&mut entry.origin, &local);
        let outputs = entry.call.update_media(offer.into_bytes(), hold, std::time::Instant::now());
        if outputs.is_empty() {
            return Err(CallError::Failed("a media change is already under way".into()));
        }
        self.apply_call(id, outputs).await;
        Ok(())
    }

    async fn on_received(&mut self, received: std::io::Result<Vec<Normalised>>) {
        if self.session.is_none() {
            return;
        }
        let now = std::time::Instant::now();
        let messages = match received {
            Ok(messages) => messages,
            Err(e) => return self.connection_lost(format!("the connection to the proxy failed: {e}")),
        };
        for message in messages {
            self.route(message, now).await;
        }
    }

    /// Hands a message to its call, its registration, or answers it here.
    async fn route(&mut self, message: Normalised, now: std::time::Instant) {
        let Some(session) = self.session.as_mut() else { return };
        // The whole message only at trace: it carries thread ids and correlation tokens.
        trace!(target: "cusaxd::sip::wire", sip = %String::from_utf8_lossy(&message.to_bytes()), "received");
        // A request without what every request must carry gets 400 when it can be answered
        // (it has a Via), else it is dropped (RFC 3261 8.2).
        if status_code(&message.start_line).is_none()
            && let Some(missing) = cusax_protocol::sip::header::missing_essentials(&message)
        {
            if missing != "Via" && !message.start_line.starts_with("ACK ") {
                let reason = format!("Bad Request (no valid {missing})");
                let reply = response_to(&message, 400, &reason, &new_tag(), &session.settings);
                let _ = session.transport.send(&reply).await;
            }
            return;
        }
        if let Some((&id, entry)) = session.calls.iter_mut().find(|(_, e)| e.call.matches(&message)) {
            let outputs = entry.call.on_message(&message, now);
            self.apply_call(id, outputs).await;
            return;
        }
        if status_code(&message.start_line).is_some() {
            if let Some(at) = session.probes.iter().position(|(p, _)| p.matches(&message)) {
                let outputs = session.probes[at].0.on_response(&message, now);
                self.apply_probe(at, outputs).await;
                return;
            }
            let events = session.registration.on_response(&message, now);
            self.apply_registration(events).await;
            return;
        }
        let method = message.start_line.split(' ').next().unwrap_or_default();
        let in_dialog = message
            .header("To")
            .and_then(cusax_protocol::sip::header::NameAddr::parse)
            .is_some_and(|to| to.param("tag").is_some());
        let reply = match method {
            // A new call; a To tag means a dialog we do not have (RFC 3261 12.2.2): 481 below.
            "INVITE" if !in_dialog => return self.incoming(message, now).await,
            "ACK" => return,
            "OPTIONS" if session.options_waiting.len() < MAX_OPTIONS_WAITING => {
                // The hub decides whether the asker learns our JID (cusax-wire OFF-2).
                let asker = CallFacts::read(&message.headers, "From");
                let asker = asker.asserted.unwrap_or(asker.identity);
                let request = self.next_request;
                self.next_request += 1;
                session.options_waiting.insert(request, (message, Instant::now() + OPTIONS_WAIT));
                let _ = self.events.send(HubEvent::OptionsAsked { request, asker });
                return;
            }
            "OPTIONS" => options_response(&message, &session.settings, None),
            _ => response_to(&message, 481, "Call/Transaction Does Not Exist", &new_tag(), &session.settings),
        };
        if let Err(e) = session.transport.send(&reply).await {
            debug!(error = %e, "could not answer a request");
        }
    }

    async fn incoming(&mut self, invite: Normalised, now: std::time::Instant) {
        let Some(session) = self.session.as_mut() else { return };
        // We support no extension a caller could require (RFC 3261 8.2.2.3).
        if let Some(required) = invite.header("Require").filter(|r| !r.trim().is_empty()) {
            let mut refusal = response_to(&invite, 420, "Bad Extension", &new_tag(), &session.settings);
            if let Ok(mut parsed) = cusax_protocol::sip::normalise(&refusal) {
                let at = parsed.headers.len().saturating_sub(1);
                parsed.headers.insert(at, ("Unsupported".to_owned(), required.to_owned()));
                refusal = parsed.to_bytes();
            }
            let _ = session.transport.send(&refusal).await;
            return;
        }
        let live = session.calls.values().filter(|e| e.call.state() != CallState::Ended).count();
        if live >= MAX_CALLS {
            let busy = response_to(&invite, 486, "Busy Here", &new_tag(), &session.settings);
            let _ = session.transport.send(&busy).await;
            return;
        }
        let sockets = match reserve_rtp(session.local_ip, &self.media).await.and_then(|sockets| {
            let address = rtp_address(&sockets)?;
            Ok((sockets, address))
        }) {
            Ok(pair) => pair,
            Err(e) => {
                warn!(error = %e, "no RTP port for an incoming call");
                let busy = response_to(&invite, 503, "Service Unavailable", &new_tag(), &session.settings);
                let _ = session.transport.send(&busy).await;
                return;
            }
        };
        let Some((call, outputs)) =
            Call::incoming(session.settings.clone(), Box::new(OsEntropy), &invite, now)
        else {
            let bad = response_to(&invite, 400, "Bad Request", &new_tag(), &session.settings);
            let _ = session.transport.send(&bad).await;
            return;
        };
        let id = self.next_call;
        self.next_call += 1;
        info!(call = id, "incoming call");
        let facts = CallFacts::read(&invite.headers, "From");
        let _ = self.events.send(HubEvent::CallInvited { id, facts: Box::new(facts) });
        let entry = CallEntry {
            call,
            direction: CallDirection::Incoming,
            rtp_address: sockets.1,
            media: MediaSlot::Reserved(sockets.0),
            muted: false,
            reason: String::new(),
            codecs: self.codecs.clone(),
            origin: new_origin(),
            remote_offer: None,
            held_here: false,
            ended_at: None,
        };
        session.calls.insert(id, entry);
        self.apply_call(id, outputs).await;
    }

    /// The transport is gone (a closed or broken TCP connection, an ICMP error on UDP, a stream
    /// out of step): its calls end, and a new transport and registration follow after a
    /// backoff.
    fn connection_lost(&mut self, reason: String) {
        let Some(mut session) = self.session.take() else { return };
        for (id, entry) in &mut session.calls {
            if entry.call.state() != CallState::Ended {
                entry.reason = "the connection to the proxy was lost".into();
                let info = entry.info(CallState::Ended);
                let _ = self.events.send(HubEvent::Call { id: *id, info });
            }
        }
        let wait = backoff(0, &mut OsEntropy);
        warn!(%reason, retry_in = ?wait, "SIP transport lost");
        self.reopen = Some((session.account, Instant::now() + wait, 1));
        let _ = self.events.send(HubEvent::Sip { state: SipState::Failed, reason });
    }

    async fn on_timer(&mut self) {
        if self.reopen.as_ref().is_some_and(|(_, at, _)| Instant::now() >= *at)
            && let Some((account, _, failures)) = self.reopen.take()
        {
            self.open(account, failures).await;
            return;
        }
        let Some(session) = self.session.as_mut() else { return };
        if session.next_keepalive.is_some_and(|at| Instant::now() >= at) {
            session.next_keepalive = Some(Instant::now() + keepalive_interval());
            if let Err(e) = session.transport.send(b"\r\n\r\n").await {
                return self.connection_lost(format!("keep-alive failed: {e}"));
            }
        }
        let now = std::time::Instant::now();
        let due: Vec<CallId> = session
            .calls
            .iter()
            .filter(|(_, e)| e.call.next_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(entry) = self.session.as_mut().and_then(|s| s.calls.get_mut(&id)) else { continue };
            let outputs = entry.call.on_timeout(now);
            self.apply_call(id, outputs).await;
        }
        let Some(session) = self.session.as_mut() else { return };
        for at in (0..session.probes.len()).rev() {
            let Some(session) = self.session.as_mut() else { return };
            let Some((probe, _)) =
                session.probes.get_mut(at).filter(|(p, _)| p.next_timeout().is_some_and(|t| t <= now))
            else {
                continue;
            };
            let outputs = probe.on_timeout(now);
            self.apply_probe(at, outputs).await;
        }
        let Some(session) = self.session.as_mut() else { return };
        let late: Vec<u64> = session
            .options_waiting
            .iter()
            .filter(|(_, (_, at))| *at <= Instant::now())
            .map(|(r, _)| *r)
            .collect();
        for request in late {
            self.answer_options(request, None).await;
        }
        let Some(session) = self.session.as_mut() else { return };
        // Ended calls are forgotten once late messages can no longer come.
        let now_tokio = Instant::now();
        session.calls.retain(|_, e| e.ended_at.is_none_or(|at| now_tokio < at + ENDED_GRACE));
        let events = session.registration.on_timeout(now);
        self.apply_registration(events).await;
    }

    async fn apply_call(&mut self, id: CallId, outputs: Vec<CallOutput>) {
        for output in outputs {
            let Some(session) = self.session.as_mut() else { return };
            match output {
                CallOutput::Transmit(bytes) => {
                    if let Err(e) = session.transport.send(&bytes).await {
                        return self.connection_lost(format!("cannot send to the proxy: {e}"));
                    }
                }
                CallOutput::RemoteSdp(body) => {
                    let Some(entry) = session.calls.get_mut(&id) else { continue };
                    // An offer while the call still rings here; otherwise an answer to ours.
                    match entry.call.state() {
                        CallState::Incoming => entry.remote_offer = Some(body),
                        _ => match sdp::read_answer(&entry.local_audio(), &body) {
                            Ok(agreed) => {
                                info!(call = id, codec = agreed.codec.name, "media agreed");
                                media_agreed(entry, id, agreed, &self.media, &self.events);
                            }
                            Err(e) => warn!(call = id, error = %e, "unusable SDP answer"),
                        },
                    }
                }
                CallOutput::Reoffer(offer) => {
                    let Some(entry) = session.calls.get_mut(&id) else { continue };
                    let now = std::time::Instant::now();
                    let held_here = entry.held_here;
                    // A session refresh must not undo our own hold.
                    let local = entry.local_audio();
                    let more = if offer.is_empty() {
                        // A re-INVITE without SDP (RFC 3261 14.2): our 200 offers, the ACK answers.
                        let ours = sdp::offer(&mut entry.origin, &local);
                        entry.call.answer_reoffer(ours.into_bytes(), held_here, now)
                    } else {
                        match sdp::answer(&mut entry.origin, &local, &offer) {
                            Ok((answer, agreed)) => {
                                // Held when either side will not send.
                                let held = agreed.direction != Direction::SendRecv;
                                let outputs = entry.call.answer_reoffer(answer.into_bytes(), held, now);
                                media_agreed(entry, id, agreed, &self.media, &self.events);
                                outputs
                            }
                            Err(e) => {
                                warn!(call = id, error = %e, "refusing a re-INVITE");
                                entry.call.refuse_reoffer(now)
                            }
                        }
                    };
                    Box::pin(self.apply_call(id, more)).await;
                }
                CallOutput::Answered(headers) => {
                    let facts = CallFacts::read(&headers, "To");
                    let _ = self.events.send(HubEvent::CallAnswered { id, facts: Box::new(facts) });
                }
                CallOutput::State { state, reason } => {
                    let Some(entry) = session.calls.get_mut(&id) else { continue };
                    if state == CallState::Ended {
                        entry.ended_at = Some(Instant::now());
                        // Dropping the handle stops the media task.
                        entry.media = MediaSlot::Stopped;
                    }
                    info!(call = id, state = state.as_str(), %reason, "call state");
                    entry.reason = reason;
                    let info = entry.info(state);
                    let _ = self.events.send(HubEvent::Call { id, info });
                }
            }
        }
    }

    async fn apply_probe(&mut self, at: usize, outputs: Vec<ProbeOutput>) {
        for output in outputs {
            let Some(session) = self.session.as_mut() else { return };
            match output {
                ProbeOutput::Transmit(bytes) => {
                    if let Err(e) = session.transport.send(&bytes).await {
                        return self.connection_lost(format!("cannot send to the proxy: {e}"));
                    }
                }
                ProbeOutput::Done(impp) if at < session.probes.len() => {
                    let (_, reply) = session.probes.remove(at);
                    let _ = reply.send(Ok(impp));
                }
                ProbeOutput::Done(_) => {}
            }
        }
    }

    /// Asks `target` with OPTIONS who it is on XMPP.
    async fn probe(&mut self, target: &str, reply: ProbeReply) {
        let Some(session) = self
            .session
            .as_mut()
            .filter(|s| matches!(s.registration.state(), RegistrationState::Registered { .. }))
        else {
            let _ = reply.send(Err(CallError::NotRegistered));
            return;
        };
        let uri = match call_target(target, &session.domain) {
            Ok(uri) => uri,
            Err(e) => {
                let _ = reply.send(Err(CallError::InvalidAddress(e.to_string())));
                return;
            }
        };
        if session.probes.len() >= MAX_PROBES {
            let _ = reply.send(Err(CallError::Failed("too many lookups at once".into())));
            return;
        }
        let (probe, outputs) =
            Probe::start(session.settings.clone(), Box::new(OsEntropy), &uri, std::time::Instant::now());
        session.probes.push((probe, reply));
        let at = session.probes.len() - 1;
        self.apply_probe(at, outputs).await;
    }

    /// Answers a waiting OPTIONS; with `impp`, its Call-Info names our JID.
    async fn answer_options(&mut self, request: u64, impp: Option<String>) {
        let Some(session) = self.session.as_mut() else { return };
        let Some((options, _)) = session.options_waiting.remove(&request) else { return };
        let reply = options_response(&options, &session.settings, impp.as_deref());
        if let Err(e) = session.transport.send(&reply).await {
            debug!(error = %e, "could not answer an OPTIONS");
        }
    }

    async fn apply_registration(&mut self, events: Vec<RegistrationEvent>) {
        for event in events {
            match event {
                RegistrationEvent::Transmit(bytes) => {
                    let Some(session) = self.session.as_mut() else { continue };
                    if let Err(e) = session.transport.send(&bytes).await {
                        return self.connection_lost(format!("cannot send to the registrar: {e}"));
                    }
                }
                RegistrationEvent::State(state) => {
                    let gruu = match &state {
                        RegistrationState::Registered { pub_gruu, .. } => pub_gruu.clone(),
                        _ => None,
                    };
                    let _ = self.events.send(HubEvent::Gruu(gruu));
                    let (sip_state, reason) = match &state {
                        RegistrationState::Registering => (SipState::Registering, String::new()),
                        RegistrationState::Registered { expires, pub_gruu } => {
                            info!(expires, gruu = pub_gruu.is_some(), "registered");
                            (SipState::Registered, String::new())
                        }
                        RegistrationState::Failed { reason, retry_in } => {
                            warn!(%reason, retry_in = ?retry_in, "registration failed");
                            (SipState::Failed, reason.clone())
                        }
                        RegistrationState::Unregistered => (SipState::Unregistered, String::new()),
                    };
                    self.report(sip_state, reason).await;
                }
            }
        }
    }
}

/// The next messages of the session's transport; never resolves without a session.
async fn receive(session: &mut Option<Session>) -> std::io::Result<Vec<Normalised>> {
    match session {
        Some(session) => session.transport.receive().await,
        None => std::future::pending().await,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn keepalive_interval() -> Duration {
    let mut byte = [0u8];
    OsEntropy.fill(&mut byte);
    KEEPALIVE_MIN + Duration::from_secs(u64::from(byte[0]) % 26)
}

async fn reserve_rtp(ip: IpAddr, media: &MediaSettings) -> Result<RtpSockets, CallError> {
    RtpSockets::reserve(ip, &media.rtp_ports)
        .await
        .map_err(|e| CallError::Failed(format!("no RTP port: {e}")))
}

fn rtp_address(sockets: &RtpSockets) -> Result<SocketAddr, CallError> {
    sockets.rtp_address().map_err(|e| CallError::Failed(format!("no RTP port: {e}")))
}

fn local_audio(rtp: SocketAddr, codecs: Vec<Codec>) -> LocalAudio {
    LocalAudio { address: rtp.ip(), port: rtp.port(), codecs, direction: Direction::SendRecv }
}

/// Starts the call's media on its reserved ports once offer and answer agree, or hands a
/// later agreement to the running media.
fn media_agreed(
    entry: &mut CallEntry,
    id: CallId,
    agreed: Negotiated,
    settings: &MediaSettings,
    events: &mpsc::UnboundedSender<HubEvent>,
) {
    entry.media = match std::mem::replace(&mut entry.media, MediaSlot::Stopped) {
        MediaSlot::Reserved(sockets) => {
            let config = MediaConfig {
                input: settings.input.clone(),
                output: settings.output.clone(),
                cname: format!("{}@cusaxd", random_hex(&mut OsEntropy, 8)),
                muted: entry.muted,
            };
            MediaSlot::Running(media::start(id, sockets, agreed, config, events.clone()))
        }
        MediaSlot::Running(handle) => {
            handle.update(agreed);
            MediaSlot::Running(handle)
        }
        MediaSlot::Stopped => MediaSlot::Stopped,
    };
}

/// A To tag for a response outside any dialog (RFC 3261 8.2.6.2).
fn new_tag() -> String {
    random_hex(&mut OsEntropy, 8)
}

fn new_origin() -> SdpOrigin {
    let mut bytes = [0u8; 4];
    OsEntropy.fill(&mut bytes);
    SdpOrigin { session_id: u64::from(u32::from_be_bytes(bytes)), version: 0 }
}

/// OPTIONS outside a dialog: what we can do (RFC 3261 section 11.2).
fn options_response(request: &Normalised, settings: &CallSettings, impp: Option<&str>) -> Vec<u8> {
    let plain = response_to(request, 200, "OK", &new_tag(), settings);
    let Ok(mut response) = cusax_protocol::sip::normalise(&plain) else { return plain };
    let at = response.headers.len().saturating_sub(1);
    let extra = [
        ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
        ("Accept", "application/sdp"),
        ("Supported", "gruu, outbound, path"),
    ];
    response.headers.splice(at..at, extra.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
    response.headers.insert(at, ("Contact".to_owned(), format!("<{}>;audio", settings.contact)));
    if let Some(jid) = impp {
        response.headers.insert(at, ("Call-Info".to_owned(), call_info_impp(jid)));
    }
    response.to_bytes()
}

impl Session {
    fn next_timeout(&self) -> Option<Instant> {
        let registration = self.registration.next_timeout().map(Instant::from_std);
        let calls = self.calls.values().filter_map(|e| e.call.next_timeout()).min().map(Instant::from_std);
        let forget = self.calls.values().filter_map(|e| e.ended_at).min().map(|at| at + ENDED_GRACE);
        let probes = self.probes.iter().filter_map(|(p, _)| p.next_timeout()).min().map(Instant::from_std);
        let options = self.options_waiting.values().map(|(_, at)| *at).min();
        let other = earliest(probes, options);
        earliest(earliest(registration, self.next_keepalive), earliest(calls, earliest(forget, other)))
    }

    /// Reads the password, opens the transport and prepares the registration.
    async fn open(
        account: &SipAccount,
        instance: &str,
        extra_ca: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let password = account.password.read().await?;
        let opened = Transport::open(account, extra_ca).await?;
        let local = opened.local;
        let user = account.aor.user().unwrap_or_default().to_owned();
        let host = match local {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        let transport_param = match opened.name {
            "TLS" => ";transport=tls",
            "TCP" => ";transport=tcp",
            _ => "",
        };
        let contact = format!("sip:{user}@{host}:{}{transport_param}", local.port());
        let sent_by = format!("{host}:{}", local.port());
        let auth_user = account.username.clone().unwrap_or_else(|| user.clone());
        let user_agent = format!("cusaxd/{}", crate::VERSION);
        let registrar = match &account.registrar {
            Some(uri) => uri.to_string(),
            None => format!("{}:{}", if account.aor.is_sips() { "sips" } else { "sip" }, account.aor.host()),
        };
        let config = RegistrationConfig {
            aor: account.aor.to_string(),
            registrar,
            auth_user: auth_user.clone(),
            password: password.clone(),
            contact: contact.clone(),
            transport: opened.name.to_owned(),
            sent_by: sent_by.clone(),
            instance: instance.to_owned(),
            expires: REQUESTED_EXPIRY,
            reliability: opened.reliability,
            user_agent: user_agent.clone(),
        };
        let settings = CallSettings {
            local_uri: account.aor.to_string(),
            contact,
            transport: opened.name.to_owned(),
            sent_by,
            reliability: opened.reliability,
            user_agent,
            auth_user,
            password,
        };
        info!(transport = opened.name, contact = %config.contact, "registering");
        let next_keepalive =
            (opened.reliability == Reliability::Reliable).then(|| Instant::now() + keepalive_interval());
        Ok(Self {
            account: account.clone(),
            registration: Registration::new(config, Box::new(OsEntropy)),
            transport: opened.transport,
            next_keepalive,
            settings,
            local_ip: local.ip(),
            domain: account.aor.host(),
            calls: BTreeMap::new(),
            probes: Vec::new(),
            options_waiting: BTreeMap::new(),
        })
    }
}
