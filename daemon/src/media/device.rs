//! Sound devices through cpal: PulseAudio's native protocol when a server runs (PipeWire
//! serves it too), else ALSA. A cpal stream runs its callback on an audio thread of its own; ours only moves
//! samples between that callback and a lock-free ring (ringbuf), mixed down to mono at the
//! device's rate. The stream itself lives on a small thread of ours, because opening and
//! closing a device may block and must not stall the runtime. Dropping the capture or
//! playback handle closes the stream.

use std::sync::mpsc as std_mpsc;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{Device, SampleFormat, StreamConfig};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use tokio::sync::{mpsc, oneshot};

use super::audio::AudioError;

/// Room in each ring: half a second at 192 kHz, two seconds at 48 kHz.
const RING_SAMPLES: usize = 96_000;
/// How long opening a device may take.
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const CAPTURE_PERIOD_MS: u32 = 40;
const PLAYBACK_PERIOD_MS: u32 = 40;
/// Playback queued beyond this (a slow start, a slow device clock) is cut back to
/// PLAYBACK_KEEP_MS.
const MAX_PLAYBACK_LATENCY_MS: u32 = 200;
const PLAYBACK_KEEP_MS: u32 = 60;
/// Silence queued before playback starts.
const PLAYBACK_PREFILL_MS: u32 = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Capture,
    Playback,
}

/// Keeps a stream open; dropping it closes the stream on its thread.
pub struct StreamGuard {
    _stop: std_mpsc::Sender<()>,
}

/// Samples from a capture device, mono at `rate`.
pub struct DeviceCapture {
    pub samples: HeapCons<f32>,
    pub rate: u32,
    pub _guard: StreamGuard,
}

/// Samples for a playback device, mono at `rate`.
pub struct DevicePlayback {
    pub samples: HeapProd<f32>,
    pub rate: u32,
    pub _guard: StreamGuard,
}

/// Opens a capture device (`None`: the default one). Failures while it runs arrive on
/// `failures`.
pub async fn open_capture(
    name: Option<String>,
    failures: mpsc::UnboundedSender<String>,
) -> Result<DeviceCapture, AudioError> {
    let (producer, consumer) = HeapRb::<f32>::new(RING_SAMPLES).split();
    let (rate, guard) = open(Kind::Capture, name, Ring::Capture(producer), failures).await?;
    Ok(DeviceCapture { samples: consumer, rate, _guard: guard })
}

/// Opens a playback device (`None`: the default one).
pub async fn open_playback(
    name: Option<String>,
    failures: mpsc::UnboundedSender<String>,
) -> Result<DevicePlayback, AudioError> {
    let (mut producer, consumer) = HeapRb::<f32>::new(RING_SAMPLES).split();
    // The device's first periods find silence queued rather than an empty ring (a stream whose
    // first request goes unanswered may not ask again for seconds). The device's rate is not
    // known yet: 48 kHz samples are plenty at any lower rate.
    producer.push_slice(&vec![0.0; (48_000 * PLAYBACK_PREFILL_MS / 1000) as usize]);
    let (rate, guard) = open(Kind::Playback, name, Ring::Playback(consumer), failures).await?;
    Ok(DevicePlayback { samples: producer, rate, _guard: guard })
}

enum Ring {
    Capture(HeapProd<f32>),
    Playback(HeapCons<f32>),
}

async fn open(
    kind: Kind,
    name: Option<String>,
    ring: Ring,
    failures: mpsc::UnboundedSender<String>,
) -> Result<(u32, StreamGuard), AudioError> {
    let (ready_tx, ready) = oneshot::channel();
    let (stop, stopped) = std_mpsc::channel::<()>();
    let label = name.clone().unwrap_or_else(|| "default".into());
    std::thread::Builder::new()
        .name(format!("cusaxd-audio-{}", if kind == Kind::Capture { "in" } else { "out" }))
        .spawn(move || {
            let stream = match build(kind, name.as_deref(), ring, failures) {
                Ok((stream, rate)) => {
                    let _ = ready_tx.send(Ok(rate));
                    stream
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // Parked until the guard is dropped: then the stream closes here.
            let _ = stopped.recv();
            drop(stream);
        })
        .map_err(|e| AudioError::Device { name: label.clone(), reason: format!("no audio thread: {e}") })?;
    // A device that hangs while opening must not hold the call's media forever; its thread
    // ends (and the stream closes) whenever the open returns.
    let rate = match tokio::time::timeout(OPEN_TIMEOUT, ready).await {
        Ok(Ok(opened)) => opened?,
        Ok(Err(_)) => {
            return Err(AudioError::Device { name: label, reason: "the audio thread ended".into() });
        }
        Err(_) => return Err(AudioError::Device { name: label, reason: "opening took too long".into() }),
    };
    Ok((rate, StreamGuard { _stop: stop }))
}

fn find(kind: Kind, name: Option<&str>) -> Result<Device, AudioError> {
    let host = cpal::default_host();
    let label = name.unwrap_or("default").to_owned();
    let missing = |reason: String| AudioError::Device { name: label.clone(), reason };
    match name {
        None => match kind {
            Kind::Capture => host.default_input_device(),
            Kind::Playback => host.default_output_device(),
        }
        .ok_or_else(|| missing("there is no default device".into())),
        Some(wanted) => {
            let devices = match kind {
                Kind::Capture => host.input_devices().map(|d| d.collect::<Vec<_>>()),
                Kind::Playback => host.output_devices().map(|d| d.collect::<Vec<_>>()),
            }
            .map_err(|e| missing(format!("cannot list devices: {e}")))?;
            devices
                .into_iter()
                .find(|d| {
                    d.to_string() == wanted
                        || d.id().is_ok_and(|id| id.to_string() == wanted || id.id() == wanted)
                })
                .ok_or_else(|| missing("no such device".into()))
        }
    }
}

fn build(
    kind: Kind,
    name: Option<&str>,
    ring: Ring,
    failures: mpsc::UnboundedSender<String>,
) -> Result<(cpal::Stream, u32), AudioError> {
    let label = name.unwrap_or("default").to_owned();
    let failed = |reason: String| AudioError::Device { name: label.clone(), reason };
    let device = find(kind, name)?;
    let supported = match kind {
        Kind::Capture => device.default_input_config(),
        Kind::Playback => device.default_output_config(),
    }
    .map_err(|e| failed(e.to_string()))?;
    let format = supported.sample_format();
    let mut config: StreamConfig = supported.config();
    // Short periods keep the delay low; capture gets longer ones because a record stream
    // overruns when its reader is late by more than one period (PulseAudio's max_length).
    let period_ms = if kind == Kind::Capture { CAPTURE_PERIOD_MS } else { PLAYBACK_PERIOD_MS };
    config.buffer_size = cpal::BufferSize::Fixed(supported.sample_rate() * period_ms / 1000);
    let rate = config.sample_rate;
    let channels = usize::from(config.channels.max(1));
    let on_error = {
        let what =
            format!("sound device {label} ({})", if kind == Kind::Capture { "capture" } else { "playback" });
        move |e: cpal::Error| {
            // cpal has already recovered from an xrun (a late period): a glitch, not a failure.
            if e.kind() != cpal::ErrorKind::Xrun {
                let _ = failures.send(format!("{what}: {e}"));
            }
        }
    };
    let latency = PlaybackLatency::at(rate);
    let stream = match (ring, format) {
        (Ring::Capture(mut ring), SampleFormat::F32) => device.build_input_stream::<f32, _, _>(
            config,
            move |data, _| capture(data, channels, &mut ring, |s| s),
            on_error,
            None,
        ),
        (Ring::Capture(mut ring), SampleFormat::I16) => device.build_input_stream::<i16, _, _>(
            config,
            move |data, _| capture(data, channels, &mut ring, |s| f32::from(s) / 32768.0),
            on_error,
            None,
        ),
        (Ring::Playback(mut ring), SampleFormat::F32) => device.build_output_stream::<f32, _, _>(
            config,
            move |data, _| play(data, channels, &mut ring, &latency, |s| s),
            on_error,
            None,
        ),
        (Ring::Playback(mut ring), SampleFormat::I16) => device.build_output_stream::<i16, _, _>(
            config,
            move |data, _| {
                play(data, channels, &mut ring, &latency, |s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
            },
            on_error,
            None,
        ),
        (_, other) => return Err(failed(format!("sample format {other} is not supported"))),
    }
    .map_err(|e| failed(e.to_string()))?;
    stream.play().map_err(|e| failed(e.to_string()))?;
    tracing::info!(device = %label, ?kind, rate, channels, %format, period_ms, "sound device open");
    Ok((stream, rate))
}

/// In the audio callback: mix each frame down to mono and queue it; when our side falls
/// behind and the ring is full, the newest samples are dropped (a glitch, never a stall).
fn capture<T: Copy>(data: &[T], channels: usize, ring: &mut HeapProd<f32>, to_f32: impl Fn(T) -> f32) {
    for frame in data.chunks(channels) {
        let sum: f32 = frame.iter().map(|s| to_f32(*s)).sum();
        let _ = ring.try_push(sum / channels as f32);
    }
}

/// In the audio callback: the same mono sample on every channel; silence when we have
/// nothing queued.
fn play<T: Copy>(
    data: &mut [T],
    channels: usize,
    ring: &mut HeapCons<f32>,
    latency: &PlaybackLatency,
    from_f32: impl Fn(f32) -> T,
) {
    // Only this side can drop queued audio: when the device took its time to start, or runs
    // slower than our clock, skip the backlog to keep the delay bounded.
    let queued = ring.occupied_len();
    if queued > latency.max {
        ring.skip(queued - latency.keep);
    }

    for frame in data.chunks_mut(channels) {
        let sample = from_f32(ring.try_pop().unwrap_or(0.0));
        frame.fill(sample);
    }
}

/// Playback backlog bounds, in samples at the device's rate.
#[derive(Debug, Clone, Copy)]
struct PlaybackLatency {
    max: usize,
    keep: usize,
}

impl PlaybackLatency {
    fn at(rate: u32) -> Self {
        Self {
            max: (rate * MAX_PLAYBACK_LATENCY_MS / 1000) as usize,
            keep: (rate * PLAYBACK_KEEP_MS / 1000) as usize,
        }
    }
}
