//! Where a call's audio comes from and goes to: a sound device, a WAV file (a looped source,
//! or a recording sink) or nothing. Every source hands out, and every sink takes, mono 16-bit
//! frames at the pipeline's rate; devices and files at other rates go through rubato.
//!
//! Sources never pace anything: the media clock asks for one frame per tick, and a file or a
//! device gives what it has (a device short of samples gives silence for the rest).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use ringbuf::traits::{Consumer, Observer, Producer};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use tokio::sync::mpsc;

use super::device::{self, DeviceCapture, DevicePlayback};
use crate::config::AudioEndpoint;

/// A WAV source longer than this is refused: it is read into memory whole, at 48 kHz for
/// Opus (5 min: 27 MiB).
const MAX_SOURCE_SECONDS: u32 = 300;
/// Sample rates a WAV source may have.
const SOURCE_RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;
/// A device ring holding more than this (our side fell behind its clock) is cut back.
const MAX_DEVICE_LATENCY_MS: u32 = 200;
/// Capture keeps this much queued beyond what a frame takes (one capture period and a half).
const CAPTURE_CUSHION_MS: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("sound device {name}: {reason}")]
    Device { name: String, reason: String },
    #[error("audio file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("cannot convert {from} Hz to {to} Hz: {reason}")]
    Rate { from: u32, to: u32, reason: String },
}

/// Converts a mono stream between two fixed rates in 20 ms chunks.
pub struct RateConverter {
    fft: Option<Fft<f32>>,
    pending: Vec<f32>,
    converted: std::collections::VecDeque<f32>,
    scratch: Vec<f32>,
}

impl RateConverter {
    pub fn new(from: u32, to: u32) -> Result<Self, AudioError> {
        let fft = if from == to {
            None
        } else {
            let chunk = (from / 50).max(1) as usize;
            let fft = Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
                .map_err(|e| AudioError::Rate { from, to, reason: e.to_string() })?;
            Some(fft)
        };
        Ok(Self {
            fft,
            pending: Vec::new(),
            converted: std::collections::VecDeque::new(),
            scratch: Vec::new(),
        })
    }

    pub fn push(&mut self, samples: &[f32]) {
        let Some(fft) = self.fft.as_mut() else {
            self.converted.extend(samples);
            return;
        };
        self.pending.extend_from_slice(samples);
        loop {
            let needed = fft.input_frames_next();
            if self.pending.len() < needed {
                break;
            }
            self.scratch.resize(fft.output_frames_next(), 0.0);
            let out_len = self.scratch.len();
            let processed = match (
                InterleavedSlice::new(&self.pending[..needed], 1, needed),
                InterleavedSlice::new_mut(&mut self.scratch[..], 1, out_len),
            ) {
                (Ok(input), Ok(mut output)) => fft.process_into_buffer(&input, &mut output, None).ok(),
                _ => None,
            };
            self.pending.drain(..needed);
            if let Some((_, written)) = processed {
                self.converted.extend(&self.scratch[..written]);
            }
        }
    }

    /// How many more input samples to push before `out` converted ones are available.
    pub fn wanted(&self, out: usize) -> usize {
        if self.converted.len() >= out {
            return 0;
        }
        match &self.fft {
            None => out - self.converted.len(),
            Some(fft) => fft.input_frames_next().saturating_sub(self.pending.len()),
        }
    }

    pub fn available(&self) -> usize {
        self.converted.len()
    }

    /// Takes `out.len()` samples, zeros where there are not enough.
    pub fn pull(&mut self, out: &mut [f32]) {
        for slot in out.iter_mut() {
            *slot = self.converted.pop_front().unwrap_or(0.0);
        }
    }
}

/// Converts a whole clip at once, without the converter's delay at its start.
pub fn convert_clip(from: u32, to: u32, samples: &[f32]) -> Result<Vec<f32>, AudioError> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let fail = |reason: String| AudioError::Rate { from, to, reason };
    let mut fft = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| fail(e.to_string()))?;
    let needed = fft.process_all_needed_output_len(samples.len());
    let mut converted = vec![0.0; needed];
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| fail(e.to_string()))?;
    let mut output = InterleavedSlice::new_mut(&mut converted, 1, needed).map_err(|e| fail(e.to_string()))?;
    let (_, produced) = fft
        .process_all_into_buffer(&input, &mut output, samples.len(), None)
        .map_err(|e| fail(e.to_string()))?;
    converted.truncate(produced);
    Ok(converted)
}

pub enum Source {
    Null,
    File { samples: Vec<i16>, position: usize },
    Device(Box<DeviceSource>),
}

pub struct DeviceSource {
    capture: DeviceCapture,
    converter: RateConverter,
    buffer: Vec<f32>,
    /// The cushion is full and frames are taken from it.
    primed: bool,
}

impl Source {
    pub async fn open(
        endpoint: &AudioEndpoint,
        rate: u32,
        failures: mpsc::UnboundedSender<String>,
    ) -> Result<Source, AudioError> {
        match endpoint {
            AudioEndpoint::Null => Ok(Source::Null),
            AudioEndpoint::File(path) => {
                let path = path.clone();
                let samples = tokio::task::spawn_blocking(move || read_wav(&path, rate))
                    .await
                    .map_err(|e| AudioError::File { path: PathBuf::new(), reason: e.to_string() })??;
                Ok(Source::File { samples, position: 0 })
            }
            AudioEndpoint::Default | AudioEndpoint::Device(_) => {
                let capture = device::open_capture(device_name(endpoint), failures).await?;
                let converter = RateConverter::new(capture.rate, rate)?;
                Ok(Source::Device(Box::new(DeviceSource {
                    capture,
                    converter,
                    buffer: Vec::new(),
                    primed: false,
                })))
            }
        }
    }

    /// Fills `frame` with the next samples.
    pub fn read(&mut self, frame: &mut [i16]) {
        match self {
            Source::Null => frame.fill(0),
            Source::File { samples, position } => {
                if samples.is_empty() {
                    frame.fill(0);
                    return;
                }
                for slot in frame.iter_mut() {
                    *slot = samples[*position];
                    *position = (*position + 1) % samples.len();
                }
            }
            Source::Device(device) => {
                let DeviceSource { capture, converter, buffer, primed } = device.as_mut();
                let max = (capture.rate * MAX_DEVICE_LATENCY_MS / 1000) as usize;
                let queued = capture.samples.occupied_len();
                // A device faster than our clock (or a burst after a stall): drop the backlog
                // down to a short margin rather than lag behind. Rare, so one click is fine.
                if queued > max {
                    capture.samples.skip(queued - max / 5);
                }
                // A device delivers in periods, not in our frames: keep a cushion of
                // CAPTURE_CUSHION_MS so a period that comes a little late is no gap.
                let cushion = (capture.rate * CAPTURE_CUSHION_MS / 1000) as usize;
                if !*primed {
                    if capture.samples.occupied_len() < cushion {
                        frame.fill(0);
                        return;
                    }
                    *primed = true;
                }
                // Otherwise take only what this frame needs, so the audio stays continuous.
                loop {
                    let wanted = converter.wanted(frame.len());
                    if wanted == 0 || capture.samples.occupied_len() < wanted {
                        break;
                    }
                    buffer.resize(wanted, 0.0);
                    let got = capture.samples.pop_slice(buffer);
                    converter.push(&buffer[..got]);
                }
                if converter.available() < frame.len() {
                    // Ran dry: build the cushion again before the next frame.
                    *primed = false;
                }
                buffer.resize(frame.len(), 0.0);
                converter.pull(buffer);
                for (slot, sample) in frame.iter_mut().zip(buffer.iter()) {
                    *slot = (sample.clamp(-1.0, 1.0) * 32767.0) as i16;
                }
            }
        }
    }
}

pub enum Sink {
    Null,
    File(Box<WavFile>),
    Device(Box<DeviceSink>),
}

pub struct DeviceSink {
    playback: DevicePlayback,
    converter: RateConverter,
    buffer: Vec<f32>,
}

pub struct WavFile {
    writer: hound::WavWriter<BufWriter<File>>,
    path: PathBuf,
    frames: u32,
}

impl Sink {
    pub async fn open(
        endpoint: &AudioEndpoint,
        rate: u32,
        failures: mpsc::UnboundedSender<String>,
    ) -> Result<Sink, AudioError> {
        match endpoint {
            AudioEndpoint::Null => Ok(Sink::Null),
            AudioEndpoint::File(path) => {
                let spec = hound::WavSpec {
                    channels: 1,
                    sample_rate: rate,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                };
                let writer = hound::WavWriter::create(path, spec)
                    .map_err(|e| AudioError::File { path: path.clone(), reason: e.to_string() })?;
                Ok(Sink::File(Box::new(WavFile { writer, path: path.clone(), frames: 0 })))
            }
            AudioEndpoint::Default | AudioEndpoint::Device(_) => {
                let playback = device::open_playback(device_name(endpoint), failures).await?;
                let converter = RateConverter::new(rate, playback.rate)?;
                Ok(Sink::Device(Box::new(DeviceSink { playback, converter, buffer: Vec::new() })))
            }
        }
    }

    /// Plays (or records) one frame. A file that cannot be written is reported once and the
    /// sink becomes null.
    pub fn write(&mut self, frame: &[i16]) -> Result<(), AudioError> {
        match self {
            Sink::Null => Ok(()),
            Sink::File(file) => {
                let result = frame.iter().try_for_each(|s| file.writer.write_sample(*s)).and_then(|()| {
                    file.frames += 1;
                    // Keep the header current about once a second, so the file is readable
                    // while the call runs and after a crash.
                    if file.frames % 50 == 0 { file.writer.flush() } else { Ok(()) }
                });
                if let Err(e) = result {
                    let error = AudioError::File { path: file.path.clone(), reason: e.to_string() };
                    *self = Sink::Null;
                    return Err(error);
                }
                Ok(())
            }
            Sink::Device(device) => {
                let DeviceSink { playback, converter, buffer } = device.as_mut();
                buffer.clear();
                buffer.extend(frame.iter().map(|s| f32::from(*s) / 32768.0));
                converter.push(buffer);
                let ready = converter.available();
                buffer.resize(ready, 0.0);
                converter.pull(buffer);
                // The device's side keeps the delay bounded (it alone can drop what is queued).
                playback.samples.push_slice(buffer);
                Ok(())
            }
        }
    }

    /// Finishes a file so its header is complete.
    pub fn close(self) {
        if let Sink::File(file) = self {
            let _ = file.writer.finalize();
        }
    }
}

/// The device an endpoint names; `None` for the default one.
fn device_name(endpoint: &AudioEndpoint) -> Option<String> {
    match endpoint {
        AudioEndpoint::Device(name) => Some(name.clone()),
        _ => None,
    }
}

fn read_wav(path: &Path, rate: u32) -> Result<Vec<i16>, AudioError> {
    let fail = |reason: String| AudioError::File { path: path.to_owned(), reason };
    let mut reader = hound::WavReader::open(path).map_err(|e| fail(e.to_string()))?;
    let spec = reader.spec();
    if !SOURCE_RATES.contains(&spec.sample_rate) {
        return Err(fail(format!("{} Hz is not a rate between 8 and 192 kHz", spec.sample_rate)));
    }
    if reader.duration() / spec.sample_rate > MAX_SOURCE_SECONDS {
        return Err(fail(format!("longer than {MAX_SOURCE_SECONDS} s")));
    }
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 2f32.powi(i32::from(spec.bits_per_sample.clamp(1, 32)) - 1);
            reader.samples::<i32>().map(|s| s.map(|v| v as f32 / scale)).collect::<Result<_, _>>()
        }
    }
    .map_err(|e| fail(e.to_string()))?;
    let mono: Vec<f32> =
        interleaved.chunks(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32).collect();
    if mono.is_empty() {
        return Err(fail("holds no audio".into()));
    }
    let converted = convert_clip(spec.sample_rate, rate, &mono)?;
    Ok(converted.into_iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_power(samples: &[f32], rate: f64, hz: f64) -> f64 {
        // Goertzel: the tone's share of the total power.
        let k = 2.0 * (2.0 * std::f64::consts::PI * hz / rate).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in samples {
            let s0 = f64::from(*x) + k * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let tone = s1 * s1 + s2 * s2 - k * s1 * s2;
        let total: f64 =
            samples.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() * samples.len() as f64 / 2.0;
        tone / total
    }

    #[test]
    fn a_tone_survives_conversion_both_ways() {
        let tone: Vec<f32> = (0..48_000)
            .map(|n| (2.0 * std::f32::consts::PI * 1000.0 * n as f32 / 48_000.0).sin() * 0.5)
            .collect();
        let down = convert_clip(48_000, 8_000, &tone).unwrap();
        assert_eq!(down.len(), 8_000);
        assert!(tone_power(&down[800..7_000], 8_000.0, 1000.0) > 0.95);
        let mut streaming = RateConverter::new(8_000, 44_100).unwrap();
        for chunk in down.chunks(160) {
            streaming.push(chunk);
        }
        let mut up = vec![0.0; streaming.available()];
        streaming.pull(&mut up);
        assert!(tone_power(&up[4_410..30_000], 44_100.0, 1000.0) > 0.95);
    }

    #[test]
    fn a_wav_source_loops_at_the_pipeline_rate_and_a_sink_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        for n in 0..1600 {
            let v = ((2.0 * std::f32::consts::PI * 1000.0 * n as f32 / 16_000.0).sin() * 10_000.0) as i16;
            writer.write_sample(v).unwrap();
            writer.write_sample(v).unwrap();
        }
        writer.finalize().unwrap();
        let samples = read_wav(&path, 8_000).unwrap();
        assert_eq!(samples.len(), 800);
        assert!(read_wav(&dir.path().join("missing.wav"), 8_000).is_err());
        std::fs::write(dir.path().join("junk.wav"), b"RIFF nonsense").unwrap();
        assert!(read_wav(&dir.path().join("junk.wav"), 8_000).is_err());
    }
}
