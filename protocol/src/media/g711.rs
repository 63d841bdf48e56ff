//! G.711 (ITU-T Recommendation G.711): the µ-law (PCMU, RTP payload type 0) and A-law (PCMA,
//! payload type 8) companding of RFC 3551 section 4.5.14, computed rather than tabled.
//!
//! Both laws squeeze a linear sample into a sign, a 3-bit segment (exponent) and a 4-bit step
//! within the segment, so the quantisation step doubles with each segment and the error stays
//! about 1/32 of the magnitude (roughly 38 dB SNR over most of the range). Samples here are
//! 16-bit linear PCM: µ-law uses the top 14 bits, A-law the top 13, as G.711 specifies.
//! Negative samples are folded with a one's complement (`!x` = `-x - 1`) before quantising,
//! which keeps the decision levels symmetric and makes `i16::MIN` safe without a special case.

/// The µ-law code of a zero sample: what a muted or concealed PCMU frame is filled with.
pub const ULAW_SILENCE: u8 = 0xFF;
/// The A-law code of a zero sample (the even bits are inverted on the wire, hence not 0x80).
pub const ALAW_SILENCE: u8 = 0xD5;

/// µ-law adds this bias (33 in 14-bit units) so that the segments start at powers of two.
const ULAW_BIAS: i32 = 0x84;
/// The largest magnitude µ-law represents before the bias would push it past 15 bits.
const ULAW_CLIP: i32 = 32635;

/// Encodes one 16-bit linear sample as a µ-law byte.
pub fn ulaw_encode(sample: i16) -> u8 {
    let (sign, folded) = if sample < 0 { (0x80u8, !sample) } else { (0u8, sample) };
    let biased = i32::from(folded).min(ULAW_CLIP) + ULAW_BIAS;
    // `biased` is in 132..=32767, so its top bit is 7..=14 and the segment is 0..=7.
    let segment = (31 - biased.leading_zeros()).saturating_sub(7).min(7);
    let step = (biased >> (segment + 3)) & 0x0F;
    // G.711 transmits µ-law codes inverted, so that silence is rich in ones.
    !(sign | ((segment as u8) << 4) | step as u8)
}

/// Decodes one µ-law byte to a 16-bit linear sample (the middle of its quantisation step).
pub fn ulaw_decode(code: u8) -> i16 {
    let bits = !code;
    let segment = (bits >> 4) & 0x07;
    let step = i32::from(bits & 0x0F);
    // At most ((15 << 3) + 132) << 7 = 32256, minus the bias: always within i16.
    let magnitude = (((step << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    let sample = if bits & 0x80 != 0 { -magnitude } else { magnitude };
    sample as i16
}

/// Encodes one 16-bit linear sample as an A-law byte.
pub fn alaw_encode(sample: i16) -> u8 {
    // G.711 sends A-law with the sign bit set for positive values and the even bits inverted.
    let (mask, folded) = if sample >= 0 { (0xD5u8, sample) } else { (0x55u8, !sample) };
    // 13-bit magnitude: 0..=4095, never negative after the fold.
    let magnitude = (folded >> 3) as u16;
    // Segment 0 and 1 share the same step; from segment 2 on each one doubles it.
    let segment = if magnitude < 32 { 0 } else { (15 - magnitude.leading_zeros()) - 4 };
    let step = (magnitude >> segment.max(1)) & 0x0F;
    (((segment as u8) << 4) | step as u8) ^ mask
}

/// Decodes one A-law byte to a 16-bit linear sample (the middle of its quantisation step).
pub fn alaw_decode(code: u8) -> i16 {
    let bits = code ^ 0x55;
    let segment = (bits >> 4) & 0x07;
    let step = i32::from(bits & 0x0F) << 4;
    // Segments above 0 carry an implicit leading one (0x100); 8 puts us mid-step.
    let magnitude = match segment {
        0 => step + 8,
        _ => (step + 0x108) << (segment - 1),
    };
    // At most (0xF0 + 0x108) << 6 = 32256: always within i16.
    let sample = if bits & 0x80 != 0 { magnitude } else { -magnitude };
    sample as i16
}

/// Appends the µ-law codes of `samples` to `out`.
pub fn encode_ulaw(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&sample| ulaw_encode(sample)));
}

/// Appends the linear samples of the µ-law `codes` to `out`.
pub fn decode_ulaw(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&code| ulaw_decode(code)));
}

/// Appends the A-law codes of `samples` to `out`.
pub fn encode_alaw(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&sample| alaw_encode(sample)));
}

/// Appends the linear samples of the A-law `codes` to `out`.
pub fn decode_alaw(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&code| alaw_decode(code)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_sample() -> impl Iterator<Item = i16> {
        i16::MIN..=i16::MAX
    }

    #[test]
    fn zero_encodes_to_the_silence_codes() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(ulaw_encode(0), ULAW_SILENCE);
        assert_eq!(alaw_encode(0), ALAW_SILENCE);
        assert_eq!(ulaw_decode(ULAW_SILENCE), 0);
        assert_eq!(alaw_decode(ALAW_SILENCE), 8);
    }

    #[test]
    fn decoding_matches_the_published_g711_values() {
        // Entries of the widely reproduced 16-bit G.711 expansion tables.
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x01), -31100);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xF0), 120);
        assert_eq!(alaw_decode(0x00), -5504);
        assert_eq!(alaw_decode(0x01), -5248);
        assert_eq!(alaw_decode(0x02), -6016);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
    }

    #[test]
    fn extremes_map_to_the_outermost_codes() {
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(ulaw_decode(ulaw_encode(i16::MAX)), 32124);
        assert_eq!(ulaw_decode(ulaw_encode(i16::MIN)), -32124);
        assert_eq!(alaw_decode(alaw_encode(i16::MAX)), 32256);
        assert_eq!(alaw_decode(alaw_encode(i16::MIN)), -32256);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=u8::MAX {
            // µ-law has two zeros; 0x7F (negative zero) comes back as 0xFF.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), expected, "µ-law {code:#04x}");
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
        }
    }

    #[test]
    fn quantisation_is_monotonic() {
        let mut previous = (i16::MIN, i16::MIN);
        for sample in every_sample() {
            let now = (ulaw_decode(ulaw_encode(sample)), alaw_decode(alaw_encode(sample)));
            assert!(now.0 >= previous.0 && now.1 >= previous.1, "not monotonic at {sample}");
            previous = now;
        }
    }

    #[test]
    fn round_trip_error_stays_within_half_a_step() {
        for sample in every_sample() {
            let magnitude = i32::from(sample).abs();
            // Half a step is at most 1/32 of the (biased) magnitude in each law's segment.
            let ulaw = i32::from(ulaw_decode(ulaw_encode(sample)));
            if magnitude <= ULAW_CLIP {
                let bound = (magnitude + ULAW_BIAS) / 32 + 1;
                assert!((ulaw - i32::from(sample)).abs() <= bound, "µ-law {sample} -> {ulaw}");
            } else {
                assert_eq!(ulaw.abs(), 32124, "µ-law clips {sample}");
            }
            let alaw = i32::from(alaw_decode(alaw_encode(sample)));
            let bound = (magnitude / 32).max(8) + 1;
            assert!((alaw - i32::from(sample)).abs() <= bound, "A-law {sample} -> {alaw}");
        }
    }

    fn snr_db(original: &[i16], decoded: &[i16]) -> f64 {
        let signal: f64 = original.iter().map(|&s| f64::from(s).powi(2)).sum();
        let noise: f64 =
            original.iter().zip(decoded).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum();
        10.0 * (signal / noise).log10()
    }

    fn sine(amplitude: f64) -> Vec<i16> {
        // One second of 1 kHz at 8 kHz, off-phase so the samples are not all on the axes.
        (0..8000)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * 1000.0 * f64::from(n) / 8000.0 + 0.3;
                (amplitude * phase.sin()).round() as i16
            })
            .collect()
    }

    #[test]
    fn a_1khz_sine_round_trips_above_35_db_snr() {
        // From full scale down to -24 dBFS. At 8 kHz a 1 kHz tone has only 8 phases, so the
        // figure jumps around between amplitudes instead of averaging out; lower still, µ-law's
        // finest steps are coarse against so few samples (33 dB at -30 dBFS).
        for amplitude in [32000.0, 16000.0, 8000.0, 4000.0, 2000.0] {
            let samples = sine(amplitude);
            let (mut codes, mut decoded) = (Vec::new(), Vec::new());
            encode_ulaw(&samples, &mut codes);
            decode_ulaw(&codes, &mut decoded);
            assert_eq!(decoded.len(), samples.len());
            let ulaw = snr_db(&samples, &decoded);
            codes.clear();
            decoded.clear();
            encode_alaw(&samples, &mut codes);
            decode_alaw(&codes, &mut decoded);
            let alaw = snr_db(&samples, &decoded);
            assert!(ulaw > 35.0, "µ-law SNR {ulaw:.1} dB at amplitude {amplitude}");
            assert!(alaw > 35.0, "A-law SNR {alaw:.1} dB at amplitude {amplitude}");
        }
    }

    #[test]
    fn bulk_helpers_append() {
        let mut codes = vec![0x12];
        encode_ulaw(&[0, 0], &mut codes);
        encode_alaw(&[0], &mut codes);
        assert_eq!(codes, [0x12, 0xFF, 0xFF, 0xD5]);
        let mut samples = vec![7];
        decode_ulaw(&[0xFF], &mut samples);
        decode_alaw(&[0xD5], &mut samples);
        assert_eq!(samples, [7, 0, 8]);
    }
}
