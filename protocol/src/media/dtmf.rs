//! DTMF as RTP telephone-events (RFC 4733): the 4-byte event payload (section 2.3), a sender
//! that turns queued digits into event packets following the sender rules of section 2.5, and
//! a receiver that reports each digit once however the packets arrive.
//!
//! The sender is driven by the audio packet clock: once per packet slot the media loop asks it
//! whether an event packet replaces the audio packet. One digit is 100 ms of tone (enough for
//! any gateway, which needs 40 ms per ITU-T Q.24), its final packet is sent three times
//! (section 2.5.1.4) and 60 ms of audio separate two digits.

use std::collections::VecDeque;

use super::MediaError;

/// How long each digit is signalled, in milliseconds of tone.
pub const TONE_MS: u32 = 100;
/// The audio between two digits, in milliseconds.
pub const PAUSE_MS: u32 = 60;
/// How many times the final packet of an event goes out (RFC 4733 section 2.5.1.4).
pub const END_REPEATS: u32 = 3;
/// The volume we announce: -10 dBm0, a typical level for DTMF (RFC 4733 section 2.5.2.2).
pub const VOLUME: u8 = 10;
/// At most this many digits wait to be sent; a caller pasting a novel gets an error.
pub const MAX_PENDING_DIGITS: usize = 64;

/// Event code of the hook flash (RFC 4733 section 3.2), not a digit.
pub const EVENT_FLASH: u8 = 16;

/// One telephone-event as carried in the RTP payload (RFC 4733 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code: 0-15 for the DTMF digits (section 3.2).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in -dBm0, 0..=63 (only the low 6 bits are sent).
    pub volume: u8,
    /// How long the event has lasted so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads the first event of a payload. Several events may be stacked in one packet
    /// (section 2.5.1.5, redundancy); the first is the current one and the rest are ignored.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, MediaError> {
        match payload {
            [event, flags, high, low, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                // The R bit (0x40) is reserved and ignored by receivers.
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*high, *low]),
            }),
            _ => Err(MediaError::TruncatedEvent),
        }
    }

    /// The 4 payload bytes; the reserved bit is always 0.
    pub fn to_bytes(&self) -> [u8; 4] {
        let [high, low] = self.duration.to_be_bytes();
        let end = if self.end { 0x80 } else { 0 };
        [self.event, end | (self.volume & 0x3F), high, low]
    }
}

/// The event code of a DTMF digit (RFC 4733 section 3.2), accepting lower-case A-D.
pub fn event_for_digit(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        'a'..='d' => Some(c as u8 - b'a' + 12),
        _ => None,
    }
}

/// The digit an event code stands for, A-D in upper case; `None` for non-DTMF events.
pub fn digit_for_event(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// An event packet to send in place of the audio packet of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// The telephone-event payload.
    pub payload: [u8; 4],
    /// The RTP marker bit: set on the first packet of an event (section 2.5.1.3).
    pub marker: bool,
    /// The RTP timestamp: the event's start, the same for all of its packets (section 2.5.1.2).
    pub timestamp: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SenderState {
    Idle,
    /// The tone is on; `sent` packets have gone out so far.
    Tone {
        event: u8,
        timestamp: u32,
        sent: u32,
    },
    /// The final packet went out and `left` more copies of it are due.
    Ending {
        event: u8,
        timestamp: u32,
        duration: u16,
        left: u32,
    },
    /// Audio flows again for `left` more slots before the next digit may start.
    Pause {
        left: u32,
    },
}

/// Turns queued digits into telephone-event packets, one decision per audio packet slot.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    /// The duration increase of one packet, in RTP timestamp units.
    samples_per_packet: u32,
    /// Packets of tone per digit, the last of which carries the E bit.
    tone_packets: u32,
    pause_slots: u32,
    pending: VecDeque<u8>,
    state: SenderState,
}

impl DtmfSender {
    /// A sender for a telephone-event stream at `clock_rate` Hz whose audio goes out every
    /// `packet_ms`. Zero values are taken as 1 so that nothing divides by zero.
    pub fn new(clock_rate: u32, packet_ms: u32) -> Self {
        let clock_rate = u64::from(clock_rate.max(1));
        let packet_ms = packet_ms.max(1);
        let samples = (u64::from(packet_ms) * clock_rate / 1000).max(1);
        DtmfSender {
            samples_per_packet: u32::try_from(samples).unwrap_or(u32::MAX),
            tone_packets: TONE_MS.div_ceil(packet_ms).max(1),
            pause_slots: PAUSE_MS.div_ceil(packet_ms).max(1),
            pending: VecDeque::new(),
            state: SenderState::Idle,
        }
    }

    /// Queues digits to send after those already queued. Either all of them are queued or,
    /// on an error, none.
    pub fn queue(&mut self, digits: &str) -> Result<(), MediaError> {
        if digits.is_empty() {
            return Err(MediaError::NoDigits);
        }
        let mut events = Vec::new();
        for c in digits.chars() {
            events.push(event_for_digit(c).ok_or(MediaError::UnknownDigit(c))?);
            if self.pending.len() + events.len() > MAX_PENDING_DIGITS {
                return Err(MediaError::TooManyDigits);
            }
        }
        self.pending.extend(events);
        Ok(())
    }

    /// Whether a digit or the pause after it is under way, or digits wait.
    pub fn is_busy(&self) -> bool {
        self.state != SenderState::Idle || !self.pending.is_empty()
    }

    /// Decides the packet slot whose audio packet would carry `rtp_timestamp`: an event packet
    /// to send instead of the audio, or `None` to send the audio as usual.
    pub fn next(&mut self, rtp_timestamp: u32) -> Option<EventPacket> {
        if self.state == SenderState::Idle {
            let event = self.pending.pop_front()?;
            self.state = SenderState::Tone { event, timestamp: rtp_timestamp, sent: 0 };
        }
        match self.state {
            SenderState::Idle => None,
            SenderState::Tone { event, timestamp, sent } => {
                let sent = sent.saturating_add(1);
                let duration = self.duration_after(sent);
                let end = sent >= self.tone_packets;
                self.state = if end {
                    self.after_end_packet(event, timestamp, duration, END_REPEATS - 1)
                } else {
                    SenderState::Tone { event, timestamp, sent }
                };
                Some(packet(event, end, duration, sent == 1, timestamp))
            }
            SenderState::Ending { event, timestamp, duration, left } => {
                self.state = self.after_end_packet(event, timestamp, duration, left - 1);
                Some(packet(event, true, duration, false, timestamp))
            }
            SenderState::Pause { left } => {
                self.state =
                    if left <= 1 { SenderState::Idle } else { SenderState::Pause { left: left - 1 } };
                None
            }
        }
    }

    fn after_end_packet(&self, event: u8, timestamp: u32, duration: u16, left: u32) -> SenderState {
        if left == 0 {
            SenderState::Pause { left: self.pause_slots }
        } else {
            SenderState::Ending { event, timestamp, duration, left }
        }
    }

    /// The duration field after `packets` packets. 100 ms fits 16 bits up to 655 kHz, so the
    /// long-event segmentation of section 2.5.1.3 is never needed; saturating keeps it safe.
    fn duration_after(&self, packets: u32) -> u16 {
        let duration = u64::from(packets) * u64::from(self.samples_per_packet);
        u16::try_from(duration).unwrap_or(u16::MAX)
    }
}

fn packet(event: u8, end: bool, duration: u16, marker: bool, timestamp: u32) -> EventPacket {
    let payload = TelephoneEvent { event, end, volume: VOLUME, duration }.to_bytes();
    EventPacket { payload, marker, timestamp }
}

/// How many recent event timestamps the receiver remembers to recognise repeats.
const REMEMBERED_EVENTS: usize = 16;

/// Reports each received telephone-event once.
///
/// An event is identified by its RTP timestamp, which all its packets share: the first packet
/// seen of a timestamp reports the event, whether it is the start, a later update (the start
/// was lost) or an end packet, and its repeats and duplicates are ignored. A few recent
/// timestamps are remembered so that a straggler of the previous event does not report it
/// again, while a peer restarting its timestamps is still understood.
#[derive(Debug, Clone, Default)]
pub struct DtmfReceiver {
    recent: VecDeque<u32>,
}

impl DtmfReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one telephone-event packet; returns the digit when this packet is the first seen
    /// of a new event. Non-DTMF events (flash and the like) are consumed silently.
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8]) -> Result<Option<char>, MediaError> {
        let event = TelephoneEvent::parse(payload)?;
        if self.recent.contains(&timestamp) {
            return Ok(None);
        }
        if self.recent.len() == REMEMBERED_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(timestamp);
        Ok(digit_for_event(event.event))
    }

    /// Forgets the events seen, for a new source (SSRC change) whose timestamps start afresh.
    pub fn reset(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a sender over consecutive 20 ms slots at 8 kHz starting at `start`, until it is
    /// idle; returns (slot timestamp, packet) for every slot.
    fn run(sender: &mut DtmfSender, start: u32) -> Vec<(u32, Option<EventPacket>)> {
        let mut slots = Vec::new();
        let mut timestamp = start;
        while sender.is_busy() {
            slots.push((timestamp, sender.next(timestamp)));
            timestamp = timestamp.wrapping_add(160);
            assert!(slots.len() < 1000, "the sender never finishes");
        }
        slots
    }

    #[test]
    fn payload_round_trips_and_reads_the_first_event_only() {
        let event = TelephoneEvent { event: 11, end: true, volume: 10, duration: 800 };
        assert_eq!(event.to_bytes(), [11, 0x8A, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&event.to_bytes()), Ok(event));
        // A second, redundant event and the reserved bit are ignored.
        let stacked = [5, 0x4A, 0x00, 0xA0, 4, 0x8A, 0x03, 0x20];
        let first = TelephoneEvent::parse(&stacked).unwrap();
        assert_eq!(first, TelephoneEvent { event: 5, end: false, volume: 10, duration: 160 });
        assert_eq!(TelephoneEvent { volume: 0xFF, ..first }.to_bytes()[1], 0x3F);
    }

    #[test]
    fn short_payloads_are_truncated_events() {
        for len in 0..4 {
            assert_eq!(TelephoneEvent::parse(&[1, 2, 3][..len.min(3)]), Err(MediaError::TruncatedEvent));
        }
        let mut receiver = DtmfReceiver::new();
        assert_eq!(receiver.on_packet(0, &[1, 0x80]), Err(MediaError::TruncatedEvent));
    }

    #[test]
    fn digits_and_event_codes_map_both_ways() {
        let digits = "0123456789*#ABCD";
        for (code, digit) in digits.chars().enumerate() {
            assert_eq!(event_for_digit(digit), Some(code as u8));
            assert_eq!(digit_for_event(code as u8), Some(digit));
        }
        assert_eq!(event_for_digit('c'), Some(14));
        for bad in ['e', 'E', ' ', '+', 'ö', '\0'] {
            assert_eq!(event_for_digit(bad), None);
        }
        assert_eq!(digit_for_event(EVENT_FLASH), None);
        assert_eq!(digit_for_event(255), None);
    }

    #[test]
    fn queue_is_all_or_nothing() {
        let mut sender = DtmfSender::new(8000, 20);
        assert_eq!(sender.queue(""), Err(MediaError::NoDigits));
        assert_eq!(sender.queue("12x3"), Err(MediaError::UnknownDigit('x')));
        assert!(!sender.is_busy(), "nothing of a bad string is queued");
        assert_eq!(sender.queue(&"1".repeat(65)), Err(MediaError::TooManyDigits));
        assert!(!sender.is_busy());
        sender.queue(&"1".repeat(60)).unwrap();
        assert_eq!(sender.queue("12345"), Err(MediaError::TooManyDigits));
        sender.queue("abcd").unwrap();
        assert_eq!(sender.queue("0"), Err(MediaError::TooManyDigits));
        // Digits that have started no longer count as pending.
        sender.next(0);
        sender.queue("0").unwrap();
    }

    #[test]
    fn sends_1_then_hash_as_rfc4733_prescribes() {
        let mut sender = DtmfSender::new(8000, 20);
        sender.queue("1#").unwrap();
        let slots = run(&mut sender, 1000);
        // Per digit: 5 packets of tone (the 5th is the first end packet), 2 more end packets,
        // then 3 slots of audio.
        assert_eq!(slots.len(), 2 * (5 + 2 + 3));
        for (digit, event) in [(0, 1), (1, 11)] {
            let slots = &slots[digit * 10..digit * 10 + 10];
            let start = slots[0].0;
            let packets: Vec<TelephoneEvent> = slots[..7]
                .iter()
                .map(|(_, packet)| {
                    let packet = packet.expect("an event packet in the first 7 slots");
                    assert_eq!(packet.timestamp, start, "all packets carry the event's start");
                    TelephoneEvent::parse(&packet.payload).unwrap()
                })
                .collect();
            let markers: Vec<bool> = slots[..7].iter().map(|(_, p)| p.unwrap().marker).collect();
            assert_eq!(markers, [true, false, false, false, false, false, false]);
            let durations: Vec<u16> = packets.iter().map(|p| p.duration).collect();
            assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
            let ends: Vec<bool> = packets.iter().map(|p| p.end).collect();
            assert_eq!(ends, [false, false, false, false, true, true, true]);
            assert!(packets.iter().all(|p| p.event == event && p.volume == VOLUME));
            assert!(slots[7..].iter().all(|(_, packet)| packet.is_none()), "the pause sends audio");
        }
        assert_eq!(slots[10].0, 1000 + 10 * 160, "the second event starts at its own slot");
        assert!(!sender.is_busy());
        assert_eq!(sender.next(99_999), None);
    }

    #[test]
    fn is_busy_until_the_trailing_pause_ends() {
        let mut sender = DtmfSender::new(8000, 20);
        sender.queue("5").unwrap();
        let mut busy = Vec::new();
        for slot in 0..12 {
            sender.next(slot * 160);
            busy.push(sender.is_busy());
        }
        assert_eq!(busy.iter().filter(|&&b| b).count(), 9, "7 event slots + 3 pause slots - 1");
        assert!(!busy[9] && !busy[11]);
    }

    #[test]
    fn other_packet_sizes_and_rates() {
        // 30 ms at 48 kHz: 4 packets of tone (120 ms), steps of 1440, pause of 2 slots.
        let mut sender = DtmfSender::new(48000, 30);
        sender.queue("9").unwrap();
        let packets: Vec<Option<EventPacket>> = (0..9).map(|slot| sender.next(slot * 1440)).collect();
        let durations: Vec<u16> =
            packets.iter().flatten().map(|p| TelephoneEvent::parse(&p.payload).unwrap().duration).collect();
        assert_eq!(durations, [1440, 2880, 4320, 5760, 5760, 5760]);
        assert!(packets[6..].iter().all(Option::is_none));
        assert!(!sender.is_busy());
        // Degenerate settings neither panic nor loop forever.
        for (rate, ms) in [(0, 0), (u32::MAX, u32::MAX), (8000, 1000), (1, 1)] {
            let mut sender = DtmfSender::new(rate, ms);
            sender.queue("1").unwrap();
            let mut slots = 0;
            while sender.is_busy() {
                sender.next(u32::MAX);
                slots += 1;
                assert!(slots < 1000);
            }
        }
    }

    #[test]
    fn timestamps_wrap_around() {
        let mut sender = DtmfSender::new(8000, 20);
        sender.queue("12").unwrap();
        let slots = run(&mut sender, u32::MAX - 320);
        let first = slots[0].1.unwrap();
        assert_eq!(first.timestamp, u32::MAX - 320);
        assert!(slots[..7].iter().all(|(_, p)| p.unwrap().timestamp == u32::MAX - 320));
        let second = slots[10].1.unwrap();
        assert_eq!(second.timestamp, (u32::MAX - 320).wrapping_add(1600));
        assert!(second.marker);
        let mut receiver = DtmfReceiver::new();
        let heard: Vec<char> = slots
            .iter()
            .filter_map(|(_, p)| *p)
            .filter_map(|p| receiver.on_packet(p.timestamp, &p.payload).unwrap())
            .collect();
        assert_eq!(heard, ['1', '2']);
    }

    fn sent_packets(digits: &str) -> Vec<EventPacket> {
        let mut sender = DtmfSender::new(8000, 20);
        sender.queue(digits).unwrap();
        run(&mut sender, 42).into_iter().filter_map(|(_, packet)| packet).collect()
    }

    fn hear(receiver: &mut DtmfReceiver, packets: &[EventPacket]) -> String {
        packets.iter().filter_map(|p| receiver.on_packet(p.timestamp, &p.payload).unwrap()).collect()
    }

    #[test]
    fn receiver_reports_each_digit_once() {
        let packets = sent_packets("1#");
        assert_eq!(hear(&mut DtmfReceiver::new(), &packets), "1#");
    }

    #[test]
    fn receiver_survives_loss_duplicates_and_reordering() {
        let packets = sent_packets("1#");
        // Both start packets (with the marker) lost.
        let lost: Vec<EventPacket> = packets.iter().copied().filter(|p| !p.marker).collect();
        assert_eq!(hear(&mut DtmfReceiver::default(), &lost), "1#");
        // Only the end packets of each event arrive.
        let ends: Vec<EventPacket> =
            packets.iter().copied().filter(|p| TelephoneEvent::parse(&p.payload).unwrap().end).collect();
        assert_eq!(hear(&mut DtmfReceiver::new(), &ends), "1#");
        // Every packet twice, and a straggler of the first event after the second began.
        let mut doubled: Vec<EventPacket> = packets.iter().flat_map(|&p| [p, p]).collect();
        doubled.push(packets[2]);
        assert_eq!(hear(&mut DtmfReceiver::new(), &doubled), "1#");
    }

    #[test]
    fn the_same_digit_twice_is_two_events() {
        let packets = sent_packets("55");
        assert_eq!(hear(&mut DtmfReceiver::new(), &packets), "55");
    }

    #[test]
    fn non_digit_events_are_consumed_silently() {
        let mut receiver = DtmfReceiver::new();
        let flash = TelephoneEvent { event: EVENT_FLASH, end: false, volume: 10, duration: 160 };
        assert_eq!(receiver.on_packet(7, &flash.to_bytes()), Ok(None));
        let one = TelephoneEvent { event: 1, ..flash };
        // Same timestamp as the flash: still the flash event.
        assert_eq!(receiver.on_packet(7, &one.to_bytes()), Ok(None));
        assert_eq!(receiver.on_packet(8, &one.to_bytes()), Ok(Some('1')));
    }

    #[test]
    fn receiver_memory_is_bounded_and_reset_forgets() {
        let mut receiver = DtmfReceiver::new();
        let zero = TelephoneEvent { event: 0, end: true, volume: 10, duration: 800 }.to_bytes();
        for timestamp in 0..1000u32 {
            assert_eq!(receiver.on_packet(timestamp.wrapping_mul(2_654_435_761), &zero), Ok(Some('0')));
        }
        assert!(receiver.recent.len() <= REMEMBERED_EVENTS);
        assert_eq!(receiver.on_packet(5, &zero), Ok(Some('0')));
        assert_eq!(receiver.on_packet(5, &zero), Ok(None));
        receiver.reset();
        assert_eq!(receiver.on_packet(5, &zero), Ok(Some('0')));
    }
}
