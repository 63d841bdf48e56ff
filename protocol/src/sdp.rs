//! SDP offer/answer (RFC 3264, syntax RFC 8866) for one audio stream, over sdp-types.
//!
//! We offer our codecs in preference order plus `telephone-event` (RFC 4733); an answer keeps
//! the offerer's m-line, picks the first of our codecs the offer has, and sets the direction
//! from both sides' (hold is `sendonly`/`inactive`, RFC 3264 section 8.4). The media issue
//! fills in real ports; this module only negotiates.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use sdp_types::{Media, Session};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("not SDP: {0}")]
    Parse(String),
    #[error("no audio stream in the SDP")]
    NoAudio,
    #[error("no codec in common")]
    NoCommonCodec,
    #[error("the SDP has no usable connection address")]
    NoAddress,
}

/// An audio codec as SDP names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    pub name: &'static str,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    /// The static payload type (RFC 3551), or the dynamic one we offer.
    pub payload_type: u8,
    pub fmtp: Option<&'static str>,
}

pub const PCMU: Codec = Codec { name: "PCMU", clock_rate: 8000, channels: None, payload_type: 0, fmtp: None };
pub const PCMA: Codec = Codec { name: "PCMA", clock_rate: 8000, channels: None, payload_type: 8, fmtp: None };
pub const OPUS: Codec = Codec {
    name: "opus",
    clock_rate: 48000,
    channels: Some(2),
    payload_type: 96,
    fmtp: Some("useinbandfec=1"),
};
pub const TELEPHONE_EVENT: Codec = Codec {
    name: "telephone-event",
    clock_rate: 8000,
    channels: None,
    payload_type: 101,
    fmtp: Some("0-15"),
};
/// RFC 4733 section 2.3.1: events use the audio's clock, so Opus calls get their own.
pub const TELEPHONE_EVENT_48K: Codec = Codec { clock_rate: 48000, payload_type: 102, ..TELEPHONE_EVENT };

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_flags(send: bool, receive: bool) -> Self {
        match (send, receive) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Our direction in an answer: we send only what they receive, and the reverse.
    pub fn answering(self, offered: Direction) -> Direction {
        Direction::from_flags(self.sends() && offered.receives(), self.receives() && offered.sends())
    }
}

/// Our side of the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAudio {
    pub address: IpAddr,
    pub port: u16,
    /// Most preferred first.
    pub codecs: Vec<Codec>,
    pub direction: Direction,
}

/// The `o=` line's identity: the version goes up with every new offer or answer we make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpOrigin {
    pub session_id: u64,
    pub version: u64,
}

/// What both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec, with the payload type used on the wire.
    pub codec: Codec,
    /// The `telephone-event` payload type, when both sides have it.
    pub dtmf_payload_type: Option<u8>,
    /// The clock of those events: the codec's when the peer offered that rate, else 8000.
    pub dtmf_clock_rate: u32,
    /// Where to send RTP; `None` when the peer declined the stream (port 0).
    pub remote: Option<SocketAddr>,
    /// Our direction.
    pub direction: Direction,
    /// RTP and RTCP share the RTP port (RFC 5761), as both sides said `a=rtcp-mux`.
    pub rtcp_mux: bool,
    /// Where the peer wants RTCP when it is not RTP port + 1 (`a=rtcp`, RFC 3605).
    pub remote_rtcp: Option<SocketAddr>,
}

/// An offer with our codecs (and telephone-event).
pub fn offer(origin: &mut SdpOrigin, local: &LocalAudio) -> String {
    origin.version += 1;
    let mut codecs = local.codecs.clone();
    if codecs.iter().any(|c| c.clock_rate == TELEPHONE_EVENT_48K.clock_rate) {
        codecs.push(TELEPHONE_EVENT_48K);
    }
    codecs.push(TELEPHONE_EVENT);
    write_sdp(origin, local.address, local.port, &codecs, local.direction)
}

/// Answers a remote offer. The answer's codec list is the chosen codec (and telephone-event
/// when offered), with the offerer's payload type numbers.
pub fn answer(
    origin: &mut SdpOrigin,
    local: &LocalAudio,
    remote_offer: &[u8],
) -> Result<(String, Negotiated), SdpError> {
    let session = Session::parse(remote_offer).map_err(|e| SdpError::Parse(e.to_string()))?;
    // The first live unencrypted RTP audio stream is ours to take (AVPF answered as AVPF,
    // its feedback unused); a declined one only when there is no live one.
    let rtp = |m: &&Media| m.media == "audio" && (m.proto == "RTP/AVP" || m.proto == "RTP/AVPF");
    let media = session
        .medias
        .iter()
        .filter(rtp)
        .find(|m| m.port != 0)
        .or_else(|| session.medias.iter().find(rtp))
        .ok_or(SdpError::NoAudio)?;
    let offered = payload_types(media);
    let codec = local
        .codecs
        .iter()
        .find_map(|ours| {
            offered
                .iter()
                .find(|theirs| same_codec(ours, theirs))
                .map(|theirs| Codec { payload_type: theirs.payload_type, ..*ours })
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let dtmf = telephone_event(&offered, &codec);
    let rtcp_mux = media.has_attribute("rtcp-mux");
    let their_direction = direction_of(&session, media);
    let direction = local.direction.answering(their_direction);
    let mut codecs = vec![codec];
    if let Some(dtmf) = dtmf {
        codecs.push(Codec { payload_type: dtmf.payload_type, ..TELEPHONE_EVENT });
    }
    origin.version += 1;
    let port = if media.port == 0 { 0 } else { local.port };
    // RFC 3264 section 6: one m-line per offered stream, in order; the ones we do not take
    // (video, a second audio, SRTP profiles) are refused with port 0.
    let mut text = session_lines(origin, local.address);
    for offered_media in &session.medias {
        if std::ptr::eq(offered_media, media) {
            text.push_str(&audio_lines(port, &media.proto, &codecs, direction, rtcp_mux));
        } else {
            let format = offered_media.fmt.split_whitespace().next().unwrap_or("0");
            let _ = write!(text, "m={} 0 {} {format}\r\n", offered_media.media, offered_media.proto);
        }
    }
    let negotiated = Negotiated {
        codec,
        dtmf_payload_type: dtmf.map(|d| d.payload_type),
        dtmf_clock_rate: dtmf.map_or(TELEPHONE_EVENT.clock_rate, |d| d.clock_rate),
        remote: remote_address(&session, media)?,
        direction,
        rtcp_mux,
        remote_rtcp: rtcp_attribute(&session, media),
    };
    Ok((text, negotiated))
}

/// Reads the answer to our offer.
pub fn read_answer(local: &LocalAudio, remote_answer: &[u8]) -> Result<Negotiated, SdpError> {
    let (session, media) = audio(remote_answer)?;
    let media = &media;
    let answered = payload_types(media);
    // The answerer's first codec that we offered.
    let codec = answered
        .iter()
        .find_map(|theirs| {
            local
                .codecs
                .iter()
                .find(|ours| same_codec(ours, theirs))
                .map(|ours| Codec { payload_type: theirs.payload_type, ..*ours })
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let dtmf = telephone_event(&answered, &codec);
    let their_direction = direction_of(&session, media);
    Ok(Negotiated {
        codec,
        dtmf_payload_type: dtmf.map(|d| d.payload_type),
        dtmf_clock_rate: dtmf.map_or(TELEPHONE_EVENT.clock_rate, |d| d.clock_rate),
        remote: remote_address(&session, media)?,
        direction: local.direction.answering(their_direction),
        rtcp_mux: media.has_attribute("rtcp-mux"),
        remote_rtcp: rtcp_attribute(&session, media),
    })
}

fn write_sdp(
    origin: &SdpOrigin,
    address: IpAddr,
    port: u16,
    codecs: &[Codec],
    direction: Direction,
) -> String {
    let mut sdp = session_lines(origin, address);
    // RFC 5761 section 5.1.1: offered, and still ready for RTCP on port + 1 if refused.
    sdp.push_str(&audio_lines(port, "RTP/AVP", codecs, direction, true));
    sdp
}

fn session_lines(origin: &SdpOrigin, address: IpAddr) -> String {
    let family = if address.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=cusaxd {} {} IN {family} {address}\r\ns=-\r\nc=IN {family} {address}\r\nt=0 0\r\n",
        origin.session_id, origin.version
    )
}

fn audio_lines(port: u16, proto: &str, codecs: &[Codec], direction: Direction, rtcp_mux: bool) -> String {
    let formats: Vec<String> = codecs.iter().map(|c| c.payload_type.to_string()).collect();
    let mut sdp = format!("m=audio {port} {proto} {}\r\n", formats.join(" "));
    for codec in codecs {
        let channels = codec.channels.map(|c| format!("/{c}")).unwrap_or_default();
        let _ =
            write!(sdp, "a=rtpmap:{} {}/{}{channels}\r\n", codec.payload_type, codec.name, codec.clock_rate);
        if let Some(fmtp) = codec.fmtp {
            let _ = write!(sdp, "a=fmtp:{} {fmtp}\r\n", codec.payload_type);
        }
    }
    let _ = write!(sdp, "a=ptime:20\r\na={}\r\n", direction.as_str());
    if rtcp_mux {
        sdp.push_str("a=rtcp-mux\r\n");
    }
    sdp
}

fn audio(bytes: &[u8]) -> Result<(Session, Media), SdpError> {
    let session = Session::parse(bytes).map_err(|e| SdpError::Parse(e.to_string()))?;
    let media = session.medias.iter().find(|m| m.media == "audio").cloned().ok_or(SdpError::NoAudio)?;
    Ok((session, media))
}

/// The payload types of an m-line, named by their rtpmap or by RFC 3551 for static ones.
fn payload_types(media: &Media) -> Vec<Codec> {
    let rtpmaps: Vec<(u8, String, u32)> = media
        .get_attribute_values("rtpmap")
        .flatten()
        .filter_map(|value| {
            let (pt, encoding) = value.split_once(' ')?;
            let mut parts = encoding.split('/');
            let name = parts.next()?.to_owned();
            let rate = parts.next()?.parse().ok()?;
            Some((pt.parse().ok()?, name, rate))
        })
        .collect();
    media
        .fmt
        .split_whitespace()
        .filter_map(|pt| pt.parse::<u8>().ok())
        .filter_map(|pt| {
            if let Some((_, name, rate)) = rtpmaps.iter().find(|(p, _, _)| *p == pt) {
                let known = [PCMU, PCMA, OPUS, TELEPHONE_EVENT, TELEPHONE_EVENT_48K]
                    .into_iter()
                    .find(|c| c.name.eq_ignore_ascii_case(name) && c.clock_rate == *rate)?;
                return Some(Codec { payload_type: pt, ..known });
            }
            [PCMU, PCMA].into_iter().find(|c| c.payload_type == pt)
        })
        .collect()
}

/// The peer's telephone-event at the codec's clock, else at 8000 (which many phones use
/// whatever the codec).
fn telephone_event(codecs: &[Codec], codec: &Codec) -> Option<Codec> {
    let events = || codecs.iter().filter(|c| c.name.eq_ignore_ascii_case(TELEPHONE_EVENT.name));
    events()
        .find(|c| c.clock_rate == codec.clock_rate)
        .or_else(|| events().find(|c| c.clock_rate == TELEPHONE_EVENT.clock_rate))
        .copied()
}

/// `a=rtcp:PORT [IN IP4 ADDRESS]` (RFC 3605).
fn rtcp_attribute(session: &Session, media: &Media) -> Option<SocketAddr> {
    let value = media.get_first_attribute_value("rtcp").flatten()?;
    let mut words = value.split_whitespace();
    let port: u16 = words.next()?.parse().ok()?;
    let ip = match words.nth(2) {
        Some(address) => address.parse().ok()?,
        None => remote_address(session, media).ok().flatten()?.ip(),
    };
    Some(SocketAddr::new(ip, port))
}

fn same_codec(a: &Codec, b: &Codec) -> bool {
    a.name.eq_ignore_ascii_case(b.name) && a.clock_rate == b.clock_rate
}

fn direction_of(session: &Session, media: &Media) -> Direction {
    for (name, direction) in [
        ("sendrecv", Direction::SendRecv),
        ("sendonly", Direction::SendOnly),
        ("recvonly", Direction::RecvOnly),
        ("inactive", Direction::Inactive),
    ] {
        if media.has_attribute(name) || (!media_has_direction(media) && session.has_attribute(name)) {
            return direction;
        }
    }
    Direction::SendRecv
}

fn media_has_direction(media: &Media) -> bool {
    ["sendrecv", "sendonly", "recvonly", "inactive"].iter().any(|d| media.has_attribute(d))
}

fn remote_address(session: &Session, media: &Media) -> Result<Option<SocketAddr>, SdpError> {
    if media.port == 0 {
        return Ok(None);
    }
    let connection = media.connections.first().or(session.connection.as_ref()).ok_or(SdpError::NoAddress)?;
    let address = connection.connection_address.split('/').next().unwrap_or_default();
    let ip: IpAddr = address.parse().map_err(|_| SdpError::NoAddress)?;
    Ok(Some(SocketAddr::new(ip, media.port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(codecs: Vec<Codec>) -> LocalAudio {
        LocalAudio {
            address: "127.0.0.1".parse().unwrap(),
            port: 40000,
            codecs,
            direction: Direction::SendRecv,
        }
    }

    /// An offer the way baresip 1.0 writes one (PCMU/PCMA, telephone-event 101).
    const BARESIP_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 10002 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\na=label:1\r\na=ptime:20\r\n";

    #[test]
    fn our_offer_lists_codecs_in_order_with_telephone_event() {
        let mut origin = SdpOrigin { session_id: 42, version: 0 };
        let sdp = offer(&mut origin, &local(vec![OPUS, PCMU, PCMA]));
        assert!(sdp.contains("o=cusaxd 42 1 IN IP4 127.0.0.1\r\n"), "{sdp}");
        // telephone-event at Opus's clock and at 8000 (RFC 4733 section 2.3.1), rtcp-mux offered.
        assert!(sdp.contains("m=audio 40000 RTP/AVP 96 0 8 102 101\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:102 telephone-event/48000\r\n"), "{sdp}");
        assert!(
            sdp.contains("a=fmtp:101 0-15\r\n") && sdp.ends_with("a=sendrecv\r\na=rtcp-mux\r\n"),
            "{sdp}"
        );
        assert!(!offer(&mut origin, &local(vec![PCMU])).contains("telephone-event/48000"));
        // It parses back, and a later offer has a higher version.
        assert_eq!(read_answer(&local(vec![PCMU]), sdp.as_bytes()).unwrap().codec.name, "PCMU");
        assert!(offer(&mut origin, &local(vec![PCMU])).contains("o=cusaxd 42 3 "));
    }

    #[test]
    fn we_answer_a_baresip_offer_with_our_first_common_codec() {
        let mut origin = SdpOrigin { session_id: 7, version: 0 };
        let (sdp, agreed) =
            answer(&mut origin, &local(vec![OPUS, PCMA, PCMU]), BARESIP_OFFER.as_bytes()).unwrap();
        assert_eq!(agreed.codec, PCMA);
        assert_eq!(agreed.dtmf_payload_type, Some(101));
        assert_eq!(agreed.remote, Some("127.0.0.1:10002".parse().unwrap()));
        assert_eq!(agreed.direction, Direction::SendRecv);
        assert!(sdp.contains("m=audio 40000 RTP/AVP 8 101\r\n"), "{sdp}");
    }

    #[test]
    fn the_offerers_dynamic_payload_numbers_are_kept() {
        let offer_text = BARESIP_OFFER
            .replace("RTP/AVP 0 8 101", "RTP/AVP 111 0")
            .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000");
        let (sdp, agreed) = answer(
            &mut SdpOrigin { session_id: 1, version: 0 },
            &local(vec![OPUS, PCMU]),
            offer_text.as_bytes(),
        )
        .unwrap();
        assert_eq!((agreed.codec.name, agreed.codec.payload_type), ("opus", 111));
        assert!(sdp.contains("m=audio 40000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2"), "{sdp}");
        assert_eq!(agreed.dtmf_payload_type, None);
    }

    #[test]
    fn hold_directions_are_answered_per_rfc_3264() {
        assert_eq!(Direction::SendRecv.answering(Direction::SendOnly), Direction::RecvOnly);
        assert_eq!(Direction::SendRecv.answering(Direction::Inactive), Direction::Inactive);
        assert_eq!(Direction::SendRecv.answering(Direction::RecvOnly), Direction::SendOnly);
        assert_eq!(Direction::SendOnly.answering(Direction::SendRecv), Direction::SendOnly);
        let held = BARESIP_OFFER.replace("a=sendrecv", "a=sendonly");
        let (sdp, agreed) =
            answer(&mut SdpOrigin { session_id: 1, version: 0 }, &local(vec![PCMU]), held.as_bytes())
                .unwrap();
        assert_eq!(agreed.direction, Direction::RecvOnly);
        assert!(sdp.ends_with("a=recvonly\r\n"));
    }

    #[test]
    fn a_declined_stream_and_bad_offers() {
        let declined = BARESIP_OFFER.replace("m=audio 10002", "m=audio 0");
        let (sdp, agreed) =
            answer(&mut SdpOrigin { session_id: 1, version: 0 }, &local(vec![PCMU]), declined.as_bytes())
                .unwrap();
        assert_eq!(agreed.remote, None);
        assert!(sdp.contains("m=audio 0 "));
        let mut origin = SdpOrigin { session_id: 1, version: 0 };
        assert_eq!(
            answer(&mut origin, &local(vec![OPUS]), BARESIP_OFFER.as_bytes()),
            Err(SdpError::NoCommonCodec)
        );
        let video = BARESIP_OFFER.replace("m=audio", "m=video");
        assert_eq!(answer(&mut origin, &local(vec![PCMU]), video.as_bytes()), Err(SdpError::NoAudio));
        assert!(matches!(answer(&mut origin, &local(vec![PCMU]), b"garbage"), Err(SdpError::Parse(_))));
        let no_c = BARESIP_OFFER.replace("c=IN IP4 127.0.0.1\r\n", "");
        assert_eq!(answer(&mut origin, &local(vec![PCMU]), no_c.as_bytes()), Err(SdpError::NoAddress));
    }

    #[test]
    fn never_panics_on_mangled_sdp() {
        let mut origin = SdpOrigin { session_id: 1, version: 0 };
        for cut in 0..BARESIP_OFFER.len() {
            let _ = answer(&mut origin, &local(vec![PCMU]), &BARESIP_OFFER.as_bytes()[..cut]);
            let _ = read_answer(&local(vec![PCMU]), &BARESIP_OFFER.as_bytes()[cut..]);
        }
    }

    #[test]
    fn streams_we_do_not_take_are_refused_in_place() {
        let offer = BARESIP_OFFER.replace(
            "m=audio 10002",
            "m=video 10010 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 10020 RTP/SAVP 0\r\nm=audio 10002",
        );
        let (sdp, agreed) =
            answer(&mut SdpOrigin { session_id: 1, version: 0 }, &local(vec![PCMU]), offer.as_bytes())
                .unwrap();
        let m_lines: Vec<&str> = sdp.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(m_lines, ["m=video 0 RTP/AVP 96", "m=audio 0 RTP/SAVP 0", "m=audio 40000 RTP/AVP 0 101"]);
        assert_eq!(agreed.remote, Some("127.0.0.1:10002".parse().unwrap()));
    }

    #[test]
    fn a_live_stream_is_taken_over_a_declined_one_and_avpf_is_answered_as_avpf() {
        let offer =
            BARESIP_OFFER.replace("m=audio 10002 RTP/AVP", "m=audio 0 RTP/AVP 0\r\nm=audio 10002 RTP/AVPF");
        let (sdp, agreed) =
            answer(&mut SdpOrigin { session_id: 1, version: 0 }, &local(vec![PCMU]), offer.as_bytes())
                .unwrap();
        let m_lines: Vec<&str> = sdp.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(m_lines, ["m=audio 0 RTP/AVP 0", "m=audio 40000 RTP/AVPF 0 101"]);
        assert_eq!(agreed.remote, Some("127.0.0.1:10002".parse().unwrap()));
    }

    #[test]
    fn rtcp_mux_and_the_rtcp_port_follow_what_the_peer_says() {
        let mut origin = SdpOrigin { session_id: 1, version: 0 };
        let (sdp, agreed) = answer(&mut origin, &local(vec![PCMU]), BARESIP_OFFER.as_bytes()).unwrap();
        assert!(!agreed.rtcp_mux && !sdp.contains("rtcp-mux"), "{sdp}");
        assert_eq!(agreed.remote_rtcp, None);
        let muxed = BARESIP_OFFER.replace("a=label:1\r\n", "a=rtcp-mux\r\na=rtcp:10002\r\n");
        let (sdp, agreed) = answer(&mut origin, &local(vec![PCMU]), muxed.as_bytes()).unwrap();
        assert!(agreed.rtcp_mux && sdp.contains("a=rtcp-mux\r\n"), "{sdp}");
        assert_eq!(agreed.remote_rtcp, Some("127.0.0.1:10002".parse().unwrap()));
        let elsewhere = BARESIP_OFFER.replace("a=label:1\r\n", "a=rtcp:20001 IN IP4 127.0.0.2\r\n");
        let (_, agreed) = answer(&mut origin, &local(vec![PCMU]), elsewhere.as_bytes()).unwrap();
        assert_eq!(agreed.remote_rtcp, Some("127.0.0.2:20001".parse().unwrap()));
        let broken = BARESIP_OFFER.replace("a=label:1\r\n", "a=rtcp:nonsense\r\n");
        assert_eq!(answer(&mut origin, &local(vec![PCMU]), broken.as_bytes()).unwrap().1.remote_rtcp, None);
    }

    #[test]
    fn dtmf_takes_the_codecs_clock_and_falls_back_to_8000() {
        let mut origin = SdpOrigin { session_id: 1, version: 0 };
        let ours = offer(&mut origin, &local(vec![OPUS, PCMU]));
        let (_, agreed) = answer(&mut origin, &local(vec![OPUS]), ours.as_bytes()).unwrap();
        assert_eq!((agreed.dtmf_payload_type, agreed.dtmf_clock_rate), (Some(102), 48000));
        // baresip offers Opus with telephone-event/8000 only.
        let baresip = BARESIP_OFFER
            .replace("RTP/AVP 0 8 101", "RTP/AVP 96 101")
            .replace("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "a=rtpmap:96 opus/48000/2\r\n");
        let (_, agreed) = answer(&mut origin, &local(vec![OPUS]), baresip.as_bytes()).unwrap();
        assert_eq!(agreed.codec.name, "opus");
        assert_eq!((agreed.dtmf_payload_type, agreed.dtmf_clock_rate), (Some(101), 8000));
    }
}
