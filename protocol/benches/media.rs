//! What the pure media pieces cost per 20 ms frame, on one core: G.711 both ways, a jitter
//! buffer packet in and frame out, and RTCP reception statistics.
//! `cargo bench -p cusax-protocol --bench media`; figures in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cusax_protocol::media::g711;
use cusax_protocol::media::jitter::{JitterBuffer, JitterConfig};
use cusax_protocol::media::stats::ReceiveStats;

/// One 20 ms frame at 8 kHz of a 1 kHz tone.
fn frame() -> Vec<i16> {
    (0..160).map(|n| (8000.0 * (2.0 * std::f64::consts::PI * f64::from(n) / 8.0).sin()) as i16).collect()
}

fn g711(c: &mut Criterion) {
    let pcm = frame();
    let mut group = c.benchmark_group("g711");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode a 20 ms frame (µ-law)", |b| {
        let mut out = Vec::with_capacity(160);
        b.iter(|| {
            out.clear();
            g711::encode_ulaw(black_box(&pcm), &mut out);
        })
    });
    let mut coded = Vec::new();
    g711::encode_ulaw(&pcm, &mut coded);
    group.bench_function("decode a 20 ms frame (µ-law)", |b| {
        let mut out = Vec::with_capacity(160);
        b.iter(|| {
            out.clear();
            g711::decode_ulaw(black_box(&coded), &mut out);
        })
    });
    group.finish();
}

/// A steady stream with jitter: push one packet, pop one frame, as a call does every 20 ms.
fn jitter_buffer(c: &mut Criterion) {
    let mut group = c.benchmark_group("jitter buffer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push a packet and pop a frame (8 kHz, 0-40 ms jitter)", |b| {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000));
        let payload = vec![0xFFu8; 160];
        let mut n: u32 = 0;
        b.iter(|| {
            let sent = Duration::from_millis(u64::from(n) * 20);
            let jitter = Duration::from_millis(u64::from(n.wrapping_mul(2_654_435_761) % 40));
            buffer.push(sent + jitter, n as u16, n.wrapping_mul(160), payload.clone());
            black_box(buffer.pop(sent + Duration::from_millis(60)));
            n = n.wrapping_add(1);
        })
    });
    group.bench_function("reception statistics for a packet", |b| {
        let mut stats = ReceiveStats::new(8000);
        let mut n: u32 = 0;
        b.iter(|| {
            let arrival = Duration::from_millis(u64::from(n) * 20);
            black_box(stats.on_packet(7, n as u16, n.wrapping_mul(160), arrival));
            n = n.wrapping_add(1);
        })
    });
    group.finish();
}

criterion_group!(benches, g711, jitter_buffer);
criterion_main!(benches);
