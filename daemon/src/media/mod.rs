//! The media engine: one task per call that carries the call's audio over RTP.
//!
//! The SIP actor reserves a call's port pair ([`RtpSockets::reserve`]) for its SDP, and once
//! offer and answer agree it [`start`]s a media task with what was agreed. It passes on later
//! agreements (re-INVITEs, hold), mute and DTMF through the [`MediaHandle`], and drops the
//! handle when the call ends, which ends the task (with an RTCP BYE).
//!
//! One 20 ms media clock ([`MediaClock`]) paces the task: each frame reads 20 ms from the
//! source and sends it (or a telephone-event packet while a digit plays), and plays 20 ms
//! from the jitter buffer to the sink. Nothing else paces the send path, so a file source or
//! a device that delivers samples too fast or too slow cannot change the packet rate. What the task
//! measures reaches the hub as [`HubEvent::Media`] at most once a second; received digits as
//! [`HubEvent::Dtmf`].
//!
//! - [`codec`]: G.711 and Opus behind one encoder and one decoder.
//! - [`audio`]: sources and sinks (a device, a WAV file, nothing) and rate conversion.
//! - [`device`]: cpal streams on a thread of their own.
//! - [`rtp`]: the port pair, RTP packets, RTCP reports.
//!
//! The pure pieces (G.711, RFC 4733 events, the jitter buffer, reception statistics) are in
//! `cusax_protocol::media`.

mod audio;
mod codec;
mod device;
mod rtp;

use std::net::SocketAddr;
use std::time::Duration;

use cusax_protocol::media::dtmf::{DtmfReceiver, DtmfSender};
use cusax_protocol::media::jitter::{JitterBuffer, JitterConfig, Playout};
use cusax_protocol::media::stats::{PacketVerdict, ReceiveStats, round_trip};
use cusax_protocol::sdp::{Codec, Direction, Negotiated};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

pub use rtp::RtpSockets;

use crate::config::AudioEndpoint;
use crate::hub::HubEvent;
use crate::sip::{CallError, CallId, OsEntropy};
use audio::{Sink, Source};
use codec::{Decoder, Encoder};
use cusax_protocol::sip::registration::Entropy;

/// The packet time we send and expect (and offer as `a=ptime:20`).
const FRAME: Duration = Duration::from_millis(20);
/// RFC 3550 section 6.2: a report every 5 s on average for a two-party call.
const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// MediaStats reach D-Bus at most this often.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// The largest datagram we read: anything larger is not audio we negotiated.
const MAX_DATAGRAM: usize = 2048;
/// Symmetric RTP moves to a new source address only after the current one has been silent
/// this long and the new one sent this many packets in a row: a stranger guessing our port
/// cannot take the stream over (strict RTP, as Asterisk's `strictrtp`).
const SOURCE_SILENT: Duration = Duration::from_secs(1);
const SOURCE_PROBATION: u32 = 5;
/// A frame due this soon after a packet arrives is done in the same wakeup.
const MERGE_EARLY: Duration = Duration::from_millis(5);
/// Frames are scheduled this long after the peer's packets are expected.
const ALIGN_LAG: Duration = Duration::from_millis(2);
/// After this many packets in a row that could not share a wakeup with a frame (the peer's
/// clock drifted against ours), the schedule moves its phase again.
const REALIGN_AFTER: u32 = 25;
/// A task that fell this many frames behind (a stalled runtime) skips ahead instead of
/// bursting them all out.
const MAX_CATCH_UP: u32 = 10;

/// What a call's media is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaState {
    /// No media: not yet (ringing), not at all (the peer declined the stream), or no more
    /// (the call ended).
    #[default]
    None,
    Active,
    /// A device or file could not be used; the call stays up, with silence for that part.
    Failed,
}

impl MediaState {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaState::None => "none",
            MediaState::Active => "active",
            MediaState::Failed => "failed",
        }
    }
}

/// What the D-Bus call object shows of the media.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallMedia {
    pub state: MediaState,
    /// Why the media failed, for people; empty otherwise.
    pub reason: String,
    pub stats: MediaStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaStats {
    pub codec: String,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    /// Packets that came after their turn to play (dropped by the jitter buffer).
    pub packets_late: u64,
    /// Frames played from concealment (Opus FEC or PLC, G.711 repetition).
    pub frames_concealed: u64,
    pub jitter_ms: u32,
    pub buffer_ms: u32,
    /// From RTCP, once the peer has reported on our stream.
    pub rtt_ms: Option<u32>,
}

/// What the media task needs beyond the agreed SDP.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub input: AudioEndpoint,
    pub output: AudioEndpoint,
    /// Our RTCP CNAME (RFC 7022: random per session is fine and leaks nothing).
    pub cname: String,
    pub muted: bool,
}

#[derive(Debug)]
enum MediaCommand {
    Update(Negotiated),
    Mute(bool),
    SendDtmf { digits: String, reply: oneshot::Sender<Result<(), CallError>> },
}

/// The SIP actor's hold on a call's media; dropping it stops the media.
#[derive(Debug)]
pub struct MediaHandle {
    commands: mpsc::UnboundedSender<MediaCommand>,
}

impl MediaHandle {
    /// A new agreement (a re-INVITE, hold or resume).
    pub fn update(&self, agreed: Negotiated) {
        let _ = self.commands.send(MediaCommand::Update(agreed));
    }

    pub fn mute(&self, muted: bool) {
        let _ = self.commands.send(MediaCommand::Mute(muted));
    }

    /// Queues digits (0-9, *, #, A-D) as RFC 4733 events; the media task answers `reply`
    /// itself, so that nobody waits on it while it opens a device.
    pub fn send_dtmf(&self, digits: String, reply: oneshot::Sender<Result<(), CallError>>) {
        if let Err(mpsc::error::SendError(MediaCommand::SendDtmf { reply, .. })) =
            self.commands.send(MediaCommand::SendDtmf { digits, reply })
        {
            let _ = reply.send(Err(CallError::Failed("the call's media has stopped".into())));
        }
    }
}

/// Starts the media of call `id` on its reserved sockets.
pub fn start(
    id: CallId,
    sockets: RtpSockets,
    agreed: Negotiated,
    config: MediaConfig,
    events: mpsc::UnboundedSender<HubEvent>,
) -> MediaHandle {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let span = info_span!("media", call = id);
    tokio::spawn(
        async move {
            let (failures_tx, failures) = mpsc::unbounded_channel();
            let pipeline = Pipeline::open(&agreed, &config, failures_tx.clone()).await;
            let mut session = MediaSession::new(id, sockets, agreed, config, events, pipeline, failures_tx);
            session.run(commands, failures).await;
        }
        .instrument(span),
    );
    MediaHandle { commands: commands_tx }
}

/// Two agreements use the same codec when its name and clock match: a peer may renumber
/// the payload type in a session refresh.
fn same_codec(a: &Codec, b: &Codec) -> bool {
    a.name.eq_ignore_ascii_case(b.name) && a.clock_rate == b.clock_rate
}

/// The part of a call's media that depends on the codec's clock: rebuilt when a re-INVITE
/// changes the codec (source and sink only when the rate changes too).
struct Pipeline {
    codec: Codec,
    /// Samples per frame at the codec's rate.
    frame: usize,
    encoder: Option<Encoder>,
    decoder: Option<Decoder>,
    source: Source,
    sink: Sink,
    jitter: JitterBuffer,
    reception: ReceiveStats,
    dtmf_out: DtmfSender,
    dtmf_in: DtmfReceiver,
    /// Why a part could not be opened.
    failure: Option<String>,
}

impl Pipeline {
    async fn open(
        agreed: &Negotiated,
        config: &MediaConfig,
        failures: mpsc::UnboundedSender<String>,
    ) -> Pipeline {
        let rate = agreed.codec.clock_rate;
        let mut failure = None;
        let source = Source::open(&config.input, rate, failures.clone()).await.unwrap_or_else(|e| {
            warn!(error = %e, "no audio source; sending silence");
            failure.get_or_insert(e.to_string());
            Source::Null
        });
        let sink = Sink::open(&config.output, rate, failures).await.unwrap_or_else(|e| {
            warn!(error = %e, "no audio sink; the far end is not played");
            failure.get_or_insert(e.to_string());
            Sink::Null
        });
        let mut pipeline = Pipeline {
            codec: agreed.codec,
            frame: (rate / 50) as usize,
            encoder: None,
            decoder: None,
            source,
            sink,
            jitter: JitterBuffer::new(JitterConfig::new(rate)),
            reception: ReceiveStats::new(rate),
            dtmf_out: DtmfSender::new(agreed.dtmf_clock_rate, FRAME.as_millis() as u32),
            dtmf_in: DtmfReceiver::new(),
            failure,
        };
        pipeline.new_codec(agreed);
        pipeline
    }

    /// Codec state for `agreed`'s codec at the same clock rate.
    fn new_codec(&mut self, agreed: &Negotiated) {
        let codec = &agreed.codec;
        self.codec = *codec;
        (self.encoder, self.decoder) = match (Encoder::new(codec), Decoder::new(codec)) {
            (Ok(e), Ok(d)) => (Some(e), Some(d)),
            (Err(e), _) | (_, Err(e)) => {
                self.failure.get_or_insert(e.to_string());
                (None, None)
            }
        };
        self.jitter.reset();
        self.dtmf_in.reset();
        // Durations count in the events' own clock (RFC 4733 section 2.5.1.3).
        self.dtmf_out = DtmfSender::new(agreed.dtmf_clock_rate, FRAME.as_millis() as u32);
    }
}

/// When frames fall due. The schedule is fixed, one frame every 20 ms, so the packet rate
/// never depends on when packets arrive; but a frame due within `MERGE_EARLY` of a packet's
/// arrival is done right then, and the schedule's phase is set (and reset when the peer's
/// clock drifts) to fall just after the peer's packets. A call with a steady peer then wakes
/// once per frame instead of twice (BENCHMARKS.md: context switches per second).
#[derive(Debug)]
struct MediaClock {
    next: Instant,
    unmerged: u32,
}

impl MediaClock {
    fn new(now: Instant) -> Self {
        Self { next: now, unmerged: REALIGN_AFTER }
    }

    fn due(&self) -> Instant {
        self.next
    }

    /// The due frame was done.
    fn advance(&mut self) {
        self.next += FRAME;
    }

    /// A packet arrived at `now`: whether to do the due frame now.
    fn on_arrival(&mut self, now: Instant) -> bool {
        if self.next <= now {
            // Overdue: the timer is about to fire anyway.
            return false;
        }
        if self.next - now <= MERGE_EARLY {
            self.unmerged = 0;
            return true;
        }
        self.unmerged += 1;
        if self.unmerged < REALIGN_AFTER {
            return false;
        }
        // This frame goes out early (once), and the next ones just after the peer's packets.
        self.unmerged = 0;
        self.next = now + ALIGN_LAG;
        true
    }

    /// After a stall, frames more than `MAX_CATCH_UP` behind are skipped.
    fn catch_up(&mut self, now: Instant) {
        if now.saturating_duration_since(self.next) > FRAME * MAX_CATCH_UP {
            self.next = now;
        }
    }
}

/// The peer's media source we follow, and one that would replace it.
#[derive(Debug, Default)]
struct PeerSource {
    current: Option<(SocketAddr, u32)>,
    /// When the current source last sent.
    heard: Duration,
    /// A different address sending: how many packets in a row.
    candidate: Option<(SocketAddr, u32)>,
}

impl PeerSource {
    /// Whether a packet from `from` with `ssrc` is the peer's; `true` means it is (and
    /// tells the caller to send there from now on when it is new).
    fn accept(&mut self, from: SocketAddr, ssrc: u32, now: Duration) -> bool {
        match self.current {
            Some((address, _)) if address == from => {
                // The same address with a new SSRC is the peer restarting its stream.
                self.current = Some((from, ssrc));
                self.heard = now;
                self.candidate = None;
                true
            }
            Some(_) if now.saturating_sub(self.heard) < SOURCE_SILENT => false,
            Some(_) => {
                let count = match self.candidate {
                    Some((address, count)) if address == from => count + 1,
                    _ => 1,
                };
                self.candidate = Some((from, count));
                if count < SOURCE_PROBATION {
                    return false;
                }
                debug!(%from, "RTP peer moved");
                self.current = Some((from, ssrc));
                self.heard = now;
                self.candidate = None;
                true
            }
            None => {
                self.current = Some((from, ssrc));
                self.heard = now;
                true
            }
        }
    }
}

struct MediaSession {
    call: CallId,
    events: mpsc::UnboundedSender<HubEvent>,
    config: MediaConfig,
    sockets: RtpSockets,
    agreed: Negotiated,
    pipeline: Pipeline,
    failures: mpsc::UnboundedSender<String>,
    sender: rtp::RtpSender,
    /// Where we send RTP and RTCP: from the SDP, then where the peer's packets come from
    /// (symmetric RTP, RFC 4961), under `PeerSource`'s rules.
    remote: Option<SocketAddr>,
    remote_rtcp: Option<SocketAddr>,
    peer: PeerSource,
    timestamp: u32,
    /// The next audio packet starts a talk spurt (RFC 3551 section 4.1: marker bit).
    spurt: bool,
    started: Instant,
    clock: MediaClock,
    next_rtcp: Instant,
    next_stats: Instant,
    rtt: Option<Duration>,
    muted: bool,
    status: CallMedia,
    /// The peer sends packets longer than our 20 ms frames; said once.
    warned_ptime: bool,
    /// Scratch buffers, reused every frame.
    pcm: Vec<i16>,
    encoded: Vec<u8>,
}

impl MediaSession {
    fn new(
        call: CallId,
        sockets: RtpSockets,
        agreed: Negotiated,
        config: MediaConfig,
        events: mpsc::UnboundedSender<HubEvent>,
        pipeline: Pipeline,
        failures: mpsc::UnboundedSender<String>,
    ) -> Self {
        let mut bytes = [0u8; 4];
        OsEntropy.fill(&mut bytes);
        let now = Instant::now();
        let mut session = Self {
            call,
            events,
            muted: config.muted,
            config,
            remote: agreed.remote,
            remote_rtcp: rtcp_address(&agreed),
            peer: PeerSource::default(),
            sockets,
            agreed,
            pipeline,
            failures,
            sender: rtp::RtpSender::new(),
            timestamp: u32::from_be_bytes(bytes),
            spurt: true,
            started: now,
            clock: MediaClock::new(now),
            next_rtcp: now + RTCP_INTERVAL / 2,
            next_stats: now + STATS_INTERVAL,
            rtt: None,
            status: CallMedia::default(),
            warned_ptime: false,
            pcm: Vec::new(),
            encoded: Vec::new(),
        };
        session.status_from_pipeline();
        session
    }

    fn status_from_pipeline(&mut self) {
        self.status.state =
            if self.pipeline.failure.is_some() { MediaState::Failed } else { MediaState::Active };
        self.status.reason = self.pipeline.failure.clone().unwrap_or_default();
    }

    async fn run(
        &mut self,
        mut commands: mpsc::UnboundedReceiver<MediaCommand>,
        mut failures: mpsc::UnboundedReceiver<String>,
    ) {
        info!(codec = self.pipeline.codec.name, remote = ?self.remote, rtcp_mux = self.agreed.rtcp_mux, "media started");
        self.discard_backlog();
        self.publish();
        let mut rtp_buffer = vec![0u8; MAX_DATAGRAM];
        let mut rtcp_buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(command) => self.on_command(command).await,
                },
                received = self.sockets.rtp.recv_from(&mut rtp_buffer) => {
                    if let Ok((len, from)) = received {
                        self.on_datagram(&rtp_buffer[..len], from);
                        if self.clock.on_arrival(Instant::now()) {
                            self.frame().await;
                        }
                    }
                }
                received = self.sockets.rtcp.recv_from(&mut rtcp_buffer) => {
                    if let Ok((len, from)) = received {
                        self.on_rtcp(&rtcp_buffer[..len], from);
                    }
                }
                Some(reason) = failures.recv() => {
                    warn!(%reason, "audio device failed");
                    self.status.state = MediaState::Failed;
                    self.status.reason = reason;
                    self.publish();
                }
                _ = tokio::time::sleep_until(self.clock.due()) => {
                    self.clock.catch_up(Instant::now());
                    while self.clock.due() <= Instant::now() {
                        self.frame().await;
                    }
                }
            }
        }
        self.send_rtcp(true).await;
        std::mem::replace(&mut self.pipeline.sink, Sink::Null).close();
        self.status.state = MediaState::None;
        self.status.reason.clear();
        self.publish();
        info!(sent = self.sender.packets, received = self.pipeline.reception.received(), "media stopped");
    }

    async fn on_command(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::Update(agreed) => self.update(agreed).await,
            MediaCommand::Mute(muted) => self.muted = muted,
            MediaCommand::SendDtmf { digits, reply } => {
                let result = if self.agreed.dtmf_payload_type.is_none() {
                    Err("the peer did not agree to telephone-event (RFC 4733)".to_owned())
                } else if self.agreed.direction != Direction::SendRecv {
                    Err("the call is on hold".to_owned())
                } else {
                    self.pipeline.dtmf_out.queue(&digits).map_err(|e| e.to_string())
                };
                let _ = reply.send(result.map_err(CallError::Failed));
            }
        }
    }

    async fn update(&mut self, agreed: Negotiated) {
        if agreed.remote != self.agreed.remote || agreed.rtcp_mux != self.agreed.rtcp_mux {
            self.remote = agreed.remote;
            self.remote_rtcp = rtcp_address(&agreed);
            self.peer = PeerSource::default();
        }
        if agreed.direction != Direction::SendRecv {
            // Digits queued for a call that goes on hold would play, stale, after resume.
            self.pipeline.dtmf_out = DtmfSender::new(agreed.dtmf_clock_rate, FRAME.as_millis() as u32);
        }
        let rate_changed = agreed.codec.clock_rate != self.pipeline.codec.clock_rate;
        if rate_changed {
            info!(codec = agreed.codec.name, "codec changed; reopening audio at its rate");
            std::mem::replace(&mut self.pipeline.sink, Sink::Null).close();
            self.pipeline.source = Source::Null;
            self.pipeline = Pipeline::open(&agreed, &self.config, self.failures.clone()).await;
            // A new clock rate is a new RTP stream (RFC 3550 section 5.1).
            self.sender = rtp::RtpSender::new();
            self.discard_backlog();
            self.clock = MediaClock::new(Instant::now());
            self.status_from_pipeline();
        } else if !same_codec(&agreed.codec, &self.pipeline.codec) {
            info!(codec = agreed.codec.name, "codec changed");
            self.pipeline.new_codec(&agreed);
            self.status_from_pipeline();
        } else {
            self.pipeline.codec.payload_type = agreed.codec.payload_type;
        }
        self.agreed = agreed;
        self.spurt = true;
        self.publish();
    }

    /// Packets that queued up while a device or file opened are stale: played now they would
    /// only add delay, and teach the jitter buffer a jitter that was never on the network.
    fn discard_backlog(&self) {
        let mut buffer = [0u8; MAX_DATAGRAM];
        for socket in [&self.sockets.rtp, &self.sockets.rtcp] {
            while socket.try_recv_from(&mut buffer).is_ok() {}
        }
    }

    fn sends(&self) -> bool {
        matches!(self.agreed.direction, Direction::SendRecv | Direction::SendOnly)
    }

    fn plays(&self) -> bool {
        matches!(self.agreed.direction, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The due frame, and the reports that fell due with it.
    async fn frame(&mut self) {
        self.clock.advance();
        self.on_frame().await;
        let now = Instant::now();
        if now >= self.next_rtcp {
            self.send_rtcp(false).await;
            self.next_rtcp = now + rtcp_interval();
        }
        if now >= self.next_stats {
            self.publish();
            self.next_stats = now + STATS_INTERVAL;
        }
    }

    /// One frame: send 20 ms, play 20 ms.
    async fn on_frame(&mut self) {
        let frame = self.pipeline.frame;
        let timestamp = self.timestamp;
        self.timestamp = timestamp.wrapping_add(frame as u32);
        self.pcm.resize(frame, 0);
        // The source is read every tick, sending or not, so that a file plays in real time
        // and a device's ring does not fill up.
        self.pipeline.source.read(&mut self.pcm);
        if let (true, Some(remote)) = (self.sends(), self.remote) {
            let event = self.pipeline.dtmf_out.next(timestamp);
            let packet = match (event, self.agreed.dtmf_payload_type) {
                (Some(event), Some(pt)) => {
                    self.spurt = true;
                    Some(self.sender.packet(pt, event.marker, event.timestamp, &event.payload))
                }
                _ => self.audio_packet(timestamp),
            };
            if let Some(packet) = packet
                && let Err(e) = self.sockets.rtp.send_to(&packet, remote).await
            {
                debug!(error = %e, "RTP not sent");
            }
        }
        self.play_frame();
    }

    fn play_frame(&mut self) {
        let frame = self.pipeline.frame;
        let playout = self.pipeline.jitter.pop(self.started.elapsed());
        let Some(decoder) = self.pipeline.decoder.as_mut() else { return };
        match playout {
            Playout::Frame(payload) => {
                if decoder.decode(&payload, &mut self.pcm).is_err() {
                    decoder.conceal(None, frame, &mut self.pcm);
                }
            }
            Playout::Conceal => decoder.conceal(self.pipeline.jitter.next_payload(), frame, &mut self.pcm),
            Playout::Silence => self.pcm.clear(),
        }
        if self.pcm.len() > frame && !self.warned_ptime {
            self.warned_ptime = true;
            warn!(
                samples = self.pcm.len(),
                frame, "the peer sends packets longer than 20 ms; playing 20 ms of each"
            );
        }
        // The sink runs on our clock: one frame per tick, whatever the peer's packet time.
        self.pcm.resize(frame, 0);
        if !self.plays() {
            self.pcm.fill(0);
        }
        if let Err(e) = self.pipeline.sink.write(&self.pcm) {
            warn!(error = %e, "audio sink failed");
            self.status.state = MediaState::Failed;
            self.status.reason = e.to_string();
        }
    }

    fn audio_packet(&mut self, timestamp: u32) -> Option<Vec<u8>> {
        // On hold (we send, they do not) the far end gets silence, not our microphone.
        if self.muted || self.agreed.direction == Direction::SendOnly {
            self.pcm.fill(0);
        }
        let encoder = self.pipeline.encoder.as_mut()?;
        if let Err(e) = encoder.encode(&self.pcm, &mut self.encoded) {
            debug!(error = %e, "frame not encoded");
            return None;
        }
        let marker = std::mem::take(&mut self.spurt);
        Some(self.sender.audio_packet(self.pipeline.codec.payload_type, marker, timestamp, &self.encoded))
    }

    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        if rtp::is_rtcp(datagram) {
            return self.on_rtcp(datagram, from);
        }
        let Some(packet) = rtp::parse_rtp(datagram) else { return };
        let pt = packet.header.payload_type;
        let is_dtmf = Some(pt) == self.agreed.dtmf_payload_type;
        if pt != self.pipeline.codec.payload_type && !is_dtmf {
            return;
        }
        let now = self.started.elapsed();
        let header = &packet.header;
        if !self.peer.accept(from, header.ssrc, now) {
            return;
        }
        if self.remote != Some(from) {
            self.remote = Some(from);
            if self.agreed.rtcp_mux {
                self.remote_rtcp = Some(from);
            }
        }
        let verdict = if is_dtmf {
            self.pipeline.reception.on_untimed_packet(header.ssrc, header.sequence_number)
        } else {
            self.pipeline.reception.on_packet(header.ssrc, header.sequence_number, header.timestamp, now)
        };
        match verdict {
            PacketVerdict::Duplicate => return,
            PacketVerdict::SourceChanged => {
                debug!("new RTP source");
                self.pipeline.jitter.reset();
                self.pipeline.dtmf_in.reset();
            }
            PacketVerdict::New | PacketVerdict::Probation => {}
        }
        if is_dtmf {
            if let Ok(Some(digit)) = self.pipeline.dtmf_in.on_packet(header.timestamp, &packet.payload)
                && self.plays()
            {
                // Digits may be PINs: never above debug.
                debug!(%digit, "DTMF received");
                let _ = self.events.send(HubEvent::Dtmf { id: self.call, digit });
            }
            return;
        }
        self.pipeline.jitter.push(now, header.sequence_number, header.timestamp, packet.payload.to_vec());
    }

    fn on_rtcp(&mut self, datagram: &[u8], from: SocketAddr) {
        if !rtp::is_rtcp(datagram) {
            return;
        }
        // Reports count only from the peer we follow, about the source we follow.
        let Some((peer, ssrc)) = self.peer.current else { return };
        if from.ip() != peer.ip() {
            return;
        }
        let reading = rtp::read_rtcp(datagram, self.sender.ssrc);
        if reading.sender != Some(ssrc) {
            return;
        }
        if !self.agreed.rtcp_mux {
            self.remote_rtcp = Some(from);
        }
        let now = self.started.elapsed();
        if let Some(lsr) = reading.sender_report {
            self.pipeline.reception.on_sender_report(lsr, now);
        }
        if let Some(block) = reading.about_us
            && let Some(rtt) = round_trip(rtp::ntp_now_middle32(), block.last_sender_report, block.delay)
        {
            self.rtt = Some(rtt);
        }
    }

    async fn send_rtcp(&mut self, bye: bool) {
        let Some(to) = self.remote_rtcp else { return };
        let block = self.pipeline.reception.report_block(self.started.elapsed());
        let packet =
            self.sender.compound_report(block, &self.config.cname, self.pipeline.codec.clock_rate, bye);
        let socket = if self.agreed.rtcp_mux { &self.sockets.rtp } else { &self.sockets.rtcp };
        if let Err(e) = socket.send_to(&packet, to).await {
            debug!(error = %e, "RTCP not sent");
        }
    }

    /// Tells the hub what the media is doing (the hub drops what did not change).
    fn publish(&mut self) {
        let reception = &self.pipeline.reception;
        let jitter = self.pipeline.jitter.stats();
        self.status.stats = MediaStats {
            codec: self.pipeline.codec.name.to_owned(),
            packets_sent: u64::from(self.sender.packets),
            packets_received: reception.received(),
            packets_lost: u64::try_from(reception.cumulative_lost()).unwrap_or(0),
            packets_late: jitter.late,
            frames_concealed: jitter.concealed,
            jitter_ms: reception.jitter_ms().round() as u32,
            buffer_ms: jitter.target_delay_ms,
            rtt_ms: self.rtt.map(|d| d.as_millis() as u32),
        };
        let _ = self.events.send(HubEvent::Media { id: self.call, media: self.status.clone() });
    }
}

/// Where the peer wants RTCP: its RTP address with rtcp-mux, else the `a=rtcp` port or the
/// RTP port + 1 (RFC 3605, RFC 3550 section 11).
fn rtcp_address(agreed: &Negotiated) -> Option<SocketAddr> {
    let remote = agreed.remote?;
    if agreed.rtcp_mux {
        return Some(remote);
    }
    agreed.remote_rtcp.or_else(|| Some(SocketAddr::new(remote.ip(), remote.port().checked_add(1)?)))
}

/// RFC 3550 section 6.3.1: the interval is randomised to between 0.5 and 1.5 times the
/// nominal one, so reports of many parties do not synchronise.
fn rtcp_interval() -> Duration {
    let mut byte = [0u8];
    OsEntropy.fill(&mut byte);
    RTCP_INTERVAL / 2 + RTCP_INTERVAL * u32::from(byte[0]) / 255
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn frames_share_wakeups_with_a_steady_peers_packets_without_changing_the_rate() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut clock = MediaClock::new(start);
        let mut frames = 0;
        let mut merged = 0;
        // The peer's packets arrive every 20 ms at an offset of 7 ms from our first frame.
        for n in 0..500u32 {
            let arrival = start + ms(7) + FRAME * n;
            // Frames the timer would do before this arrival.
            while clock.due() < arrival {
                clock.advance();
                frames += 1;
            }
            if clock.on_arrival(arrival) {
                clock.advance();
                frames += 1;
                merged += 1;
            }
        }
        // All but the first few arrivals share their wakeup with a frame, and the frame rate
        // is the media clock's (500 frames in 10 s, give or take the one moved).
        assert!(merged >= 495, "{merged}");
        assert!((499..=501).contains(&frames), "{frames}");
        // A stall skips ahead rather than bursting.
        let late = clock.due() + FRAME * 50;
        clock.catch_up(late);
        assert_eq!(clock.due(), late);
    }

    #[test]
    fn a_stranger_cannot_take_the_stream_over() {
        let mut peer = PeerSource::default();
        let ms = Duration::from_millis;
        assert!(peer.accept(at(4000), 1, ms(0)));
        // Packets from elsewhere while the peer talks are dropped, however many.
        for i in 0..50 {
            assert!(!peer.accept(at(6666), 9, ms(10 + i * 20)));
            assert!(peer.accept(at(4000), 1, ms(20 + i * 20)));
        }
        // The peer restarting its stream on the same address is fine.
        assert!(peer.accept(at(4000), 2, ms(1_100)));
        // The peer falls silent (it moved behind a NAT): a new address takes over only after
        // a run of packets.
        let quiet = ms(1_100) + SOURCE_SILENT;
        for i in 0..SOURCE_PROBATION - 1 {
            assert!(!peer.accept(at(5000), 3, quiet + ms(u64::from(i) * 20)));
        }
        assert!(peer.accept(at(5000), 3, quiet + ms(100)));
        assert!(!peer.accept(at(4000), 2, quiet + ms(120)));
    }
}
