//! Checks a recorded WAV file for a sine tone the way a listener would: per short window,
//! is the tone there, and how clean is it. Windows are a whole number of the tone's periods,
//! so a Goertzel filter measures the tone's energy exactly.

use std::path::Path;

use anyhow::{Context, bail};

/// What a recording holds of a tone, between the first and the last window that has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToneReport {
    pub rate: u32,
    /// Length of the span from the first to the last window with the tone.
    pub span_ms: u32,
    /// Tone energy against everything else over the span.
    pub snr_db: f64,
    /// Share of the span's 20 ms frames in which the tone is present.
    pub present: f64,
    /// The longest run without the tone inside the span, in 10 ms steps.
    pub longest_gap_ms: u32,
}

/// Reads channel 0 of `path` and measures the tone at `hz` (which must divide into 100, so
/// that a 10 ms window holds whole periods).
pub fn analyse_tone(path: &Path, hz: u32) -> anyhow::Result<ToneReport> {
    if hz == 0 || !hz.is_multiple_of(100) {
        bail!("the tone must be a multiple of 100 Hz");
    }
    let mut reader = hound::WavReader::open(path).with_context(|| format!("open {}", path.display()))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let scale = 2f64.powi(i32::from(spec.bits_per_sample) - 1);
    let samples: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Int => reader
            .samples::<i32>()
            .step_by(channels)
            .map(|s| s.map(|v| f64::from(v) / scale))
            .collect::<Result<_, _>>()?,
        hound::SampleFormat::Float => {
            reader.samples::<f32>().step_by(channels).map(|s| s.map(f64::from)).collect::<Result<_, _>>()?
        }
    };
    let window = (spec.sample_rate / 100) as usize;
    let windows: Vec<(f64, f64)> =
        samples.chunks_exact(window).map(|w| tone_and_total(w, hz, spec.sample_rate)).collect();
    let has_tone = |(tone, total): (f64, f64)| {
        // Present: it dominates the window and is louder than -40 dBFS.
        tone > 0.5 * total && tone / window as f64 > 0.5 * 0.01f64.powi(2)
    };
    let first = windows.iter().position(|w| has_tone(*w));
    let last = windows.iter().rposition(|w| has_tone(*w));
    let (Some(first), Some(last)) = (first, last) else {
        bail!(
            "{}: no {hz} Hz tone at all ({} s of audio)",
            path.display(),
            samples.len() / spec.sample_rate as usize
        );
    };
    let span = &windows[first..=last];
    let tone: f64 = span.iter().map(|w| w.0).sum();
    let noise: f64 = span.iter().map(|w| (w.1 - w.0).max(0.0)).sum();
    let frames: Vec<bool> = span.chunks(2).map(|pair| pair.iter().all(|w| has_tone(*w))).collect();
    let mut longest_gap = 0;
    let mut gap = 0;
    for w in span {
        gap = if has_tone(*w) { 0 } else { gap + 1 };
        longest_gap = longest_gap.max(gap);
    }
    Ok(ToneReport {
        rate: spec.sample_rate,
        span_ms: (span.len() * 10) as u32,
        snr_db: 10.0 * (tone / noise.max(f64::MIN_POSITIVE)).log10(),
        present: frames.iter().filter(|p| **p).count() as f64 / frames.len().max(1) as f64,
        longest_gap_ms: longest_gap * 10,
    })
}

/// The tone's energy (Goertzel) and the window's total energy.
fn tone_and_total(window: &[f64], hz: u32, rate: u32) -> (f64, f64) {
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in window {
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let magnitude = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    let total: f64 = window.iter().map(|x| x * x).sum();
    // |X|^2 = (A N / 2)^2 for a sine of amplitude A; its energy is N A^2 / 2.
    ((2.0 * magnitude / window.len() as f64).min(total), total)
}

/// Writes `seconds` of a sine at `hz`, amplitude `level` of full scale, as 16-bit PCM.
pub fn write_tone(
    path: &Path,
    hz: u32,
    rate: u32,
    channels: u16,
    seconds: u32,
    level: f64,
) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for n in 0..rate * seconds {
        let t = f64::from(n) / f64::from(rate);
        let value = (level * 32767.0 * (2.0 * std::f64::consts::PI * f64::from(hz) * t).sin()) as i16;
        for _ in 0..channels {
            writer.write_sample(value)?;
        }
    }
    writer.finalize()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_tone_with_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        write_tone(&path, 1000, 8000, 1, 2, 0.5).unwrap();
        let clean = analyse_tone(&path, 1000).unwrap();
        assert!(clean.snr_db > 60.0, "{clean:?}");
        assert_eq!((clean.present, clean.longest_gap_ms), (1.0, 0));
        // 100 ms of silence in the middle.
        let mut reader = hound::WavReader::open(&path).unwrap();
        let mut samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        samples[8000..8800].fill(0);
        let spec = reader.spec();
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        samples.iter().for_each(|s| writer.write_sample(*s).unwrap());
        writer.finalize().unwrap();
        let gapped = analyse_tone(&path, 1000).unwrap();
        assert_eq!(gapped.longest_gap_ms, 100);
        assert!(gapped.present < 0.96);
    }
}
