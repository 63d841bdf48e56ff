//! How fast the SIP core reads and writes messages and runs a transaction, on one core.
//! `cargo bench -p cusax-protocol`; figures in BENCHMARKS.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cusax_protocol::sip::header::{cseq, top_via_branch};
use cusax_protocol::sip::registration::{Entropy, Registration, RegistrationConfig, RegistrationEvent};
use cusax_protocol::sip::transaction::{NonInviteClient, Reliability};
use cusax_protocol::sip::{normalise, parse_datagram};

/// A typical INVITE as a softphone sends it through a proxy, with its SDP offer.
const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
Route: <sip:proxy.example.com;lr>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: a84b4c76e66710@192.0.2.10\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5060>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-41d0-a765-00a0c91e6bf6>\"\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
Supported: gruu, outbound, replaces\r\n\
User-Agent: cusaxd/0.1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 247\r\n\
\r\n\
v=0\r\n\
o=cusaxd 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 96 0 8 101\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

struct Counter(u8);
impl Entropy for Counter {
    fn fill(&mut self, bytes: &mut [u8]) {
        for b in bytes {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

fn messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("message");
    group.throughput(Throughput::Elements(1));
    group.bench_function("normalise an INVITE", |b| b.iter(|| normalise(black_box(INVITE))));
    group.bench_function("normalise and read with rsip an INVITE", |b| {
        b.iter(|| parse_datagram(black_box(INVITE)))
    });
    let parsed = normalise(INVITE).unwrap_or_else(|e| panic!("{e}"));
    group.bench_function("serialise an INVITE", |b| b.iter(|| black_box(&parsed).to_bytes()));
    group.bench_function("read Via branch and CSeq", |b| {
        b.iter(|| (top_via_branch(black_box(&parsed)), cseq(black_box(&parsed))))
    });
    group.finish();
}

fn transactions(c: &mut Criterion) {
    let mut group = c.benchmark_group("transaction");
    group.throughput(Throughput::Elements(1));
    let start = Instant::now();
    // A whole non-INVITE client transaction on UDP: send, one retransmission, 200, Timer K.
    group.bench_function("non-INVITE client, UDP, to termination", |b| {
        b.iter(|| {
            let (mut t, out) =
                NonInviteClient::start(black_box(b"REGISTER".to_vec()), Reliability::Unreliable, start);
            black_box(out);
            black_box(t.on_timeout(start + Duration::from_millis(500)));
            black_box(t.on_response(200, start + Duration::from_millis(600)));
            black_box(t.on_timeout(start + Duration::from_secs(6)));
            assert!(t.is_terminated());
        })
    });
    // A REGISTER round with a challenge: REGISTER, 401, REGISTER with digest, 200.
    let config = RegistrationConfig {
        aor: "sip:alice@example.com".into(),
        registrar: "sip:example.com".into(),
        auth_user: "alice".into(),
        password: Some("secret".into()),
        contact: "sip:alice@192.0.2.10:5060".into(),
        transport: "UDP".into(),
        sent_by: "192.0.2.10:5060".into(),
        instance: "urn:uuid:f81d4fae-7dec-41d0-a765-00a0c91e6bf6".into(),
        expires: 600,
        reliability: Reliability::Unreliable,
        user_agent: "cusaxd/bench".into(),
    };
    group.bench_function("registration with digest challenge", |b| {
        b.iter(|| {
            let mut r = Registration::new(config.clone(), Box::new(Counter(0)));
            let first = sent(&r.start(start));
            let challenge = reply(
                &first,
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc\", qop=\"auth\"\r\n",
            );
            let second = sent(&r.on_response(&challenge, start));
            black_box(r.on_response(&reply(&second, "200 OK", "Expires: 600\r\n"), start));
        })
    });
    group.finish();
}

fn sent(events: &[RegistrationEvent]) -> cusax_protocol::sip::Normalised {
    let bytes = events.iter().find_map(|e| match e {
        RegistrationEvent::Transmit(b) => Some(b.clone()),
        _ => None,
    });
    normalise(&bytes.unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"))
}

fn reply(
    request: &cusax_protocol::sip::Normalised,
    status: &str,
    extra: &str,
) -> cusax_protocol::sip::Normalised {
    let header = |name| request.header(name).unwrap_or_default();
    let text = format!(
        "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=x\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        header("Via"),
        header("From"),
        header("To"),
        header("Call-ID"),
        header("CSeq")
    );
    normalise(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

criterion_group!(benches, messages, transactions);
criterion_main!(benches);
