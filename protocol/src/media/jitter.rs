//! An adaptive playout (jitter) buffer for one received audio stream, pure and driven by
//! explicit time: the media loop pushes packets as they arrive and pops one frame every
//! `frame_ms` from its playout clock.
//!
//! Playout follows the RTP timestamps (RFC 3550 section 5.1), not the arrival order: a cursor
//! on the media timeline says which frame is due, and each pop plays the packet whose
//! timestamp falls in the cursor's frame, then moves the cursor on by one frame. Timestamps
//! are unwrapped into a 64-bit timeline through their wrapping difference to a nearby point,
//! so a stream crossing 2^32 (and sequence 65535) needs no special case. The sequence number
//! only helps recognise a source that restarted its timestamps.
//!
//! How long packets wait adapts to the network. The buffer measures each packet's transit
//! (arrival time minus media time), takes the spread between the fastest transit and the 95th
//! percentile over the last two seconds (the variation RFC 3550 section 6.4.1 calls jitter,
//! but as a high percentile rather than a mean, because one late packet costs a gap), lets
//! that estimate rise at once and decay with a one-second half-life, and aims at
//! `1.5 * estimate + one frame`, rounded up to whole frames. The delay it compares with that
//! target is how long the frame due now has been waited for beyond the fastest recent packet
//! (the buffer's fill level would do, but it swings by the jitter itself from one pop to the
//! next, which made the buffer alternate between growing and shrinking). The delay moves one
//! frame at a time: a missing frame while the delay is short of the target is concealed
//! without moving the cursor (an underrun: the delay grows by that frame), a missing frame
//! beyond it is skipped as lost, and a delay two frames over the target drops the oldest frame.
//!
//! Simplification: every packet is taken as one frame of `frame_ms`, so `frame_ms` must match
//! the peer's packetisation (its `ptime`); longer packets play as one frame followed by
//! concealment, and two packets within one frame play only the first.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// After this many concealed frames in a row with nothing buffered, the stream is taken as
/// stopped (silence suppression, hold, a dead peer) and the buffer returns silence.
pub const IDLE_AFTER_CONCEALS: u32 = 10;
/// After this many late packets in a row the source is taken to have jumped back in time
/// (a restart), and playout starts over from the next packet.
pub const LATE_RESTART: u32 = 8;
/// Whatever the configuration, no more packets than this are held.
pub const MAX_CAPACITY: usize = 4096;

/// How far back transits are looked at to estimate the jitter.
const ESTIMATE_WINDOW: Duration = Duration::from_secs(2);
/// Bounds the transit window even if a peer floods it.
const ESTIMATE_SAMPLES: usize = 512;
/// Which transit percentile sets the spread: the 95th ignores a rare straggler.
const ESTIMATE_PERCENTILE: usize = 95;
/// The estimate halves every this many seconds once the jitter is gone.
const DECAY_HALF_LIFE_S: f64 = 1.0;
/// The target is this many times the estimated jitter, plus one frame.
const TARGET_FACTOR: f64 = 1.5;
/// How many played timestamps are kept to recognise duplicates of them.
const RECENTLY_PLAYED: usize = 64;

/// The buffer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterConfig {
    /// The RTP clock rate of the stream, in Hz.
    pub clock_rate: u32,
    /// The length of one packet and of one pop, in milliseconds.
    pub frame_ms: u32,
    /// The target delay never goes below this.
    pub min_delay_ms: u32,
    /// The target delay never goes above this; a timestamp jump beyond it resynchronises.
    pub max_delay_ms: u32,
    /// At most this many packets are buffered (capped at `MAX_CAPACITY`).
    pub capacity: usize,
}

impl JitterConfig {
    /// 20 ms frames, a target between 20 and 500 ms, room for 100 frames (2 s).
    pub fn new(clock_rate: u32) -> JitterConfig {
        JitterConfig { clock_rate, frame_ms: 20, min_delay_ms: 20, max_delay_ms: 500, capacity: 100 }
    }
}

/// What became of a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered for playout.
    Accepted,
    /// Its frame has already been played or concealed: dropped.
    Late,
    /// Its timestamp is buffered or was just played: dropped.
    Duplicate,
    /// The buffer is full: dropped.
    Overflow,
}

/// What to play for one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The payload due now, to decode.
    Frame(Vec<u8>),
    /// The frame due now is missing (lost or late) while the stream runs: run the decoder's
    /// packet loss concealment.
    Conceal,
    /// Nothing to play: the stream has not started (or restarted) or has stopped.
    Silence,
}

/// Counters and the current delay, for logs and call statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// The delay the buffer aims at.
    pub target_delay_ms: u32,
    /// The media time from the playout cursor to the end of the newest buffered packet.
    pub buffered_ms: u32,
    /// Frames played.
    pub played: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Packets that came after their frame was played or concealed.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Packets dropped because the buffer was full.
    pub overflows: u64,
    /// Frames dropped to bring the delay down to the target.
    pub dropped_for_latency: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not playing: waiting for a packet (`since` is `None`), or for the first buffered
    /// packet to have waited the target delay.
    Buffering { since: Option<Duration> },
    /// The cursor moves on with every pop.
    Playing,
}

/// One packet's transit, kept for the estimate.
#[derive(Debug, Clone, Copy)]
struct Transit {
    arrival: Duration,
    position: i64,
    /// Arrival time minus media time, in µs.
    micros: i64,
}

#[derive(Debug, Clone)]
struct Buffered {
    arrival: Duration,
    payload: Vec<u8>,
}

/// An adaptive playout buffer; see the module documentation.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    /// One frame in RTP timestamp units.
    frame_units: i64,
    /// The RTP timestamp of position 0 of the unwrapped timeline.
    origin: Option<u32>,
    /// A timeline position near the packets to come, to unwrap their timestamps against.
    anchor: i64,
    phase: Phase,
    /// The start of the frame due next (meaningful while playing).
    cursor: i64,
    /// Everything before this position has been played or given up; later packets are late.
    played_upto: Option<i64>,
    /// Buffered packets by unwrapped timestamp.
    packets: BTreeMap<i64, Buffered>,
    recently_played: VecDeque<i64>,
    last_seq: Option<u16>,
    missing_in_a_row: u32,
    late_in_a_row: u32,
    /// The transits of the recent packets.
    transits: VecDeque<Transit>,
    last_transit: Option<i64>,
    /// Reused to sort the transits without allocating on every pop.
    scratch: Vec<i64>,
    /// The jitter estimate in ms: the transit spread, decaying slowly when it shrinks.
    jitter_ms: f64,
    estimated_at: Option<Duration>,
    target_ms: u32,
    /// The frame the last pop concealed, if it did.
    last_concealed: Option<i64>,
    counters: JitterStats,
}

impl JitterBuffer {
    /// A buffer with `config`, made safe: a zero clock rate or frame becomes 1, a maximum
    /// below the minimum becomes the minimum, and the capacity is 1..=`MAX_CAPACITY`.
    pub fn new(config: JitterConfig) -> Self {
        let clock_rate = config.clock_rate.max(1);
        let frame_ms = config.frame_ms.max(1);
        let config = JitterConfig {
            clock_rate,
            frame_ms,
            min_delay_ms: config.min_delay_ms,
            max_delay_ms: config.max_delay_ms.max(config.min_delay_ms),
            capacity: config.capacity.clamp(1, MAX_CAPACITY),
        };
        let frame_units = (i64::from(frame_ms) * i64::from(clock_rate) / 1000).max(1);
        let mut buffer = JitterBuffer {
            config,
            frame_units,
            origin: None,
            anchor: 0,
            phase: Phase::Buffering { since: None },
            cursor: 0,
            played_upto: None,
            packets: BTreeMap::new(),
            recently_played: VecDeque::with_capacity(RECENTLY_PLAYED),
            last_seq: None,
            missing_in_a_row: 0,
            late_in_a_row: 0,
            transits: VecDeque::new(),
            last_transit: None,
            scratch: Vec::new(),
            jitter_ms: 0.0,
            estimated_at: None,
            target_ms: 0,
            last_concealed: None,
            counters: JitterStats::default(),
        };
        buffer.target_ms = buffer.target_for(0.0);
        buffer
    }

    /// Takes a packet that arrived at the monotonic time `now`.
    pub fn push(&mut self, now: Duration, seq: u16, timestamp: u32, payload: Vec<u8>) -> PushOutcome {
        let position = self.unwrap(timestamp);
        if self.packets.contains_key(&position) || self.recently_played.contains(&position) {
            self.counters.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        let follows_previous = self.last_seq.is_some_and(|last| seq == last.wrapping_add(1));
        self.last_seq = Some(seq);
        self.observe_transit(now, position);
        if let Some(upto) = self.played_upto
            && position < upto
        {
            self.late_in_a_row += 1;
            // An in-order packet far behind, or a run of late ones, is not network delay: the
            // source restarted its timestamps behind us.
            let far_behind = upto - position > self.ms_to_units(self.config.max_delay_ms);
            if self.late_in_a_row < LATE_RESTART && !(follows_previous && far_behind) {
                self.counters.late += 1;
                return PushOutcome::Late;
            }
            self.restart_timeline();
            self.observe_transit(now, position);
        }
        self.late_in_a_row = 0;
        if self.packets.len() >= self.config.capacity {
            self.counters.overflows += 1;
            return PushOutcome::Overflow;
        }
        self.packets.insert(position, Buffered { arrival: now, payload });
        if let Phase::Buffering { since } = &mut self.phase
            && since.is_none()
        {
            *since = Some(now);
            // Unwrap what follows against this packet: the old timeline may be far away.
            self.anchor = position;
        }
        PushOutcome::Accepted
    }

    /// The frame to play now; call once every `frame_ms` from the playout clock.
    pub fn pop(&mut self, now: Duration) -> Playout {
        self.last_concealed = None;
        self.update_target(now);
        if !self.ensure_playing(now) {
            return Playout::Silence;
        }
        let delay = self.playout_delay(now);
        self.drop_for_latency(delay);
        if let Some(position) = self.due_position()
            && let Some(packet) = self.packets.remove(&position)
        {
            self.remember_played(position);
            self.counters.played += 1;
            self.missing_in_a_row = 0;
            self.advance();
            return Playout::Frame(packet.payload);
        }
        if self.packets.is_empty() && self.missing_in_a_row >= IDLE_AFTER_CONCEALS {
            self.phase = Phase::Buffering { since: None };
            return Playout::Silence;
        }
        let target = Duration::from_millis(u64::from(self.target_ms));
        let below_target = match delay {
            Some(delay) => delay < target,
            None => self.buffered_units() < self.ms_to_units(self.target_ms),
        };
        self.last_concealed = Some(self.cursor);
        // Short of the target, the packet may only be late: the cursor waits for it, which
        // lengthens the delay by this frame. Beyond it, the packet is lost or hopelessly late.
        if !below_target {
            self.advance();
        }
        self.missing_in_a_row += 1;
        self.counters.concealed += 1;
        Playout::Conceal
    }

    /// Right after a pop that returned `Conceal`: the payload of the packet that follows the
    /// missing frame, if it is buffered, so that a codec with in-band FEC (Opus, RFC 6716
    /// section 2.1.7) rebuilds the missing frame from it. `None` after any other pop. The
    /// packet stays buffered and plays in its own turn.
    pub fn next_payload(&self) -> Option<&[u8]> {
        let missing = self.last_concealed?;
        let next = missing + self.frame_units;
        let (_, packet) = self.packets.range(next..next + self.frame_units).next()?;
        Some(&packet.payload)
    }

    /// Forgets the stream (a new SSRC, a re-INVITE): buffered packets, timeline and jitter
    /// estimate. The counters keep counting for the whole call.
    pub fn reset(&mut self) {
        let counters = self.counters;
        *self = JitterBuffer::new(self.config.clone());
        self.counters = counters;
    }

    /// The counters so far and the current target and fill level.
    pub fn stats(&self) -> JitterStats {
        let buffered_units = match (self.phase, self.packets.keys().next(), self.packets.keys().next_back()) {
            (Phase::Playing, _, _) => self.buffered_units(),
            (_, Some(&first), Some(&last)) => last.saturating_sub(first).saturating_add(self.frame_units),
            _ => 0,
        };
        JitterStats {
            target_delay_ms: self.target_ms,
            buffered_ms: self.units_to_ms(buffered_units),
            ..self.counters
        }
    }

    /// The settings in use, after `new` made them safe.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// The position of `timestamp` on the unwrapped timeline: the anchor plus the wrapping
    /// difference read as signed, i.e. the nearest position with those low 32 bits.
    fn unwrap(&mut self, timestamp: u32) -> i64 {
        let Some(origin) = self.origin else {
            self.origin = Some(timestamp);
            self.anchor = 0;
            return 0;
        };
        let anchor_timestamp = origin.wrapping_add(self.anchor as u32);
        self.anchor + i64::from(timestamp.wrapping_sub(anchor_timestamp) as i32)
    }

    /// Starts playing when the first packet has waited long enough, and resynchronises over a
    /// jump; returns whether a frame (or a concealment) is due.
    fn ensure_playing(&mut self, now: Duration) -> bool {
        loop {
            match self.phase {
                Phase::Buffering { since: None } => return false,
                Phase::Buffering { since: Some(since) } => {
                    let Some(&first) = self.packets.keys().next() else {
                        self.phase = Phase::Buffering { since: None };
                        return false;
                    };
                    if now.saturating_sub(since) < Duration::from_millis(u64::from(self.target_ms)) {
                        return false;
                    }
                    self.cursor = first;
                    self.anchor = first;
                    self.played_upto = Some(first);
                    self.missing_in_a_row = 0;
                    self.phase = Phase::Playing;
                    return true;
                }
                Phase::Playing => {
                    self.discard_passed();
                    if self.due_position().is_none()
                        && let Some((&first, packet)) = self.packets.first_key_value()
                        && first - self.cursor > self.ms_to_units(self.config.max_delay_ms)
                    {
                        // A new talkspurt or a restart far ahead: wait for it as for a new
                        // stream rather than conceal all the way there. It ends the loop:
                        // the next round either waits or plays `first`.
                        self.phase = Phase::Buffering { since: Some(packet.arrival) };
                        continue;
                    }
                    return true;
                }
            }
        }
    }

    /// The buffered packet due in the cursor's frame, if any.
    fn due_position(&self) -> Option<i64> {
        self.packets.range(self.cursor..self.cursor + self.frame_units).next().map(|(&position, _)| position)
    }

    /// Drops packets whose frame has passed (several packets within one frame).
    fn discard_passed(&mut self) {
        while let Some(entry) = self.packets.first_entry()
            && *entry.key() < self.cursor
        {
            entry.remove();
            self.counters.late += 1;
        }
    }

    /// The media time buffered from the cursor, counting only packets within the maximum
    /// delay: one far ahead is a jump waiting for its resynchronisation, not delay.
    fn buffered_units(&self) -> i64 {
        let horizon = self.cursor.saturating_add(self.ms_to_units(self.config.max_delay_ms));
        match self.packets.range(self.cursor..=horizon).next_back() {
            Some((&last, _)) => last - self.cursor + self.frame_units,
            None => 0,
        }
    }

    /// How long the frame due now has been waited for beyond the fastest packet of the last
    /// seconds: the time since the media time of the cursor, minus the fastest transit. This
    /// is the delay the target is about: a packet whose transit exceeds the fastest by less
    /// is in time. Only packets near the cursor count, so that after a jump of the media
    /// timeline the other side of it says nothing; `None` when no packet does.
    fn playout_delay(&self, now: Duration) -> Option<Duration> {
        let reach = self.ms_to_units(self.config.max_delay_ms);
        let fastest = self
            .transits
            .iter()
            .filter(|transit| transit.position.abs_diff(self.cursor) <= reach.unsigned_abs())
            .map(|transit| transit.micros)
            .min()?;
        let now_us = i128::try_from(now.as_micros()).unwrap_or(i128::MAX);
        let cursor_us = i128::from(self.cursor) * 1_000_000 / i128::from(self.config.clock_rate);
        let delay_us = (now_us - cursor_us - i128::from(fastest)).max(0);
        Some(Duration::from_micros(u64::try_from(delay_us).unwrap_or(u64::MAX)))
    }

    /// Drops the oldest frame when the delay is two frames or more beyond the target.
    fn drop_for_latency(&mut self, delay: Option<Duration>) {
        let frame = Duration::from_millis(u64::from(self.config.frame_ms));
        let limit = Duration::from_millis(u64::from(self.target_ms)) + 2 * frame;
        if delay.is_none_or(|delay| delay < limit) || self.packets.is_empty() {
            return;
        }
        if let Some(position) = self.due_position() {
            self.packets.remove(&position);
            self.remember_played(position);
            self.counters.dropped_for_latency += 1;
        }
        self.advance();
    }

    fn advance(&mut self) {
        self.cursor += self.frame_units;
        self.anchor = self.cursor;
        self.played_upto = Some(self.cursor);
    }

    fn remember_played(&mut self, position: i64) {
        if self.recently_played.len() == RECENTLY_PLAYED {
            self.recently_played.pop_front();
        }
        self.recently_played.push_back(position);
    }

    /// Starts over from the next packet. What is buffered of the old timeline is given up (it
    /// cannot be ordered against the new one), and so is the jitter estimate: the late packets
    /// that revealed the restart inflated it, and it rises again within a few packets.
    fn restart_timeline(&mut self) {
        self.packets.clear();
        self.recently_played.clear();
        self.played_upto = None;
        self.phase = Phase::Buffering { since: None };
        self.transits.clear();
        self.last_transit = None;
        self.jitter_ms = 0.0;
        self.missing_in_a_row = 0;
        self.late_in_a_row = 0;
    }

    /// Records the transit of a packet: its arrival minus its media time, in µs. Only the
    /// variation matters, so the unknown offset between the two clocks does not.
    fn observe_transit(&mut self, now: Duration, position: i64) {
        let arrival_us = i128::try_from(now.as_micros()).unwrap_or(i128::MAX);
        let media_us = i128::from(position) * 1_000_000 / i128::from(self.config.clock_rate);
        let transit = arrival_us.saturating_sub(media_us);
        let transit = i64::try_from(transit).unwrap_or(if transit < 0 { i64::MIN } else { i64::MAX });
        let max_delay_us = u64::from(self.config.max_delay_ms) * 1000;
        if let Some(last) = self.last_transit
            && last.abs_diff(transit) > max_delay_us
        {
            // The media timeline jumped (restart, or timestamps that skipped): the old
            // transits say nothing about the new ones.
            self.transits.clear();
        }
        self.last_transit = Some(transit);
        if self.transits.len() == ESTIMATE_SAMPLES {
            self.transits.pop_front();
        }
        self.transits.push_back(Transit { arrival: now, position, micros: transit });
    }

    fn update_target(&mut self, now: Duration) {
        let horizon = now.saturating_sub(ESTIMATE_WINDOW);
        while let Some(oldest) = self.transits.front()
            && oldest.arrival < horizon
        {
            self.transits.pop_front();
        }
        self.scratch.clear();
        self.scratch.extend(self.transits.iter().map(|transit| transit.micros));
        self.scratch.sort_unstable();
        let spread_ms = match (self.scratch.first(), self.scratch.len()) {
            (Some(&fastest), len) if len >= 2 => {
                let high = self.scratch[(len - 1) * ESTIMATE_PERCENTILE / 100];
                high.saturating_sub(fastest) as f64 / 1000.0
            }
            _ => 0.0,
        };
        let elapsed = self.estimated_at.map_or(0.0, |at| now.saturating_sub(at).as_secs_f64());
        self.estimated_at = Some(now);
        self.jitter_ms = if spread_ms >= self.jitter_ms {
            spread_ms
        } else {
            spread_ms + (self.jitter_ms - spread_ms) * 0.5f64.powf(elapsed / DECAY_HALF_LIFE_S)
        };
        self.target_ms = self.target_for(self.jitter_ms);
    }

    /// `TARGET_FACTOR * jitter + one frame`, rounded up to whole frames, within the limits.
    fn target_for(&self, jitter_ms: f64) -> u32 {
        let frame = u64::from(self.config.frame_ms);
        // A float-to-int `as` saturates; flooring keeps a vanishing estimate from costing a frame.
        let wanted = ((jitter_ms * TARGET_FACTOR).floor() as u64).saturating_add(frame);
        let rounded = wanted.div_ceil(frame).saturating_mul(frame);
        u32::try_from(rounded).unwrap_or(u32::MAX).clamp(self.config.min_delay_ms, self.config.max_delay_ms)
    }

    fn ms_to_units(&self, ms: u32) -> i64 {
        i64::from(ms) * i64::from(self.config.clock_rate) / 1000
    }

    fn units_to_ms(&self, units: i64) -> u32 {
        let ms = i128::from(units.max(0)) * 1000 / i128::from(self.config.clock_rate);
        u32::try_from(ms).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);
    const UNITS: u32 = 160;

    /// A tiny deterministic generator (Knuth's MMIX LCG), enough to shuffle test traffic.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        /// Uniform in 0..bound.
        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// A packet of the simulated stream: its arrival time, sequence number, timestamp and the
    /// index it was sent with (its payload).
    #[derive(Debug, Clone, Copy)]
    struct Sent {
        arrival: Duration,
        seq: u16,
        timestamp: u32,
        index: u32,
    }

    /// `count` packets sent every 20 ms at 8 kHz, arriving after `delay(index)`.
    fn stream(
        count: u32,
        first_seq: u16,
        first_ts: u32,
        mut delay: impl FnMut(u32) -> Duration,
    ) -> Vec<Sent> {
        (0..count)
            .map(|index| Sent {
                arrival: FRAME * index + delay(index),
                seq: first_seq.wrapping_add(index as u16),
                timestamp: first_ts.wrapping_add(index * UNITS),
                index,
            })
            .collect()
    }

    fn payload(index: u32) -> Vec<u8> {
        index.to_be_bytes().to_vec()
    }

    fn index_of(playout: &Playout) -> Option<u32> {
        match playout {
            Playout::Frame(payload) => Some(u32::from_be_bytes(payload[..].try_into().unwrap())),
            _ => None,
        }
    }

    /// Pops every 20 ms (shifted by `phase`) for `pops` frames, first pushing every packet
    /// that arrived by then, in arrival order. Returns the playouts.
    fn simulate(
        buffer: &mut JitterBuffer,
        mut packets: Vec<Sent>,
        pops: u32,
        phase: Duration,
    ) -> Vec<Playout> {
        packets.sort_by_key(|p| p.arrival);
        let mut pending = packets.into_iter().peekable();
        let mut playouts = Vec::new();
        for slot in 0..pops {
            let now = FRAME * slot + phase;
            while let Some(packet) = pending.next_if(|p| p.arrival <= now) {
                buffer.push(packet.arrival, packet.seq, packet.timestamp, payload(packet.index));
                assert!(buffer.packets.len() <= buffer.config.capacity);
            }
            playouts.push(buffer.pop(now));
        }
        playouts
    }

    fn count(playouts: &[Playout], what: fn(&Playout) -> bool) -> usize {
        playouts.iter().filter(|&p| what(p)).count()
    }

    fn is_conceal(p: &Playout) -> bool {
        *p == Playout::Conceal
    }

    fn is_silence(p: &Playout) -> bool {
        *p == Playout::Silence
    }

    fn played_indices(playouts: &[Playout]) -> Vec<u32> {
        playouts.iter().filter_map(index_of).collect()
    }

    #[test]
    fn defaults() {
        let config = JitterConfig::new(8000);
        assert_eq!(
            config,
            JitterConfig {
                clock_rate: 8000,
                frame_ms: 20,
                min_delay_ms: 20,
                max_delay_ms: 500,
                capacity: 100
            }
        );
        let buffer = JitterBuffer::new(config);
        assert_eq!(buffer.stats(), JitterStats { target_delay_ms: 20, ..JitterStats::default() });
    }

    #[test]
    fn a_perfect_stream_plays_every_frame() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let playouts = simulate(&mut buffer, stream(500, 1, 1000, |_| Duration::ZERO), 500, Duration::ZERO);
        // The first packet waits its 20 ms, then one frame plays per pop.
        assert_eq!(playouts[0], Playout::Silence);
        assert_eq!(played_indices(&playouts), (0..499).collect::<Vec<_>>());
        let stats = buffer.stats();
        assert_eq!((stats.played, stats.concealed, stats.late, stats.dropped_for_latency), (499, 0, 0, 0));
        assert_eq!(stats.target_delay_ms, 20);
        assert_eq!(stats.buffered_ms, 20);
    }

    #[test]
    fn nothing_plays_before_the_first_packet_waited_the_target() {
        let config = JitterConfig { min_delay_ms: 60, ..JitterConfig::new(8000) };
        let mut buffer = JitterBuffer::new(config);
        assert_eq!(buffer.pop(Duration::ZERO), Playout::Silence);
        buffer.push(Duration::from_millis(5), 0, 0, payload(0));
        assert_eq!(buffer.pop(Duration::from_millis(20)), Playout::Silence);
        assert_eq!(buffer.pop(Duration::from_millis(40)), Playout::Silence);
        assert_eq!(buffer.pop(Duration::from_millis(60)), Playout::Silence);
        assert_eq!(index_of(&buffer.pop(Duration::from_millis(80))), Some(0));
    }

    #[test]
    fn reordering_within_the_target_is_repaired() {
        let config = JitterConfig { min_delay_ms: 60, ..JitterConfig::new(8000) };
        let mut buffer = JitterBuffer::new(config);
        // Every 10th packet arrives 30 ms late, behind the next one, and 45..48 come reversed.
        let packets = stream(300, 0, 0, |index| match index {
            45..=48 => Duration::from_millis(u64::from(48 - index) * 15),
            _ if index % 10 == 3 => Duration::from_millis(30),
            _ => Duration::ZERO,
        });
        let playouts = simulate(&mut buffer, packets, 300, Duration::from_millis(1));
        assert_eq!(count(&playouts, is_conceal), 0);
        let played = played_indices(&playouts);
        assert_eq!(played, (0..played.len() as u32).collect::<Vec<_>>());
        assert!(played.len() >= 295);
        assert_eq!(buffer.stats().late, 0);
    }

    #[test]
    fn a_lost_packet_is_one_concealment() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let packets = stream(200, 0, 0, |_| Duration::ZERO).into_iter().filter(|p| p.index != 50).collect();
        let playouts = simulate(&mut buffer, packets, 200, Duration::ZERO);
        assert_eq!(count(&playouts, is_conceal), 1);
        // Slot 0 is silence, slot n plays packet n - 1: the concealment is packet 50's slot.
        assert_eq!(playouts[51], Playout::Conceal);
        let expected: Vec<u32> = (0..199).filter(|&i| i != 50).collect();
        assert_eq!(played_indices(&playouts), expected);
        assert_eq!(buffer.stats().concealed, 1);
    }

    #[test]
    fn the_packet_after_a_concealed_frame_is_offered_for_fec() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let packets: Vec<Sent> =
            stream(10, 0, 0, |_| Duration::ZERO).into_iter().filter(|p| p.index != 4).collect();
        let mut offered = Vec::new();
        for slot in 0..10u32 {
            for packet in packets.iter().filter(|p| p.arrival == FRAME * slot) {
                buffer.push(packet.arrival, packet.seq, packet.timestamp, payload(packet.index));
            }
            let playout = buffer.pop(FRAME * slot);
            offered.push(buffer.next_payload().map(<[u8]>::to_vec));
            if playout == Playout::Conceal {
                assert_eq!(offered[slot as usize], Some(payload(5)));
            } else {
                assert_eq!(offered[slot as usize], None);
            }
        }
        assert_eq!(offered.iter().flatten().count(), 1);
        assert_eq!(buffer.stats().played, 8, "packet 5 still played after lending its FEC");
    }

    #[test]
    fn late_packets_are_dropped_and_counted() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let packets =
            stream(100, 0, 0, |index| if index == 30 { Duration::from_millis(100) } else { Duration::ZERO });
        let playouts = simulate(&mut buffer, packets, 100, Duration::ZERO);
        let stats = buffer.stats();
        assert_eq!((stats.late, stats.concealed), (1, 1));
        assert!(!played_indices(&playouts).contains(&30));
        // Straight after, a push of an old frame says so.
        assert_eq!(buffer.push(FRAME * 100, 5, 5 * UNITS, payload(5)), PushOutcome::Late);
    }

    #[test]
    fn duplicates_are_recognised_buffered_or_played() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        assert_eq!(buffer.push(Duration::ZERO, 0, 0, payload(0)), PushOutcome::Accepted);
        assert_eq!(buffer.push(Duration::ZERO, 0, 0, payload(0)), PushOutcome::Duplicate);
        assert_eq!(buffer.push(FRAME, 1, UNITS, payload(1)), PushOutcome::Accepted);
        assert_eq!(index_of(&buffer.pop(FRAME)), Some(0));
        assert_eq!(buffer.push(FRAME, 0, 0, payload(0)), PushOutcome::Duplicate);
        assert_eq!(buffer.push(FRAME, 1, UNITS, payload(1)), PushOutcome::Duplicate);
        assert_eq!(buffer.stats().duplicates, 3);
    }

    #[test]
    fn jitter_and_loss_are_absorbed_and_the_delay_adapts() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let mut random = Lcg(7);
        let mut packets = stream(2000, 60000, 4_000_000_000, |_| Duration::from_micros(random.below(40_000)));
        let before = packets.len();
        packets.retain(|_| random.below(100) >= 5);
        let lost = before - packets.len();
        let playouts = simulate(&mut buffer, packets, 2000, Duration::from_millis(3));
        let stats = buffer.stats();
        let started = playouts.iter().position(|p| *p != Playout::Silence).unwrap();
        let running = &playouts[started..];
        // Once started, every slot is a frame or a concealment.
        assert_eq!(count(running, is_silence), 0);
        assert_eq!((stats.played + stats.concealed) as usize, running.len());
        // Frames come out in order, each at most once.
        let played = played_indices(&playouts);
        assert!(played.windows(2).all(|w| w[0] < w[1]));
        assert!((stats.concealed as usize) < 2000 * 8 / 100, "{stats:?}, {lost} lost");
        assert!(stats.concealed as usize >= lost - 10, "{stats:?}, {lost} lost");
        assert!(stats.target_delay_ms > 40 && stats.target_delay_ms <= 500, "{stats:?}");
        assert!(stats.late < 40, "{stats:?}");
    }

    #[test]
    fn the_delay_decays_after_the_jitter_stops() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let mut random = Lcg(11);
        // 20 s with up to 60 ms of jitter, then 20 s of a clean network.
        let packets = stream(2000, 0, 0, |index| {
            if index < 1000 { Duration::from_micros(random.below(60_000)) } else { Duration::ZERO }
        });
        let mut packets = packets.into_iter().peekable();
        let mut targets = Vec::new();
        for slot in 0..2000u32 {
            let now = FRAME * slot + Duration::from_millis(7);
            while let Some(packet) = packets.next_if(|p| p.arrival <= now) {
                buffer.push(packet.arrival, packet.seq, packet.timestamp, payload(packet.index));
            }
            buffer.pop(now);
            targets.push(buffer.stats().target_delay_ms);
        }
        assert!(targets[999] >= 80, "rose with the jitter: {}", targets[999]);
        assert!(targets[1025] >= 80, "still high 0.5 s after: {}", targets[1025]);
        assert!(targets.windows(2).skip(1000).all(|w| w[1] <= w[0]), "only decreases");
        assert!(targets[1999] == 20, "back to the minimum: {}", targets[1999]);
        let stats = buffer.stats();
        assert!(stats.dropped_for_latency > 0);
        // The buffer itself followed the target down.
        assert!(stats.buffered_ms <= 40, "{stats:?}");
    }

    #[test]
    fn jitter_appearing_raises_the_target_quickly() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let mut random = Lcg(3);
        let packets = stream(600, 0, 0, |index| {
            if index < 300 { Duration::ZERO } else { Duration::from_micros(random.below(50_000)) }
        });
        let mut packets = packets.into_iter().peekable();
        for slot in 0..330u32 {
            let now = FRAME * slot + Duration::from_millis(2);
            while let Some(packet) = packets.next_if(|p| p.arrival <= now) {
                buffer.push(packet.arrival, packet.seq, packet.timestamp, payload(packet.index));
            }
            buffer.pop(now);
            if slot == 299 {
                assert_eq!(buffer.stats().target_delay_ms, 20);
            }
        }
        assert!(buffer.stats().target_delay_ms >= 60, "{:?}", buffer.stats());
    }

    #[test]
    fn timestamps_and_sequence_numbers_wrap_mid_stream() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let first_ts = u32::MAX - 100 * UNITS + 37;
        let mut random = Lcg(5);
        let packets = stream(400, 65500, first_ts, |_| Duration::from_micros(random.below(15_000)));
        let playouts = simulate(&mut buffer, packets, 400, Duration::from_millis(9));
        let played = played_indices(&playouts);
        assert_eq!(count(&playouts, is_conceal), 0);
        assert_eq!(played, (0..played.len() as u32).collect::<Vec<_>>());
        assert!(played.len() >= 390);
    }

    #[test]
    fn a_forward_jump_resynchronises() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        // After 100 packets the timestamps leap 5 s ahead while packets keep coming.
        let packets = stream(300, 0, 0, |_| Duration::ZERO)
            .into_iter()
            .map(|p| Sent { timestamp: if p.index >= 100 { p.timestamp + 40_000 } else { p.timestamp }, ..p })
            .collect();
        let playouts = simulate(&mut buffer, packets, 300, Duration::from_millis(1));
        assert!(count(&playouts, is_conceal) <= 1);
        assert!(count(&playouts, is_silence) <= 3);
        let played = played_indices(&playouts);
        assert_eq!(played, (0..played.len() as u32).collect::<Vec<_>>());
        assert!(played.len() >= 296);
    }

    #[test]
    fn a_backward_jump_restarts() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        // The source restarts its timestamps 3 s back, keeping its sequence numbers.
        let playouts = simulate(&mut buffer, backward(24_000, None), 300, Duration::from_millis(1));
        assert!(count(&playouts, is_conceal) + count(&playouts, is_silence) <= 4);
        // What was still buffered of the old timeline (packet 99) is given up.
        let played = played_indices(&playouts);
        assert!(played.windows(2).all(|w| w[0] < w[1]));
        assert!(played.len() >= 295);
        assert_eq!(buffer.stats().late, 0);
        // With loss at the boundary, the restart waits for two packets in a row.
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let playouts = simulate(&mut buffer, backward(24_000, Some(100)), 300, Duration::from_millis(1));
        assert_eq!(buffer.stats().late, 1);
        assert!(played_indices(&playouts).len() >= 290);
        // A small step back, within the maximum delay, could be late packets: only a run of
        // them makes a restart. (Off the frame grid, or they would be duplicates of frames
        // just played.)
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let playouts = simulate(&mut buffer, backward(2480, None), 300, Duration::from_millis(1));
        assert_eq!(buffer.stats().late, u64::from(LATE_RESTART) - 1);
        assert!(played_indices(&playouts).len() >= 280);
    }

    /// 300 packets whose timestamps step `back` units back from packet 100 on, minus `lost`.
    fn backward(back: u32, lost: Option<u32>) -> Vec<Sent> {
        stream(300, 0, 100_000, |_| Duration::ZERO)
            .into_iter()
            .filter(|p| Some(p.index) != lost)
            .map(|p| Sent { timestamp: if p.index >= 100 { p.timestamp - back } else { p.timestamp }, ..p })
            .collect()
    }

    #[test]
    fn a_stopped_stream_goes_silent_and_resumes() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        // 2 s of speech, 3 s of silence suppression (nothing sent), then speech again with
        // timestamps that kept counting (RFC 3550 section 5.1).
        let packets = stream(400, 0, 0, |_| Duration::ZERO)
            .into_iter()
            .filter(|p| p.index < 100 || p.index >= 250)
            .collect();
        let playouts = simulate(&mut buffer, packets, 400, Duration::from_millis(1));
        assert_eq!(count(&playouts, is_conceal), IDLE_AFTER_CONCEALS as usize);
        let played = played_indices(&playouts);
        assert_eq!(played.len(), 100 + 149);
        assert!(played[100..].iter().zip(250..).all(|(&a, b)| a == b));
        // A stream that simply stops: ten concealments, then silence for good.
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let playouts = simulate(&mut buffer, stream(50, 0, 0, |_| Duration::ZERO), 200, Duration::ZERO);
        assert_eq!(count(&playouts, is_conceal), IDLE_AFTER_CONCEALS as usize);
        assert!(playouts[100..].iter().all(is_silence));
    }

    #[test]
    fn misaligned_timestamps_play_in_their_frame() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        // A peer whose packets are 20 ms apart but whose clock wobbles by a few samples.
        let mut packets = stream(200, 0, 0, |_| Duration::ZERO);
        let mut random = Lcg(9);
        for packet in &mut packets[1..] {
            packet.timestamp += random.below(60) as u32;
        }
        let playouts = simulate(&mut buffer, packets, 200, Duration::ZERO);
        assert_eq!(count(&playouts, is_conceal), 0);
        assert_eq!(played_indices(&playouts), (0..199).collect::<Vec<_>>());
    }

    #[test]
    fn a_flood_never_exceeds_capacity() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let mut outcomes = Vec::new();
        for index in 0..10_000u32 {
            outcomes.push(buffer.push(Duration::ZERO, index as u16, index * UNITS, vec![0; 160]));
        }
        assert_eq!(buffer.packets.len(), 100);
        assert_eq!(outcomes.iter().filter(|&&o| o == PushOutcome::Overflow).count(), 9900);
        assert_eq!(buffer.stats().overflows, 9900);
        // Random garbage, interleaved with playout.
        let mut random = Lcg(1);
        let mut buffer = JitterBuffer::new(JitterConfig { capacity: 50, ..JitterConfig::new(8000) });
        for step in 0..50_000u64 {
            let now = Duration::from_millis(step);
            let timestamp = random.next() as u32;
            buffer.push(now, random.next() as u16, timestamp, vec![1; random.below(200) as usize]);
            assert!(buffer.packets.len() <= 50);
            assert!(buffer.transits.len() <= ESTIMATE_SAMPLES);
            assert!(buffer.recently_played.len() <= RECENTLY_PLAYED);
            if step % 20 == 0 {
                buffer.pop(now);
            }
        }
        assert!(buffer.stats().target_delay_ms <= 500);
    }

    #[test]
    fn degenerate_settings_and_times_do_not_panic() {
        let config =
            JitterConfig { clock_rate: 0, frame_ms: 0, min_delay_ms: 900, max_delay_ms: 10, capacity: 0 };
        let mut buffer = JitterBuffer::new(config);
        assert_eq!(buffer.config().capacity, 1);
        assert_eq!(buffer.stats().target_delay_ms, 900);
        for (now, timestamp) in [(Duration::MAX, 0), (Duration::ZERO, u32::MAX), (Duration::MAX, 1 << 31)] {
            buffer.push(now, 0, timestamp, Vec::new());
            buffer.pop(now);
            buffer.pop(Duration::ZERO);
        }
        let mut buffer = JitterBuffer::new(JitterConfig { clock_rate: u32::MAX, ..JitterConfig::new(0) });
        for step in 0..100u32 {
            buffer.push(
                Duration::from_secs(u64::from(step)),
                step as u16,
                step.wrapping_mul(1 << 30),
                vec![],
            );
            buffer.pop(Duration::from_secs(u64::from(step)));
        }
    }

    #[test]
    fn reset_forgets_the_stream_but_not_the_counters() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        simulate(&mut buffer, stream(50, 0, 0, |_| Duration::ZERO), 50, Duration::ZERO);
        let played = buffer.stats().played;
        buffer.reset();
        assert_eq!(buffer.stats().played, played);
        assert_eq!(buffer.stats().buffered_ms, 0);
        // A new source with unrelated timestamps starts like a new stream.
        let t = Duration::from_secs(10);
        assert_eq!(buffer.push(t, 9, 123_456, payload(7)), PushOutcome::Accepted);
        assert_eq!(buffer.pop(t), Playout::Silence);
        assert_eq!(index_of(&buffer.pop(t + FRAME)), Some(7));
    }
}
