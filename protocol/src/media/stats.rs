//! Reception statistics of one RTP source, for the report blocks of RTCP receiver and sender
//! reports (RFC 3550 section 6.4.1): sequence tracking after appendix A.1, loss after A.3,
//! interarrival jitter after A.8, and the round-trip time of section 6.4.1.
//!
//! Arrival times are monotonic durations the caller reads from its clock; NTP times are only
//! handled in the "middle 32 bits" form that LSR and DLSR use.

use std::time::Duration;

/// A forward sequence jump of this many packets or more is not a gap but a possible restart
/// of the source (RFC 3550 appendix A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// A packet this far behind the highest sequence number is a late or duplicated packet;
/// further behind, it counts as a jump (RFC 3550 appendix A.1).
pub const MAX_MISORDER: u16 = 100;

const SEQ_MOD: u64 = 1 << 16;
/// How many recent sequence numbers are remembered to recognise duplicates. Reordering is
/// only recognised up to MAX_MISORDER back, so this window always covers it.
const HISTORY: u64 = 1024;
const HISTORY_WORDS: usize = (HISTORY / 64) as usize;

/// What `ReceiveStats::on_packet` made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketVerdict {
    /// A packet not seen before: in order, after a gap, or reordered.
    New,
    /// A sequence number already received recently. Counted as received, as RFC 3550 counts
    /// duplicates (which is why the cumulative loss can go negative), but not to be played.
    Duplicate,
    /// The first packet of a different SSRC: all statistics restarted with it.
    SourceChanged,
    /// A big sequence jump, ignored until the next packet confirms that the source restarted
    /// its sequence numbers (RFC 3550 appendix A.1). Not counted.
    Probation,
}

/// One report block of an RTCP SR or RR (RFC 3550 section 6.4.1), in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Packets lost since the previous report, as a fraction of those expected, times 256.
    pub fraction_lost: u8,
    /// The cumulative number of packets lost as the 24-bit two's complement of the wire:
    /// clamped to -0x800000..=0x7FFFFF (appendix A.3); the top 8 bits are always zero.
    pub total_lost: u32,
    /// Cycles of the sequence number in the high 16 bits, the highest sequence in the low 16.
    pub extended_highest: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// The middle 32 bits of the NTP time of the last sender report, 0 if none.
    pub last_sr: u32,
    /// Time since that sender report arrived, in units of 1/65536 s; 0 if none.
    pub delay_since_last_sr: u32,
}

/// Everything known about the current source; replaced whole when the SSRC changes.
#[derive(Debug, Clone)]
struct Source {
    ssrc: u32,
    max_seq: u16,
    /// The number of sequence wraps times 2^16 (RFC 3550's `cycles`), kept in 64 bits so it
    /// cannot overflow; the report carries its low 32 bits as the RFC does.
    cycles: u64,
    base_seq: u16,
    /// After a big jump, the sequence number that would confirm a restart.
    bad_seq: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// The previous packet's relative transit time (A.8), in timestamp units.
    transit: Option<u32>,
    /// Interarrival jitter in timestamp units (A.8 keeps it scaled by 16; f64 does not need to).
    jitter: f64,
    /// One bit per extended sequence number, modulo HISTORY: received or not.
    seen: [u64; HISTORY_WORDS],
}

impl Source {
    fn new(ssrc: u32, seq: u16) -> Self {
        let mut source = Source {
            ssrc,
            max_seq: seq,
            cycles: 0,
            base_seq: seq,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
            seen: [0; HISTORY_WORDS],
        };
        source.restart(seq);
        source
    }

    /// RFC 3550 A.1 `init_seq`: counting starts again at `seq`.
    fn restart(&mut self, seq: u16) {
        self.base_seq = seq;
        self.max_seq = seq;
        self.bad_seq = None;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        // The timestamps of a restarted source are unrelated to the old ones.
        self.transit = None;
        self.seen = [0; HISTORY_WORDS];
        self.mark(self.extended_max());
    }

    fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    fn expected(&self) -> u64 {
        (self.extended_max() + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Marks an extended sequence number as received; returns whether it already was.
    fn mark(&mut self, extended: u64) -> bool {
        let bit = extended % HISTORY;
        let word = &mut self.seen[(bit / 64) as usize];
        let mask = 1u64 << (bit % 64);
        let already = *word & mask != 0;
        *word |= mask;
        already
    }

    fn forget_range(&mut self, from: u64, to_inclusive: u64) {
        if to_inclusive.saturating_sub(from) >= HISTORY {
            self.seen = [0; HISTORY_WORDS];
            return;
        }
        for extended in from..=to_inclusive {
            let bit = extended % HISTORY;
            self.seen[(bit / 64) as usize] &= !(1u64 << (bit % 64));
        }
    }

    /// RFC 3550 A.1 `update_seq`, plus duplicate recognition. Returns `None` when the packet
    /// is not counted (probation after a jump).
    fn update_seq(&mut self, seq: u16) -> Option<PacketVerdict> {
        let delta = seq.wrapping_sub(self.max_seq);
        let verdict = if delta < MAX_DROPOUT {
            if delta == 0 {
                PacketVerdict::Duplicate
            } else {
                let old_max = self.extended_max();
                if seq < self.max_seq {
                    self.cycles += SEQ_MOD;
                }
                self.max_seq = seq;
                self.forget_range(old_max + 1, self.extended_max());
                self.mark(self.extended_max());
                PacketVerdict::New
            }
        } else if delta <= u16::MAX - MAX_MISORDER + 1 {
            // A big jump either way: only two consecutive packets after it make a restart.
            if self.bad_seq == Some(seq) {
                self.restart(seq);
                PacketVerdict::New
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                return None;
            }
        } else {
            // Up to MAX_MISORDER behind: late or duplicated. Before the first packet of the
            // stream there is nothing to check against.
            let behind = u64::from(self.max_seq.wrapping_sub(seq));
            match self.extended_max().checked_sub(behind) {
                Some(extended) if self.mark(extended) => PacketVerdict::Duplicate,
                _ => PacketVerdict::New,
            }
        };
        self.received += 1;
        Some(verdict)
    }

    /// RFC 3550 A.8: the jitter estimate moves 1/16 of the way toward each new |D|.
    fn update_jitter(&mut self, rtp_timestamp: u32, arrival_units: u32) {
        let transit = arrival_units.wrapping_sub(rtp_timestamp);
        if let Some(previous) = self.transit {
            // The wrapping difference read as signed handles both clocks wrapping.
            let d = f64::from((transit.wrapping_sub(previous) as i32).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }
}

/// Reception statistics of the stream we receive, one source at a time.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    clock_rate: u32,
    source: Option<Source>,
    /// LSR and when its sender report arrived.
    last_sr: Option<(u32, Duration)>,
}

impl ReceiveStats {
    /// Statistics for a stream whose RTP clock runs at `clock_rate` Hz (0 is taken as 1).
    pub fn new(clock_rate: u32) -> Self {
        ReceiveStats { clock_rate: clock_rate.max(1), source: None, last_sr: None }
    }

    /// Accounts one RTP packet that arrived at the monotonic time `arrival`.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16, rtp_timestamp: u32, arrival: Duration) -> PacketVerdict {
        self.account(ssrc, seq, Some((rtp_timestamp, arrival)))
    }

    /// Accounts a packet whose timestamp is not its sampling instant: an RFC 4733 event
    /// keeps its start timestamp for 100 ms and more (section 2.5.1.2), so it counts for
    /// sequence and loss but would only inflate the interarrival jitter.
    pub fn on_untimed_packet(&mut self, ssrc: u32, seq: u16) -> PacketVerdict {
        self.account(ssrc, seq, None)
    }

    fn account(&mut self, ssrc: u32, seq: u16, timing: Option<(u32, Duration)>) -> PacketVerdict {
        let timing = timing.map(|(rtp_timestamp, arrival)| (rtp_timestamp, self.arrival_units(arrival)));
        let source = match &mut self.source {
            Some(source) if source.ssrc == ssrc => source,
            previous => {
                let changed = previous.is_some();
                let mut source = Source::new(ssrc, seq);
                source.received = 1;
                if let Some((rtp_timestamp, arrival_units)) = timing {
                    source.update_jitter(rtp_timestamp, arrival_units);
                }
                *previous = Some(source);
                if changed {
                    // The old source's sender report says nothing about the new one.
                    self.last_sr = None;
                    return PacketVerdict::SourceChanged;
                }
                return PacketVerdict::New;
            }
        };
        match source.update_seq(seq) {
            None => PacketVerdict::Probation,
            Some(PacketVerdict::Duplicate) => PacketVerdict::Duplicate,
            Some(verdict) => {
                if let Some((rtp_timestamp, arrival_units)) = timing {
                    source.update_jitter(rtp_timestamp, arrival_units);
                }
                verdict
            }
        }
    }

    /// The arrival time on the RTP clock (A.8), modulo 2^32 like the timestamps.
    fn arrival_units(&self, arrival: Duration) -> u32 {
        // Cannot overflow: Duration::MAX in ns (< 2^65) times a u32 stays below 2^128.
        (arrival.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32
    }

    /// Remembers a sender report from the source: the middle 32 bits of its NTP timestamp
    /// (LSR) and its monotonic arrival time.
    pub fn on_sender_report(&mut self, ntp_middle32: u32, arrival: Duration) {
        self.last_sr = Some((ntp_middle32, arrival));
    }

    /// The report block for the current source, or `None` before any packet. The fraction
    /// lost covers the interval since the previous call (RFC 3550 A.3), so call it once per
    /// report sent; `now` is the monotonic time the report is built.
    pub fn report_block(&mut self, now: Duration) -> Option<ReportBlock> {
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (lsr, to_ntp_short(now.saturating_sub(at))),
            None => (0, 0),
        };
        let jitter = self.jitter_units();
        let extended_highest = self.extended_highest();
        let total_lost = (self.cumulative_lost().clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0xFF_FFFF;
        let source = self.source.as_mut()?;
        let expected = source.expected();
        let expected_interval = expected.saturating_sub(source.expected_prior);
        let received_interval = source.received.saturating_sub(source.received_prior);
        source.expected_prior = expected;
        source.received_prior = source.received;
        let fraction_lost = match expected_interval.checked_sub(received_interval) {
            Some(lost) if expected_interval > 0 && lost > 0 => {
                u8::try_from((lost << 8) / expected_interval).unwrap_or(u8::MAX)
            }
            _ => 0,
        };
        Some(ReportBlock {
            ssrc: source.ssrc,
            fraction_lost,
            total_lost,
            extended_highest,
            jitter,
            last_sr,
            delay_since_last_sr,
        })
    }

    /// The extended highest sequence number received: cycles in the high 16 bits.
    pub fn extended_highest(&self) -> u32 {
        self.source.as_ref().map_or(0, |source| source.extended_max() as u32)
    }

    /// Packets received since the source started (or restarted), duplicates included.
    pub fn received(&self) -> u64 {
        self.source.as_ref().map_or(0, |source| source.received)
    }

    /// Packets expected: from the first sequence number to the highest, inclusive.
    pub fn expected(&self) -> u64 {
        self.source.as_ref().map_or(0, Source::expected)
    }

    /// Expected minus received; negative when duplicates outnumber losses.
    pub fn cumulative_lost(&self) -> i64 {
        let expected = i64::try_from(self.expected()).unwrap_or(i64::MAX);
        let received = i64::try_from(self.received()).unwrap_or(i64::MAX);
        expected.saturating_sub(received)
    }

    /// Interarrival jitter (A.8) in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.source.as_ref().map_or(0.0, |source| source.jitter * 1000.0 / f64::from(self.clock_rate))
    }

    fn jitter_units(&self) -> u32 {
        // A float-to-int `as` saturates, and the jitter is never negative.
        self.source.as_ref().map_or(0, |source| source.jitter.round() as u32)
    }

    /// The SSRC of the source being tracked.
    pub fn ssrc(&self) -> Option<u32> {
        self.source.as_ref().map(|source| source.ssrc)
    }
}

/// A duration in the 16.16 fixed point of DLSR, saturating.
fn to_ntp_short(duration: Duration) -> u32 {
    let units = (duration.as_nanos() << 16) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// The round-trip time seen from a report block that came back to us (RFC 3550 section
/// 6.4.1): the arrival time minus LSR minus DLSR, all in middle-32-bit NTP units. `None` when
/// the peer has no sender report of ours yet (LSR 0) or the result is negative (clock skew or
/// a stale block).
pub fn round_trip(now_ntp_middle32: u32, last_sr: u32, delay_since_last_sr: u32) -> Option<Duration> {
    if last_sr == 0 {
        return None;
    }
    // Wrapping keeps working when the 16-bit seconds part rolls over (every 18 hours).
    let since_sr = now_ntp_middle32.wrapping_sub(last_sr);
    if (since_sr as i32) < 0 {
        return None;
    }
    let rtt = since_sr.checked_sub(delay_since_last_sr)?;
    let nanos = (u64::from(rtt & 0xFFFF) * 1_000_000_000) >> 16;
    Some(Duration::from_secs(u64::from(rtt >> 16)) + Duration::from_nanos(nanos))
}

/// The middle 32 bits of a 64-bit NTP timestamp: the low 16 bits of the seconds and the high
/// 16 bits of the fraction, the form of LSR (RFC 3550 section 6.4.1).
pub fn ntp_middle32(ntp_seconds: u64, ntp_fraction: u32) -> u32 {
    (((ntp_seconds & 0xFFFF) as u32) << 16) | (ntp_fraction >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds packets `seqs` of SSRC 7, 20 ms apart in both clocks, 8 kHz.
    fn feed(stats: &mut ReceiveStats, seqs: impl IntoIterator<Item = u16>) -> Vec<PacketVerdict> {
        seqs.into_iter()
            .map(|seq| {
                let index = u32::from(seq);
                stats.on_packet(7, seq, index * 160, MS * 20 * index)
            })
            .collect()
    }

    #[test]
    fn an_in_order_stream_loses_nothing() {
        let mut stats = ReceiveStats::new(8000);
        assert_eq!(stats.ssrc(), None);
        assert_eq!(stats.report_block(Duration::ZERO), None);
        assert!(feed(&mut stats, 0..100).iter().all(|&v| v == PacketVerdict::New));
        assert_eq!(stats.ssrc(), Some(7));
        assert_eq!((stats.received(), stats.expected(), stats.cumulative_lost()), (100, 100, 0));
        assert_eq!(stats.extended_highest(), 99);
        assert_eq!(stats.jitter_ms(), 0.0);
        let block = stats.report_block(Duration::from_secs(2)).unwrap();
        assert_eq!(
            block,
            ReportBlock {
                ssrc: 7,
                fraction_lost: 0,
                total_lost: 0,
                extended_highest: 99,
                jitter: 0,
                last_sr: 0,
                delay_since_last_sr: 0
            }
        );
    }

    #[test]
    fn losses_are_counted_and_the_fraction_covers_one_interval() {
        let mut stats = ReceiveStats::new(8000);
        // 100 expected, every 4th lost: 25 lost.
        feed(&mut stats, (0..100).filter(|seq| seq % 4 != 3));
        assert_eq!((stats.expected(), stats.received(), stats.cumulative_lost()), (99, 75, 24));
        let block = stats.report_block(Duration::ZERO).unwrap();
        assert_eq!(block.fraction_lost, (24 * 256 / 99) as u8);
        assert_eq!(block.total_lost, 24);
        // The next interval is clean: fraction 0, total unchanged.
        feed(&mut stats, 100..200);
        let block = stats.report_block(Duration::ZERO).unwrap();
        // Packet 99, the only loss of this interval, is counted in it.
        assert_eq!((block.fraction_lost, block.total_lost), ((256 / 101) as u8, 25));
        // An interval where everything is lost but the last packet.
        feed(&mut stats, [400]);
        let block = stats.report_block(Duration::ZERO).unwrap();
        assert_eq!(block.fraction_lost, (200 * 256 / 201) as u8);
        // Nothing new at all: no division by zero.
        assert_eq!(stats.report_block(Duration::ZERO).unwrap().fraction_lost, 0);
    }

    #[test]
    fn reordering_is_not_loss() {
        let mut stats = ReceiveStats::new(8000);
        let verdicts = feed(&mut stats, [0, 1, 3, 2, 4, 7, 5, 6, 8]);
        assert!(verdicts.iter().all(|&v| v == PacketVerdict::New));
        assert_eq!((stats.expected(), stats.received(), stats.cumulative_lost()), (9, 9, 0));
        assert_eq!(stats.extended_highest(), 8);
    }

    #[test]
    fn duplicates_are_recognised_and_counted_as_received() {
        let mut stats = ReceiveStats::new(8000);
        let verdicts = feed(&mut stats, [0, 1, 1, 2, 0, 3, 2]);
        use PacketVerdict::*;
        assert_eq!(verdicts, [New, New, Duplicate, New, Duplicate, New, Duplicate]);
        assert_eq!((stats.expected(), stats.received(), stats.cumulative_lost()), (4, 7, -3));
        let block = stats.report_block(Duration::ZERO).unwrap();
        assert_eq!(block.total_lost, 0xFF_FFFD, "-3 in 24-bit two's complement");
        assert_eq!(block.fraction_lost, 0);
    }

    #[test]
    fn packets_from_before_the_first_one_are_counted_without_history() {
        let mut stats = ReceiveStats::new(8000);
        assert_eq!(stats.on_packet(1, 5, 0, Duration::ZERO), PacketVerdict::New);
        assert_eq!(stats.on_packet(1, 65534, 0, Duration::ZERO), PacketVerdict::New);
        assert_eq!(stats.on_packet(1, 65534, 0, Duration::ZERO), PacketVerdict::New);
        assert_eq!(stats.extended_highest(), 5);
    }

    #[test]
    fn sequence_wraps_are_counted_in_cycles() {
        let mut stats = ReceiveStats::new(8000);
        let start = 65000u16;
        let total = 5 * 65536 + 1234;
        let mut seq = start;
        let mut timestamp = u32::MAX - 50 * 160;
        for index in 0..total {
            // Lose one packet in every 1000.
            if index % 1000 != 999 {
                let verdict = stats.on_packet(9, seq, timestamp, MS * 20 * index);
                assert_eq!(verdict, PacketVerdict::New, "packet {index}");
            }
            seq = seq.wrapping_add(1);
            timestamp = timestamp.wrapping_add(160);
        }
        let lost = u64::from(total / 1000);
        assert_eq!(stats.expected(), u64::from(total));
        assert_eq!(stats.received(), u64::from(total) - lost);
        let highest = u64::from(start) + u64::from(total) - 1;
        assert_eq!(u64::from(stats.extended_highest()), highest);
        assert_eq!(stats.extended_highest() >> 16, 5 + 1);
        assert!(stats.jitter_ms().abs() < 1e-9, "constant transit across timestamp wraps");
    }

    #[test]
    fn reordering_across_a_wrap() {
        let mut stats = ReceiveStats::new(8000);
        for seq in [65533, 65534, 0, 65535, 1, 2] {
            assert_eq!(stats.on_packet(3, seq, 0, Duration::ZERO), PacketVerdict::New, "{seq}");
        }
        assert_eq!(stats.on_packet(3, 65535, 0, Duration::ZERO), PacketVerdict::Duplicate);
        assert_eq!(stats.extended_highest(), 65536 + 2);
        assert_eq!(stats.cumulative_lost(), -1);
    }

    #[test]
    fn a_big_jump_restarts_after_two_sequential_packets() {
        let mut stats = ReceiveStats::new(8000);
        feed(&mut stats, 0..10);
        assert_eq!(stats.on_packet(7, 20_000, 0, Duration::ZERO), PacketVerdict::Probation);
        // A stray big jump followed by the normal stream changes nothing.
        feed(&mut stats, 10..12);
        assert_eq!((stats.expected(), stats.received()), (12, 12));
        // Two sequential packets after a jump: the source restarted.
        assert_eq!(stats.on_packet(7, 40_000, 0, Duration::ZERO), PacketVerdict::Probation);
        assert_eq!(stats.on_packet(7, 40_001, 0, Duration::ZERO), PacketVerdict::New);
        assert_eq!((stats.expected(), stats.received(), stats.extended_highest()), (1, 1, 40_001));
        // A packet far behind is a jump too, not a late packet.
        assert_eq!(stats.on_packet(7, 39_000, 0, Duration::ZERO), PacketVerdict::Probation);
    }

    #[test]
    fn a_new_ssrc_resets_everything() {
        let mut stats = ReceiveStats::new(8000);
        feed(&mut stats, (0..50).filter(|s| s % 2 == 0));
        stats.on_sender_report(0x1234_5678, Duration::ZERO);
        assert_eq!(stats.on_packet(8, 1000, 5, Duration::from_secs(1)), PacketVerdict::SourceChanged);
        assert_eq!(stats.ssrc(), Some(8));
        assert_eq!((stats.expected(), stats.received(), stats.cumulative_lost()), (1, 1, 0));
        assert_eq!(stats.on_packet(8, 1001, 165, Duration::from_secs(1) + MS * 20), PacketVerdict::New);
        let block = stats.report_block(Duration::from_secs(2)).unwrap();
        assert_eq!((block.ssrc, block.extended_highest, block.total_lost), (8, 1001, 0));
        assert_eq!((block.last_sr, block.delay_since_last_sr), (0, 0));
        // Back to the old SSRC: another change.
        assert_eq!(stats.on_packet(7, 3, 0, Duration::from_secs(3)), PacketVerdict::SourceChanged);
    }

    #[test]
    fn jitter_is_zero_for_constant_transit_and_follows_a8_otherwise() {
        let mut stats = ReceiveStats::new(8000);
        // A constant 73 ms network delay.
        for index in 0..200u32 {
            stats.on_packet(1, index as u16, index * 160 + 999, MS * (20 * index + 73));
        }
        assert_eq!(stats.jitter_ms(), 0.0);
        // Arrival alternating 10 ms early and late: |D| = 20 ms each time, so J -> 20 ms.
        let mut stats = ReceiveStats::new(8000);
        let mut expected = 0.0f64;
        for index in 0..400u32 {
            let arrival = MS * 20 * index + if index % 2 == 0 { MS * 10 } else { MS * 30 };
            stats.on_packet(1, index as u16, index * 160, arrival);
            if index > 0 {
                expected += (20.0 - expected) / 16.0;
            }
        }
        assert!((stats.jitter_ms() - expected).abs() < 1e-9);
        assert!((stats.jitter_ms() - 20.0).abs() < 0.01, "{}", stats.jitter_ms());
        assert_eq!(stats.report_block(Duration::ZERO).unwrap().jitter, 160);
        // At 48 kHz the same delay is 6 times as many timestamp units.
        let mut stats = ReceiveStats::new(48000);
        for index in 0..400u32 {
            let arrival = MS * 20 * index + if index % 2 == 0 { MS * 10 } else { MS * 30 };
            stats.on_packet(1, index as u16, index * 960, arrival);
        }
        assert_eq!(stats.report_block(Duration::ZERO).unwrap().jitter, 960);
    }

    #[test]
    fn one_late_packet_moves_jitter_by_a_sixteenth() {
        let mut stats = ReceiveStats::new(8000);
        feed(&mut stats, 0..10);
        // Packet 10 arrives 16 ms late (128 units): J = 128 / 16 = 8 units = 1 ms.
        stats.on_packet(7, 10, 1600, MS * (200 + 16));
        assert!((stats.jitter_ms() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn lsr_and_dlsr_fill_the_report() {
        let mut stats = ReceiveStats::new(8000);
        feed(&mut stats, 0..5);
        stats.on_sender_report(0xB705_2000, Duration::from_secs(10));
        let block = stats.report_block(Duration::from_millis(15_250)).unwrap();
        assert_eq!(block.last_sr, 0xB705_2000);
        assert_eq!(block.delay_since_last_sr, 0x0005_4000, "5.25 s in 1/65536 s");
        // A report built "before" the SR arrived (clock confusion) says 0, not garbage.
        assert_eq!(stats.report_block(Duration::from_secs(1)).unwrap().delay_since_last_sr, 0);
    }

    #[test]
    fn round_trip_follows_the_rfc_example() {
        // RFC 3550 section 6.4.1, figure 2: A = 0xb710:8000, LSR = 0xb705:2000,
        // DLSR = 0x0005:4000, so the round trip is 0x0006:2000 = 6.125 s.
        let rtt = round_trip(0xB710_8000, 0xB705_2000, 0x0005_4000);
        assert_eq!(rtt, Some(Duration::from_millis(6125)));
        assert_eq!(round_trip(0xB710_8000, 0, 0x0005_4000), None, "no SR yet");
        assert_eq!(round_trip(0xB705_2000, 0xB705_2000, 1), None, "negative");
        assert_eq!(round_trip(0xB705_0000, 0xB705_2000, 0), None, "report from the future");
        assert_eq!(round_trip(0xB705_2000, 0xB705_2000, 0), Some(Duration::ZERO));
        // Across the roll-over of the 16-bit seconds.
        assert_eq!(round_trip(0x0000_8000, 0xFFFF_8000, 0x0000_8000), Some(Duration::from_millis(500)));
    }

    #[test]
    fn middle_32_bits_of_ntp() {
        assert_eq!(ntp_middle32(0x1_B710, 0x8000_0000), 0xB710_8000);
        assert_eq!(ntp_middle32(u64::MAX, u32::MAX), 0xFFFF_FFFF);
        assert_eq!(ntp_middle32(0, 0xFFFF), 0);
    }

    #[test]
    fn total_lost_is_clamped_to_24_bits() {
        let mut stats = ReceiveStats::new(8000);
        // Jumps below MAX_DROPOUT are gaps: 2999 lost per step, past 2^23 in total.
        let mut seq = 0u16;
        for _ in 0..3000 {
            stats.on_packet(1, seq, 0, Duration::ZERO);
            seq = seq.wrapping_add(MAX_DROPOUT - 1);
        }
        assert!(stats.cumulative_lost() > 0x7F_FFFF);
        assert_eq!(stats.report_block(Duration::ZERO).unwrap().total_lost, 0x7F_FFFF);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut stats = ReceiveStats::new(0);
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let ssrc = (x >> 62) as u32;
            stats.on_packet(ssrc, (x >> 16) as u16, (x >> 32) as u32, Duration::from_nanos(x >> 3));
            if x.is_multiple_of(97) {
                stats.on_sender_report((x >> 7) as u32, Duration::from_nanos(x));
                stats.report_block(Duration::from_nanos(x >> 1));
            }
        }
        stats.on_packet(1, 0, 0, Duration::MAX);
        stats.report_block(Duration::MAX);
    }

    #[test]
    fn telephone_events_count_for_loss_but_not_for_jitter() {
        let mut stats = ReceiveStats::new(8000);
        let ms = Duration::from_millis;
        // Steady audio, then a digit: 7 packets with the timestamp of the digit's start.
        for n in 0..50u16 {
            stats.on_packet(9, n, u32::from(n) * 160, ms(u64::from(n) * 20));
        }
        for n in 50..57u16 {
            assert_eq!(stats.on_untimed_packet(9, n), PacketVerdict::New);
        }
        for n in 57..100u16 {
            stats.on_packet(9, n, u32::from(n) * 160, ms(u64::from(n) * 20));
        }
        assert!(stats.jitter_ms() < 0.01, "{}", stats.jitter_ms());
        assert_eq!((stats.received(), stats.cumulative_lost()), (100, 0));
    }
}
