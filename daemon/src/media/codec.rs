//! The codecs of a call behind one encoder and one decoder type: G.711 µ-law and A-law (ours,
//! in cusax-protocol) and Opus (the system libopus through audiopus), mono, 20 ms frames.

use audiopus::coder::{Decoder as OpusDecoder, Encoder as OpusEncoder};
use audiopus::packet::Packet as OpusPacket;
use audiopus::{Application, Bitrate, Channels, MutSignals, SampleRate};
use cusax_protocol::media::g711;
use cusax_protocol::sdp::Codec;

/// The longest Opus packet: 120 ms at 48 kHz.
const OPUS_MAX_SAMPLES: usize = 5760;
/// Mono Opus at this rate stays clean even on a pure tone, with room for in-band FEC: a 1 kHz
/// tone decoded by baresip measured 29.8 dB SNR at 32 kbit/s, 46.7 dB at 48 kbit/s.
const OPUS_BITRATE: i32 = 48_000;
/// libopus's default is 10. At 3 a call costs about 40 % less CPU (6.4 % → 3.9 % of a core
/// here, BENCHMARKS.md) and a 1 kHz tone still decodes at 46 dB SNR at baresip.
const OPUS_COMPLEXITY: u8 = 3;
/// The loss the Opus encoder plans its FEC for (RFC 7587 section 3.3 leaves it to us).
const OPUS_EXPECTED_LOSS: u8 = 10;
/// G.711 concealment repeats the last frame this many times, fading, then goes quiet.
const G711_REPEATS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("the codec {0} is not supported")]
    Unsupported(String),
    #[error("Opus: {0}")]
    Opus(#[from] audiopus::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Mu,
    A,
}

fn law_of(codec: &Codec) -> Result<Option<Law>, CodecError> {
    match codec.name.to_ascii_uppercase().as_str() {
        "PCMU" => Ok(Some(Law::Mu)),
        "PCMA" => Ok(Some(Law::A)),
        "OPUS" => Ok(None),
        other => Err(CodecError::Unsupported(other.to_owned())),
    }
}

pub enum Encoder {
    G711(Law),
    Opus(Box<OpusEncoder>),
}

impl Encoder {
    pub fn new(codec: &Codec) -> Result<Self, CodecError> {
        Ok(match law_of(codec)? {
            Some(law) => Encoder::G711(law),
            None => {
                let mut opus = OpusEncoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
                opus.set_bitrate(Bitrate::BitsPerSecond(OPUS_BITRATE))?;
                opus.set_complexity(OPUS_COMPLEXITY)?;
                opus.set_inband_fec(true)?;
                opus.set_packet_loss_perc(OPUS_EXPECTED_LOSS)?;
                Encoder::Opus(Box::new(opus))
            }
        })
    }

    /// Encodes one frame; `out` is cleared first.
    pub fn encode(&mut self, frame: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.clear();
        match self {
            Encoder::G711(Law::Mu) => g711::encode_ulaw(frame, out),
            Encoder::G711(Law::A) => g711::encode_alaw(frame, out),
            Encoder::Opus(opus) => {
                out.resize(1500, 0);
                let written = opus.encode(frame, out)?;
                out.truncate(written);
            }
        }
        Ok(())
    }
}

pub enum Decoder {
    G711 { law: Law, last: Vec<i16>, repeats: u32 },
    Opus(Box<OpusDecoder>),
}

impl Decoder {
    pub fn new(codec: &Codec) -> Result<Self, CodecError> {
        Ok(match law_of(codec)? {
            Some(law) => Decoder::G711 { law, last: Vec::new(), repeats: 0 },
            None => Decoder::Opus(Box::new(OpusDecoder::new(SampleRate::Hz48000, Channels::Mono)?)),
        })
    }

    /// Decodes one packet; `out` is cleared first. A packet the codec rejects leaves `out`
    /// empty and the error for the caller to count.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        out.clear();
        match self {
            Decoder::G711 { law, last, repeats } => {
                match law {
                    Law::Mu => g711::decode_ulaw(payload, out),
                    Law::A => g711::decode_alaw(payload, out),
                }
                last.clear();
                last.extend_from_slice(out);
                *repeats = 0;
            }
            Decoder::Opus(opus) => {
                let packet = OpusPacket::try_from(payload)?;
                out.resize(OPUS_MAX_SAMPLES, 0);
                let samples = opus.decode(Some(packet), MutSignals::try_from(&mut out[..])?, false)?;
                out.truncate(samples);
            }
        }
        Ok(())
    }

    /// Audio for a frame that did not arrive, `samples` long. Opus recovers it from the
    /// next packet's in-band FEC when there is one, else runs its PLC; G.711 repeats the
    /// last frame, fading, then goes quiet.
    pub fn conceal(&mut self, next: Option<&[u8]>, samples: usize, out: &mut Vec<i16>) {
        out.clear();
        match self {
            Decoder::G711 { last, repeats, .. } => {
                *repeats += 1;
                if *repeats <= G711_REPEATS && last.len() == samples {
                    let shift = *repeats;
                    out.extend(last.iter().map(|s| s >> shift));
                } else {
                    out.resize(samples, 0);
                }
            }
            Decoder::Opus(opus) => {
                out.resize(samples, 0);
                let fec = next.and_then(|p| OpusPacket::try_from(p).ok());
                let use_fec = fec.is_some();
                let decoded = MutSignals::try_from(&mut out[..])
                    .map_err(CodecError::from)
                    .and_then(|signals| Ok(opus.decode(fec, signals, use_fec)?));
                match decoded {
                    Ok(n) => out.truncate(n),
                    Err(_) => out.fill(0),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cusax_protocol::sdp::{OPUS, PCMA, PCMU};

    fn tone(rate: u32, samples: usize, start: usize) -> Vec<i16> {
        (start..start + samples)
            .map(|n| {
                let t = n as f64 / f64::from(rate);
                (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn every_codec_carries_a_tone() {
        for codec in [PCMU, PCMA, OPUS] {
            let frame = (codec.clock_rate / 50) as usize;
            let mut encoder = Encoder::new(&codec).unwrap();
            let mut decoder = Decoder::new(&codec).unwrap();
            let (mut packet, mut decoded, mut energy) = (Vec::new(), Vec::new(), 0.0);
            for i in 0..25 {
                encoder.encode(&tone(codec.clock_rate, frame, i * frame), &mut packet).unwrap();
                assert!(!packet.is_empty() && packet.len() < 400, "{}", codec.name);
                decoder.decode(&packet, &mut decoded).unwrap();
                assert_eq!(decoded.len(), frame, "{}", codec.name);
                energy = decoded.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / frame as f64;
            }
            assert!(energy.sqrt() > 3000.0, "{}: rms {}", codec.name, energy.sqrt());
            decoder.conceal(None, frame, &mut decoded);
            assert_eq!(decoded.len(), frame);
        }
    }

    #[test]
    fn a_broken_opus_packet_is_an_error_not_a_panic() {
        let mut decoder = Decoder::new(&OPUS).unwrap();
        let mut out = Vec::new();
        assert!(decoder.decode(&[], &mut out).is_err());
        let _ = decoder.decode(&[0xFF; 3], &mut out);
        assert!(Encoder::new(&Codec { name: "G729", ..PCMU }).is_err());
    }
}
