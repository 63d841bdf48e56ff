//! A call's RTP and RTCP on the wire: the port pair from the configured range, RTP packets
//! (rtc-rtp) and RTCP compound packets (rtc-rtcp): sender and receiver reports, SDES CNAME
//! and BYE (RFC 3550 section 6).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cusax_protocol::media::stats::{ReportBlock, ntp_middle32};
use rtc_rtcp::goodbye::Goodbye;
use rtc_rtcp::packet::Packet as RtcpPacket;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc_rtp::header::Header;
use rtc_rtp::packet::Packet;
use rtc_shared::marshal::{Marshal, Unmarshal};
use tokio::net::UdpSocket;

use crate::sip::OsEntropy;
use cusax_protocol::sip::registration::Entropy;

/// How many random even ports to try before giving up on the range.
const BIND_ATTEMPTS: usize = 64;

/// The RTP socket of a call and, next to it, the RTCP one (RTP port + 1, RFC 3550 section
/// 11), which stays unused when both sides agree on `rtcp-mux` (RFC 5761).
#[derive(Debug)]
pub struct RtpSockets {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

impl RtpSockets {
    /// Binds an even port and the odd one after it, at random within `range` so that
    /// consecutive calls do not reuse a port a late packet may still reach.
    pub async fn reserve(ip: IpAddr, range: &RangeInclusive<u16>) -> std::io::Result<RtpSockets> {
        // The first even port in the range (RTP takes even ports, RFC 3550 section 11).
        let low = range.start().checked_add(range.start() % 2).unwrap_or(u16::MAX);
        let high = *range.end();
        let pairs = u32::from(high.saturating_sub(low).saturating_add(1)) / 2;
        if pairs == 0 {
            return Err(std::io::Error::other("the RTP port range holds no port pair"));
        }
        let mut last = std::io::Error::other("no free RTP port pair in the range");
        for _ in 0..BIND_ATTEMPTS {
            let mut bytes = [0u8; 4];
            OsEntropy.fill(&mut bytes);
            let pair = u32::from_be_bytes(bytes) % pairs;
            let Ok(port) = u16::try_from(u32::from(low) + pair * 2) else { continue };
            let rtp = match UdpSocket::bind(SocketAddr::new(ip, port)).await {
                Ok(socket) => socket,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match UdpSocket::bind(SocketAddr::new(ip, port + 1)).await {
                Ok(rtcp) => return Ok(RtpSockets { rtp, rtcp }),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn rtp_address(&self) -> std::io::Result<SocketAddr> {
        self.rtp.local_addr()
    }
}

/// RFC 5761 section 4: on a muxed port, payload types 64-95 (with the marker bit: second
/// octet 192-223) are RTCP.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && (192..=223).contains(&datagram[1])
}

/// One RTP packet read off the wire.
pub struct Received {
    pub header: Header,
    pub payload: Bytes,
}

pub fn parse_rtp(datagram: &[u8]) -> Option<Received> {
    let mut bytes = Bytes::copy_from_slice(datagram);
    let packet = Packet::unmarshal(&mut bytes).ok()?;
    (packet.header.version == 2).then_some(Received { header: packet.header, payload: packet.payload })
}

/// The sending half of our RTP stream: SSRC, sequence number and timestamp from random
/// starting points (RFC 3550 section 5.1), and the counts a sender report carries.
pub struct RtpSender {
    pub ssrc: u32,
    sequence: u16,
    pub packets: u32,
    pub octets: u32,
    /// The RTP timestamp of the last audio packet and when it was sent: a sender report
    /// extrapolates "now" from it (telephone-events keep their start timestamp, so they
    /// would skew it).
    last_audio: Option<(u32, std::time::Instant)>,
    /// Sent since the last report: the next one is an SR, else an RR (RFC 3550 6.4).
    sent_since_report: bool,
}

impl RtpSender {
    pub fn new() -> Self {
        let mut bytes = [0u8; 6];
        OsEntropy.fill(&mut bytes);
        Self {
            ssrc: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            sequence: u16::from_be_bytes([bytes[4], bytes[5]]),
            packets: 0,
            octets: 0,
            last_audio: None,
            sent_since_report: false,
        }
    }

    pub fn audio_packet(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        self.last_audio = Some((timestamp, std::time::Instant::now()));
        self.packet(payload_type, marker, timestamp, payload)
    }

    /// A packet of any payload type (telephone-events); audio goes through `audio_packet`.
    pub fn packet(&mut self, payload_type: u8, marker: bool, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let header = Header {
            version: 2,
            marker,
            payload_type,
            sequence_number: self.sequence,
            timestamp,
            ssrc: self.ssrc,
            ..Header::default()
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        self.sent_since_report = true;
        let packet = Packet { header, payload: Bytes::copy_from_slice(payload) };
        packet.marshal().map(|b| b.to_vec()).unwrap_or_default()
    }

    /// A compound report: an SR when we sent since the last report (its NTP time now, its
    /// RTP time extrapolated at `clock_rate`), else an RR; our reception report; SDES with
    /// our CNAME; and BYE when we leave.
    pub fn compound_report(
        &mut self,
        block: Option<ReportBlock>,
        cname: &str,
        clock_rate: u32,
        bye: bool,
    ) -> Vec<u8> {
        let reports: Vec<ReceptionReport> = block
            .map(|b| ReceptionReport {
                ssrc: b.ssrc,
                fraction_lost: b.fraction_lost,
                total_lost: b.total_lost,
                last_sequence_number: b.extended_highest,
                jitter: b.jitter,
                last_sender_report: b.last_sr,
                delay: b.delay_since_last_sr,
            })
            .into_iter()
            .collect();
        let mut packets: Vec<Box<dyn RtcpPacket>> = Vec::new();
        match self.last_audio.filter(|_| std::mem::take(&mut self.sent_since_report)) {
            Some((timestamp, at)) => {
                let elapsed = at.elapsed().as_secs_f64() * f64::from(clock_rate);
                packets.push(Box::new(SenderReport {
                    ssrc: self.ssrc,
                    ntp_time: ntp_time(SystemTime::now()),
                    rtp_time: timestamp.wrapping_add(elapsed as u32),
                    packet_count: self.packets,
                    octet_count: self.octets,
                    reports,
                    profile_extensions: Bytes::new(),
                }));
            }
            None => packets.push(Box::new(ReceiverReport {
                ssrc: self.ssrc,
                reports,
                profile_extensions: Bytes::new(),
            })),
        }
        packets.push(Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: self.ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::copy_from_slice(cname.as_bytes()),
                }],
            }],
        }));
        if bye {
            packets.push(Box::new(Goodbye { sources: vec![self.ssrc], reason: Bytes::new() }));
        }
        rtc_rtcp::packet::marshal(&packets).map(|b| b.to_vec()).unwrap_or_default()
    }
}

/// What an RTCP compound packet told us.
#[derive(Debug, Default)]
pub struct RtcpReading {
    /// Who reported (the SSRC of its SR or RR).
    pub sender: Option<u32>,
    /// The middle 32 bits of a sender report's NTP time, to echo as LSR.
    pub sender_report: Option<u32>,
    /// A report block about our stream.
    pub about_us: Option<ReceptionReport>,
}

pub fn read_rtcp(datagram: &[u8], our_ssrc: u32) -> RtcpReading {
    let mut reading = RtcpReading::default();
    let mut bytes = Bytes::copy_from_slice(datagram);
    let Ok(packets) = rtc_rtcp::packet::unmarshal(&mut bytes) else { return reading };
    for packet in &packets {
        let any = packet.as_any();
        let blocks = if let Some(sr) = any.downcast_ref::<SenderReport>() {
            reading.sender = Some(sr.ssrc);
            reading.sender_report = Some(ntp_middle32(sr.ntp_time >> 32, sr.ntp_time as u32));
            sr.reports.as_slice()
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            reading.sender = Some(rr.ssrc);
            rr.reports.as_slice()
        } else {
            &[]
        };
        if let Some(block) = blocks.iter().find(|b| b.ssrc == our_ssrc) {
            reading.about_us = Some(block.clone());
        }
    }
    reading
}

/// The 64-bit NTP time (seconds since 1900 and a binary fraction) of a wall-clock instant.
pub fn ntp_time(at: SystemTime) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    ((since.as_secs() + UNIX_TO_NTP) << 32) | fraction
}

/// The middle 32 bits of the NTP time now: what LSR and DLSR arithmetic works in.
pub fn ntp_now_middle32() -> u32 {
    let ntp = ntp_time(SystemTime::now());
    ntp_middle32(ntp >> 32, ntp as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_reads_back() {
        let mut sender = RtpSender::new();
        let bytes = sender.audio_packet(0, true, 1234, &[0xFF; 160]);
        assert_eq!(bytes.len(), 172);
        assert!(!is_rtcp(&bytes));
        let read = parse_rtp(&bytes).unwrap();
        assert!(read.header.marker);
        assert_eq!(read.header.timestamp, 1234);
        assert_eq!(read.header.ssrc, sender.ssrc);
        assert_eq!(read.payload.len(), 160);
        assert!(parse_rtp(&bytes[..8]).is_none());
    }

    #[test]
    fn a_report_reads_back_with_the_block_about_us() {
        let mut sender = RtpSender::new();
        // Nothing sent yet: a receiver report.
        let rr = read_rtcp(&sender.compound_report(None, "c", 8000, false), 77);
        assert_eq!((rr.sender, rr.sender_report), (Some(sender.ssrc), None));
        sender.audio_packet(0, false, 1, &[0; 160]);
        let block = ReportBlock {
            ssrc: 77,
            fraction_lost: 12,
            total_lost: 3,
            extended_highest: 70_000,
            jitter: 40,
            last_sr: 9,
            delay_since_last_sr: 65_536,
        };
        let bytes = sender.compound_report(Some(block), "cusaxd@host", 8000, true);
        assert!(is_rtcp(&bytes));
        let reading = read_rtcp(&bytes, 77);
        assert!(reading.sender_report.is_some());
        // Nothing sent since: the next one is a receiver report again.
        assert!(read_rtcp(&sender.compound_report(None, "c", 8000, false), 77).sender_report.is_none());
        let about = reading.about_us.unwrap();
        assert_eq!((about.fraction_lost, about.total_lost, about.jitter), (12, 3, 40));
        assert!(read_rtcp(b"\x80\xc8garbage", 77).about_us.is_none());
    }
}
