//! The SIP actor: owns the SIP transport (UDP or TCP to the outbound proxy or registrar) and
//! drives the sans-I/O [`Registration`] from `cusax-protocol` with real sockets and the real
//! clock. It reports the account's state to the hub as [`HubEvent::Sip`].
//!
//! Calls, TLS and RFC 3263 resolution arrive with the rest of the SIP user agent.

use std::net::SocketAddr;
use std::time::Duration;

use cusax_protocol::sip::header::status_code;
use cusax_protocol::sip::registration::{
    Entropy, Registration, RegistrationConfig, RegistrationEvent, RegistrationState, backoff, instance_urn,
};
use cusax_protocol::sip::transaction::Reliability;
use cusax_protocol::sip::{Frame, Normalised, SipUri, StreamFramer, normalise};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{Secret, SipAccount, SipTransport};
use crate::hub::{HubEvent, SipState};

/// How long we ask the registrar to keep our binding.
const REQUESTED_EXPIRY: u32 = 600;
/// RFC 5626 section 4.4.1: CRLF keep-alives on a stream every 95 to 120 seconds.
const KEEPALIVE_MIN: Duration = Duration::from_secs(95);
/// How long a clean shutdown waits for the registrar to confirm the unREGISTER.
const UNREGISTER_GRACE: Duration = Duration::from_millis(700);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

#[derive(Debug)]
pub enum SipCommand {
    /// Use this account from now on (`None`: no SIP account).
    Configure(Option<Box<SipAccount>>),
    /// Unregister (bounded in time) and stop.
    Shutdown { done: oneshot::Sender<()> },
}

#[derive(Debug, Clone)]
pub struct SipHandle {
    commands: mpsc::Sender<SipCommand>,
}

impl SipHandle {
    pub async fn configure(&self, account: Option<SipAccount>) {
        let _ = self.commands.send(SipCommand::Configure(account.map(Box::new))).await;
    }

    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(SipCommand::Shutdown { done }).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// Starts the SIP actor; it reports to the hub through `events`.
pub fn spawn(events: mpsc::Sender<HubEvent>, instance: String) -> SipHandle {
    let (commands_tx, commands) = mpsc::channel(8);
    let actor = SipActor { events, instance, session: None, reopen: None };
    tokio::spawn(actor.run(commands).instrument(info_span!("sip")));
    SipHandle { commands: commands_tx }
}

struct SipActor {
    events: mpsc::Sender<HubEvent>,
    instance: String,
    session: Option<Session>,
    /// An account whose transport could not be opened yet: when to try again, and how often
    /// it failed.
    reopen: Option<(SipAccount, Instant, u32)>,
}

/// One account's registration over one transport.
struct Session {
    registration: Registration,
    transport: Transport,
    next_keepalive: Option<Instant>,
}

enum Transport {
    Udp { socket: UdpSocket },
    Tcp { stream: TcpStream, framer: StreamFramer },
}

impl Transport {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Udp { socket } => socket.send(bytes).await.map(|_| ()),
            Transport::Tcp { stream, .. } => stream.write_all(bytes).await,
        }
    }

    /// The next messages from the peer. Keep-alive pings are answered here.
    async fn receive(&mut self) -> std::io::Result<Vec<Normalised>> {
        let mut buffer = vec![0u8; 65536];
        match self {
            Transport::Udp { socket } => {
                let n = socket.recv(&mut buffer).await?;
                match normalise(&buffer[..n]) {
                    Ok(message) => Ok(vec![message]),
                    Err(e) => {
                        debug!(error = %e, "dropped an unreadable datagram");
                        Ok(Vec::new())
                    }
                }
            }
            Transport::Tcp { stream, framer } => {
                let n = stream.read(&mut buffer).await?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
                }
                framer.push(&buffer[..n]);
                let mut messages = Vec::new();
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(message))) => messages.push(message),
                        Ok(Some(Frame::Ping)) => stream.write_all(b"\r\n").await?,
                        Ok(Some(Frame::Pong)) => {}
                        Ok(None) => return Ok(messages),
                        Err(e) => {
                            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()));
                        }
                    }
                }
            }
        }
    }
}

impl SipActor {
    async fn run(mut self, mut commands: mpsc::Receiver<SipCommand>) {
        loop {
            let session_wake = self.session.as_ref().and_then(|s| {
                let registration = s.registration.next_timeout().map(Instant::from_std);
                earliest(registration, s.next_keepalive)
            });
            let wake = earliest(session_wake, self.reopen.as_ref().map(|(_, at, _)| *at));
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(SipCommand::Configure(account)) => self.configure(account.map(|a| *a)).await,
                    Some(SipCommand::Shutdown { done }) => {
                        self.stop().await;
                        let _ = done.send(());
                        break;
                    }
                },
                received = receive(&mut self.session) => self.on_received(received).await,
                _ = sleep_until(wake) => self.on_timer().await,
            }
        }
    }

    async fn report(&self, state: SipState, reason: impl Into<String>) {
        let _ = self.events.send(HubEvent::Sip { state, reason: reason.into() }).await;
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
        match Session::open(&account, &self.instance).await {
            Ok(mut session) => {
                let events = session.registration.start(std::time::Instant::now());
                self.session = Some(session);
                self.apply(events).await;
            }
            Err(reason) => {
                let wait = backoff(failures, &mut OsEntropy);
                warn!(%reason, retry_in = ?wait, "SIP account not started");
                self.reopen = Some((account, Instant::now() + wait, failures + 1));
                self.report(SipState::Failed, reason).await;
            }
        }
    }

    /// Unregisters, waiting at most [`UNREGISTER_GRACE`] for the registrar.
    async fn stop(&mut self) {
        let Some(session) = self.session.as_mut() else { return };
        let events = session.registration.unregister(std::time::Instant::now());
        let deadline = Instant::now() + UNREGISTER_GRACE;
        self.apply(events).await;
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

    async fn on_received(&mut self, received: std::io::Result<Vec<Normalised>>) {
        let Some(session) = self.session.as_mut() else { return };
        let now = std::time::Instant::now();
        match received {
            Ok(messages) => {
                let mut events = Vec::new();
                for message in messages {
                    if status_code(&message.start_line).is_some() {
                        events.extend(session.registration.on_response(&message, now));
                    } else if let Err(e) = session.answer_unsupported(&message).await {
                        debug!(error = %e, "could not answer a request");
                    }
                }
                self.apply(events).await;
            }
            Err(e) => {
                warn!(error = %e, "SIP transport failed");
                let events = session.registration.on_transport_error(&e.to_string(), now);
                self.apply(events).await;
            }
        }
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
                warn!(error = %e, "keep-alive failed");
            }
        }
        let events = session.registration.on_timeout(std::time::Instant::now());
        self.apply(events).await;
    }

    async fn apply(&mut self, events: Vec<RegistrationEvent>) {
        for event in events {
            match event {
                RegistrationEvent::Transmit(bytes) => {
                    let Some(session) = self.session.as_mut() else { continue };
                    if let Err(e) = session.transport.send(&bytes).await {
                        warn!(error = %e, "cannot send to the registrar");
                        let more = session
                            .registration
                            .on_transport_error(&e.to_string(), std::time::Instant::now());
                        Box::pin(self.apply(more)).await;
                    }
                }
                RegistrationEvent::State(state) => {
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

impl Session {
    /// Finds the first hop, opens the transport and prepares the registration.
    async fn open(account: &SipAccount, instance: &str) -> Result<Self, String> {
        let password = match &account.password {
            Secret::None => None,
            Secret::Literal(text) => Some(text.clone()),
            Secret::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
                Some(text.trim_end_matches(['\r', '\n']).to_owned())
            }
            Secret::SecretService(_) => {
                return Err(
                    "passwords from the Secret Service are not supported yet; use password_file".into()
                );
            }
        };
        let hop = account.proxy.as_ref().or(account.registrar.as_ref()).unwrap_or(&account.aor);
        let transport = account.transport.or_else(|| uri_transport(hop)).unwrap_or(if hop.is_sips() {
            SipTransport::Tls
        } else {
            SipTransport::Udp
        });
        if transport == SipTransport::Tls {
            return Err("SIP over TLS is not supported yet; use transport = \"udp\" or \"tcp\"".into());
        }
        let peer = resolve(hop).await?;
        let (transport, local, reliability, name) = match transport {
            SipTransport::Udp => {
                let bind = account.listen.unwrap_or_else(|| unspecified(peer));
                let socket =
                    UdpSocket::bind(bind).await.map_err(|e| format!("cannot bind UDP {bind}: {e}"))?;
                socket.connect(peer).await.map_err(|e| format!("cannot reach {peer}: {e}"))?;
                let local = socket.local_addr().map_err(|e| e.to_string())?;
                (Transport::Udp { socket }, local, Reliability::Unreliable, "UDP")
            }
            SipTransport::Tcp | SipTransport::Tls => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
                    .await
                    .map_err(|_| format!("no TCP connection to {peer} within {CONNECT_TIMEOUT:?}"))?
                    .map_err(|e| format!("cannot connect to {peer}: {e}"))?;
                let local = stream.local_addr().map_err(|e| e.to_string())?;
                (Transport::Tcp { stream, framer: StreamFramer::new() }, local, Reliability::Reliable, "TCP")
            }
        };
        let user = account.aor.user().unwrap_or_default().to_owned();
        let host = match local {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        let transport_param = if reliability == Reliability::Reliable { ";transport=tcp" } else { "" };
        let registrar = match &account.registrar {
            Some(uri) => uri.to_string(),
            None => format!("{}:{}", if account.aor.is_sips() { "sips" } else { "sip" }, account.aor.host()),
        };
        let config = RegistrationConfig {
            aor: account.aor.to_string(),
            registrar,
            auth_user: account.username.clone().unwrap_or_else(|| user.clone()),
            password,
            contact: format!("sip:{user}@{host}:{}{transport_param}", local.port()),
            transport: name.to_owned(),
            sent_by: format!("{host}:{}", local.port()),
            instance: instance.to_owned(),
            expires: REQUESTED_EXPIRY,
            reliability,
            user_agent: format!("cusaxd/{}", crate::VERSION),
        };
        info!(%peer, transport = name, contact = %config.contact, "registering");
        let next_keepalive =
            (reliability == Reliability::Reliable).then(|| Instant::now() + keepalive_interval());
        Ok(Self { registration: Registration::new(config, Box::new(OsEntropy)), transport, next_keepalive })
    }

    /// Requests this stage of the user agent does not handle get 501 (RFC 3261 8.2.1).
    async fn answer_unsupported(&mut self, request: &Normalised) -> std::io::Result<()> {
        if request.start_line.starts_with("ACK ") {
            return Ok(());
        }
        let mut response = String::from("SIP/2.0 501 Not Implemented\r\n");
        for (name, value) in &request.headers {
            if ["Via", "From", "To", "Call-ID", "CSeq"].iter().any(|n| n.eq_ignore_ascii_case(name)) {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        response.push_str("Content-Length: 0\r\n\r\n");
        self.transport.send(response.as_bytes()).await
    }
}

fn uri_transport(uri: &SipUri) -> Option<SipTransport> {
    let text = uri.as_str().to_ascii_lowercase();
    let value = text.split(';').find_map(|p| p.strip_prefix("transport="))?;
    match value {
        "udp" => Some(SipTransport::Udp),
        "tcp" => Some(SipTransport::Tcp),
        "tls" => Some(SipTransport::Tls),
        _ => None,
    }
}

fn unspecified(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// The first hop's address: an IP literal as it is, a name through the system resolver
/// (A/AAAA). The default port is 5060 (5061 for sips).
async fn resolve(uri: &SipUri) -> Result<SocketAddr, String> {
    let port = uri.port().unwrap_or(if uri.is_sips() { 5061 } else { 5060 });
    let host = uri.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {bare}: {e}"))?
        .next()
        .ok_or_else(|| format!("{bare} has no address"))
}
