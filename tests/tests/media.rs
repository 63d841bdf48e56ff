//! Call audio end to end, checked by listening to recordings: cusaxd and baresip send each
//! other a tone through Kamailio (G.711 and Opus, from and to WAV files, and through
//! PulseAudio null sinks as the sound card); a relay with 5 % loss and 40 ms of jitter sits
//! on the RTP path to a sipp that echoes what it gets; DTMF goes both ways with baresip and
//! to sipp; a missing sound device fails the media, not the call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cusax_protocol::media::g711::ulaw_decode;
use cusax_tests::audio::{ToneReport, analyse_tone, write_tone};
use cusax_tests::{
    Baresip, BaresipOptions, Cusaxd, ImpairedRelay, PrivateBus, Testbed, Watch, busctl, calls_json, cusaxctl,
    finish_sipp, free_port_block, sipp_uas, status_json, wait_for, write_private,
};
use serde_json::Value;

/// How long each call carries audio before it is hung up.
const TALK: Duration = Duration::from_secs(4);

/// Real-time audio is what these tests judge: they run one at a time, so that ten calls'
/// worth of debug builds do not compete for two cores and starve a sound device.
static ONE_CALL_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_call_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CALL_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// alice's cusaxd with `media` as its `[media]` section, registered with Kamailio.
fn alice(testbed: &Testbed, dir: &Path, media: &str, env: &[(&str, &Path)]) -> (PrivateBus, Cusaxd) {
    let path = dir.join("config.toml");
    let text = format!(
        "[sip]\naor = \"sip:alice@127.0.0.1\"\nproxy = \"sip:127.0.0.1:{}\"\npassword = \"secret-alice\"\n\
         [media]\n{media}\n",
        testbed.port("SIP_PORT")
    );
    write_private(&path, &text).unwrap();
    let bus = PrivateBus::start().unwrap();
    let data = dir.join("data");
    let mut env = env.to_vec();
    env.push(("XDG_DATA_HOME", data.as_path()));
    let daemon = Cusaxd::start_with_env(&bus, &path, &env).unwrap();
    wait_for("alice to register", || (status_json(&bus)["SipState"] == "registered").then_some(()));
    (bus, daemon)
}

/// The only call, once it is active.
fn active_call(bus: &PrivateBus) -> Value {
    wait_for("an active call", || calls_json(bus).into_iter().find(|c| c["State"] == "active"))
}

/// The tone in a recording once the file is complete (its writer finishes it a moment after
/// the call ends: the size stops changing), and at least `ms` long.
fn tone_in(path: &Path, hz: u32, ms: u32) -> ToneReport {
    let mut last_size = None;
    let report = wait_for(&format!("a finished recording at {}", path.display()), || {
        let size = std::fs::metadata(path).ok()?.len();
        let settled = last_size == Some(size);
        last_size = Some(size);
        std::thread::sleep(Duration::from_millis(200));
        settled.then(|| analyse_tone(path, hz))
    });
    let report = report.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(report.span_ms >= ms, "only {} ms of {hz} Hz in {}: {report:?}", report.span_ms, path.display());
    report
}

fn file_endpoints(dir: &Path, source_rate: u32) -> (PathBuf, PathBuf) {
    let source = dir.join("tone.wav");
    write_tone(&source, 1000, source_rate, 1, 10, 0.5).unwrap();
    (source, dir.join("received.wav"))
}

/// cusaxd plays a 1 kHz tone from a file to baresip, baresip plays a 1 kHz tone back, and
/// both recordings hold it cleanly over the whole call.
fn tone_both_ways_with_baresip(codec: &str, baresip_codecs: &'static str) {
    let _serial = one_call_at_a_time();
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = BaresipOptions { codecs: baresip_codecs, tone_hz: 1000, ..BaresipOptions::default() };
    let mut bob = Baresip::start_with(&testbed, "bob", "udp", &options).unwrap();
    // 44.1 kHz, so the file goes through the resampler on the way to either codec rate.
    let (source, sink) = file_endpoints(dir.path(), 44_100);
    let media = format!(
        "codecs = [\"{codec}\"]\ninput = \"file:{}\"\noutput = \"file:{}\"",
        source.display(),
        sink.display()
    );
    let (bus, alice) = alice(&testbed, dir.path(), &media, &[]);
    assert!(cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]).status.success());
    active_call(&bus);
    std::thread::sleep(TALK);
    let call = active_call(&bus);
    assert_eq!(call["MediaState"], "active", "{call}");
    let stats = &call["MediaStats"];
    assert_eq!(stats["codec"].as_str().map(str::to_lowercase), Some(codec.to_owned()), "{stats}");
    assert!(stats["packets-sent"].as_u64() > Some(120), "{stats}");
    assert!(stats["packets-received"].as_u64() > Some(120), "{stats}");
    assert_eq!(stats["packets-lost"], 0, "{stats}");
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    bob.wait_event("CALL_CLOSED").unwrap();

    let at_bob = tone_in(&bob.received_audio().unwrap(), 1000, 3000);
    let at_alice = tone_in(&sink, 1000, 3000);
    for (side, report) in [("baresip", &at_bob), ("cusaxd", &at_alice)] {
        assert!(report.snr_db >= 30.0, "{codec} at {side}: {report:?}\n{}", alice.log_text());
        assert!(report.present >= 0.99 && report.longest_gap_ms <= 20, "{codec} at {side}: {report:?}");
    }
    assert_eq!(at_alice.rate, if codec == "opus" { 48_000 } else { 8_000 });
}

#[test]
fn a_g711_call_carries_a_clean_tone_both_ways() {
    tone_both_ways_with_baresip("pcmu", "PCMU,PCMA");
}

#[test]
fn an_opus_call_carries_a_clean_tone_both_ways() {
    tone_both_ways_with_baresip("opus", "opus/48000/2");
}

/// The real device path: cusaxd captures PulseAudio's `mic.monitor` (a test plays a tone
/// into `mic`; the default source is elsewhere) and plays to the default sink (a test
/// records its monitor).
#[test]
fn the_sound_card_path_through_pulseaudio_carries_both_directions() {
    let _serial = one_call_at_a_time();
    let testbed = Testbed::start(&["kamailio", "pulse"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = testbed.pulse_runtime_dir();
    let pulse = |program: &str| {
        let mut command = Command::new(program);
        command
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    // Different tones each way, so that a loop from microphone to speaker cannot pass.
    let options = BaresipOptions { tone_hz: 2000, ..BaresipOptions::default() };
    let mut bob = Baresip::start_with(&testbed, "bob", "udp", &options).unwrap();
    let mic_tone = dir.path().join("mic.wav");
    write_tone(&mic_tone, 1000, 48_000, 1, 30, 0.5).unwrap();
    let _feed =
        Running(pulse("paplay").args(["--device=mic", "--latency-msec=100"]).arg(&mic_tone).spawn().unwrap());
    let heard = dir.path().join("speaker.wav");
    // A low latency for the recorder too: a null sink renders as rarely as its slowest
    // listener allows (parecord's default is seconds), and would starve our stream.
    let _record = Running(
        pulse("parecord")
            .args(["--device=speaker.monitor", "--latency-msec=100", "--file-format=wav", "--channels=1"])
            .arg(&heard)
            .spawn()
            .unwrap(),
    );
    // PulseAudio's names: the monitor of the sink a test plays into, and the default sink.
    let media = "codecs = [\"pcmu\"]\ninput = \"mic.monitor\"\noutput = \"default\"";
    let (bus, alice) = alice(&testbed, dir.path(), media, &[("XDG_RUNTIME_DIR", runtime.as_path())]);
    assert!(cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]).status.success());
    // Opening a device through ALSA's PulseAudio plugin takes a second or so; the call's
    // audio starts when both are open.
    wait_for("media to flow", || {
        calls_json(&bus)
            .into_iter()
            .find(|c| c["State"] == "active" && c["MediaStats"]["packets-sent"].as_u64() > Some(0))
    });
    std::thread::sleep(TALK);
    let call = active_call(&bus);
    assert_eq!(call["MediaState"], "active", "{call}\n{}", alice.log_text());
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    bob.wait_event("CALL_CLOSED").unwrap();
    drop(_record);

    let at_bob = tone_in(&bob.received_audio().unwrap(), 1000, 3000);
    assert!(at_bob.snr_db >= 30.0 && at_bob.present >= 0.98, "microphone to baresip: {at_bob:?}");
    let at_speaker = tone_in(&heard, 2000, 3000);
    assert!(at_speaker.snr_db >= 30.0 && at_speaker.present >= 0.98, "baresip to speaker: {at_speaker:?}");
}

/// Stops a helper process (paplay, parecord) when the test is done with it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGINT lets parecord finish its WAV header.
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        if cusax_tests::wait_for_exit(&mut self.0, Duration::from_secs(2)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// sipp as carol, echoing every RTP packet it gets; its SDP names `relay_port` (a relay in
/// front of its media port `media_port`, or that port itself).
fn echoing_carol(testbed: &Testbed, dir: &Path, media_port: u16, relay_port: u16) -> Child {
    let args: Vec<String> = [
        "-mi",
        "127.0.0.1",
        "-mp",
        &media_port.to_string(),
        "-rtp_echo",
        "-key",
        "relay_port",
        &relay_port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sipp_uas(testbed, dir, "carol", "uas_echo.xml", &args)
}

/// 5 % loss and up to 40 ms of random delay on the way out, echoed back by sipp: what comes
/// back and is played holds the tone in at least 95 % of 20 ms frames, with no gap longer
/// than 60 ms (the jitter buffer reorders and waits; concealment covers the losses).
#[test]
fn loss_and_jitter_on_the_rtp_path_leave_no_audible_gap() {
    let _serial = one_call_at_a_time();
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let media_port = free_port_block(4);
    let relay = ImpairedRelay::start(
        SocketAddr::from(([127, 0, 0, 1], media_port)),
        0.05,
        Duration::from_millis(40),
        7,
    )
    .unwrap();
    let carol = echoing_carol(&testbed, dir.path(), media_port, relay.port);
    let (source, sink) = file_endpoints(dir.path(), 8_000);
    let media = format!(
        "codecs = [\"pcmu\"]\ninput = \"file:{}\"\noutput = \"file:{}\"",
        source.display(),
        sink.display()
    );
    let (bus, alice) = alice(&testbed, dir.path(), &media, &[]);
    assert!(cusaxctl(&bus, &["call", "sip:carol@127.0.0.1"]).status.success());
    active_call(&bus);
    std::thread::sleep(Duration::from_secs(6));
    let stats = active_call(&bus)["MediaStats"].clone();
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    finish_sipp(carol, "the echoing sipp", dir.path());

    let lost = relay.lost();
    assert!(lost >= 8, "the relay dropped only {lost} packets");
    assert!(stats["packets-lost"].as_u64() >= Some(lost / 2), "{stats} after {lost} dropped");
    assert!(stats["jitter-ms"].as_u64() >= Some(5), "{stats}");
    assert!(stats["jitter-buffer-ms"].as_u64() >= Some(40), "{stats}");
    // Reordered packets are played in order, not concealed: what is concealed is about
    // what was lost (a buffer that did not reorder would conceal about a third of them).
    let concealed = stats["frames-concealed"].as_u64().unwrap_or(u64::MAX);
    assert!(concealed <= lost * 3 / 2 + 5, "{concealed} frames concealed for {lost} lost: {stats}");
    assert!(stats["packets-late"].as_u64() <= Some(5), "{stats}");
    let report = tone_in(&sink, 1000, 5000);
    assert!(report.present >= 0.95, "{report:?}\n{stats}\n{}", alice.log_text());
    assert!(report.longest_gap_ms <= 60, "{report:?}");
}

fn dtmf_lines(watch: &Watch, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let line = watch.next_matching(|l| l.contains("DtmfReceived")).expect("a DtmfReceived signal");
            let event: Value = serde_json::from_str(&line).unwrap();
            event["args"][0].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// With rtcp-mux agreed, reports go both ways on the RTP port: the round-trip time, which
/// needs our sender report at baresip and its report about us back here, shows up.
#[test]
fn rtcp_over_rtcp_mux_gives_a_round_trip_time() {
    let _serial = one_call_at_a_time();
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = BaresipOptions { rtcp_mux: true, ..BaresipOptions::default() };
    let mut bob = Baresip::start_with(&testbed, "bob", "udp", &options).unwrap();
    let (bus, alice) =
        alice(&testbed, dir.path(), "codecs = [\"pcmu\"]\ninput = \"null\"\noutput = \"null\"", &[]);
    assert!(cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]).status.success());
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    // Reports go every 5 s ± 50 % each way (RFC 3550 6.2): our SR, then baresip's RR naming
    // it, may take up to 15 s.
    let rtt = cusax_tests::wait_for_within("an RTT from RTCP", Duration::from_secs(30), || {
        calls_json(&bus).into_iter().find_map(|c| c["MediaStats"]["rtt-ms"].as_u64())
    });
    assert!(rtt < 100, "{rtt} ms on loopback");
    assert!(alice.log_text().contains("rtcp_mux=true"), "rtcp-mux was not agreed");
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    bob.wait_event("CALL_CLOSED").unwrap();
}

#[test]
fn dtmf_goes_both_ways_with_baresip() {
    let _serial = one_call_at_a_time();
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Without a jitter buffer baresip reports the last digit without waiting for more RTP.
    let options = BaresipOptions { jitter: "0-0", ..BaresipOptions::default() };
    let mut bob = Baresip::start_with(&testbed, "bob", "udp", &options).unwrap();
    let (bus, _alice) =
        alice(&testbed, dir.path(), "codecs = [\"pcmu\"]\ninput = \"null\"\noutput = \"null\"", &[]);
    let watch = Watch::start(&bus, true);
    assert!(cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]).status.success());
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    active_call(&bus);

    let sent = cusaxctl(&bus, &["dtmf", "1#9"]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let heard: Vec<String> = (0..3)
        .map(|_| bob.wait_event("CALL_DTMF_START").unwrap()["param"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(heard, ["1", "#", "9"]);

    bob.command("sndcode", "42*").unwrap();
    assert_eq!(dtmf_lines(&watch, 3), ["4", "2", "*"]);

    let bad = busctl(
        &bus,
        &[
            "call",
            "org.cusax.Cusax1",
            "/org/cusax/Cusax1/call/1",
            "org.cusax.Cusax1.Call",
            "SendDtmf",
            "s",
            "12x",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'x' is not a DTMF digit"), "{bad:?}");
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
}

#[test]
fn dtmf_reaches_sipp_and_comes_back_in_its_echo() {
    let _serial = one_call_at_a_time();
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let media_port = free_port_block(4);
    let carol = echoing_carol(&testbed, dir.path(), media_port, media_port);
    let (bus, _alice) =
        alice(&testbed, dir.path(), "codecs = [\"pcmu\"]\ninput = \"null\"\noutput = \"null\"", &[]);
    let watch = Watch::start(&bus, true);
    assert!(cusaxctl(&bus, &["call", "sip:carol@127.0.0.1"]).status.success());
    active_call(&bus);
    assert!(cusaxctl(&bus, &["dtmf", "5*0D"]).status.success());
    assert_eq!(dtmf_lines(&watch, 4), ["5", "*", "0", "D"]);
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    finish_sipp(carol, "the echoing sipp", dir.path());
}

#[test]
fn a_missing_sound_device_fails_the_media_not_the_call() {
    let _serial = one_call_at_a_time();
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Baresip::start(&testbed, "bob", "udp").unwrap();
    let media = "codecs = [\"pcmu\"]\ninput = \"no-such-microphone\"\noutput = \"null\"";
    let (bus, _alice) = alice(&testbed, dir.path(), media, &[]);
    assert!(cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]).status.success());
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    let call =
        wait_for("failed media", || calls_json(&bus).into_iter().find(|c| c["MediaState"] == "failed"));
    assert_eq!(call["State"], "active");
    let reason = call["MediaStateReason"].as_str().unwrap_or_default();
    assert!(reason.contains("no-such-microphone") && reason.contains("no such device"), "{reason}");
    let listed = String::from_utf8_lossy(&cusaxctl(&bus, &["calls"]).stdout).into_owned();
    assert!(listed.contains("media failed (sound device no-such-microphone"), "{listed}");
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    bob.wait_event("CALL_CLOSED").unwrap();
}

/// cusaxd plays a tone to baresip for 1.5 s, runs `silence` (cusaxctl arguments), waits 1.5 s,
/// runs `resume` if any and plays 1.5 s more, and hangs up; `check` runs on the watch after
/// each step. Returns what baresip recorded: each recording's tone, and its length in ms.
fn tone_with_a_pause(
    silence: &[&str],
    resume: Option<&[&str]>,
    check: impl Fn(&Watch, bool),
) -> Vec<(ToneReport, u32)> {
    let _serial = one_call_at_a_time();
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Baresip::start(&testbed, "bob", "udp").unwrap();
    let (source, _) = file_endpoints(dir.path(), 8_000);
    let media = format!("codecs = [\"pcmu\"]\ninput = \"file:{}\"\noutput = \"null\"", source.display());
    let (bus, _alice) = alice(&testbed, dir.path(), &media, &[]);
    let watch = Watch::start(&bus, true);
    assert!(cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]).status.success());
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    active_call(&bus);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(cusaxctl(&bus, silence).status.success());
    check(&watch, true);
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(resume) = resume {
        assert!(cusaxctl(&bus, resume).status.success());
        check(&watch, false);
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    bob.wait_event("CALL_CLOSED").unwrap();
    let files = bob.received_audio_files().unwrap();
    files
        .iter()
        .map(|file| {
            let report = tone_in(file, 1000, 1000);
            let reader = hound::WavReader::open(file).unwrap();
            (report, reader.duration() * 1000 / reader.spec().sample_rate)
        })
        .collect()
}

/// Muting sends silence: baresip's recording has the tone, a silence as long as the mute,
/// and the tone again; Muted is signalled once per change, with the new value.
#[test]
fn muting_sends_silence_and_unmuting_brings_the_tone_back() {
    let recordings = tone_with_a_pause(&["mute"], Some(&["mute", "--off"]), |watch, muted| {
        let line = watch.next_about(&["Muted"]).expect("Muted signalled");
        assert!(line.contains(&format!("\"value\":{muted}")), "{line}");
    });
    let [(report, _)] = &recordings[..] else { panic!("one recording expected: {recordings:?}") };
    assert!((1300..=1800).contains(&report.longest_gap_ms), "{report:?}");
    assert!(report.present > 0.55 && report.present < 0.75, "{report:?}");
}

/// Our hold (a sendonly re-INVITE) keeps RTP flowing but sends silence, not the
/// microphone: a relay in front of a sipp that takes the hold records what we send.
#[test]
fn holding_sends_silence_not_the_microphone() {
    let _serial = one_call_at_a_time();
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let media_port = free_port_block(4);
    let relay =
        ImpairedRelay::start(SocketAddr::from(([127, 0, 0, 1], media_port)), 0.0, Duration::ZERO, 1).unwrap();
    let args: Vec<String> = ["-mi", "127.0.0.1", "-mp", &media_port.to_string(), "-key", "relay_port"]
        .iter()
        .map(|s| s.to_string())
        .chain([relay.port.to_string()])
        .collect();
    let carol = sipp_uas(&testbed, dir.path(), "carol", "uas_hold.xml", &args);
    let (source, _) = file_endpoints(dir.path(), 8_000);
    let media = format!("codecs = [\"pcmu\"]\ninput = \"file:{}\"\noutput = \"null\"", source.display());
    let (bus, _alice) = alice(&testbed, dir.path(), &media, &[]);
    assert!(cusaxctl(&bus, &["call", "sip:carol@127.0.0.1"]).status.success());
    active_call(&bus);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(cusaxctl(&bus, &["hold"]).status.success());
    wait_for("the call held", || calls_json(&bus).into_iter().find(|c| c["State"] == "held"));
    let held_at = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    finish_sipp(carol, "the sipp that takes the hold", dir.path());

    // The level of each PCMU packet (12-byte RTP header, then µ-law), before and during hold.
    let level = |datagram: &[u8]| -> f64 {
        let payload = &datagram[12.min(datagram.len())..];
        let sum: f64 = payload.iter().map(|code| f64::from(ulaw_decode(*code)).powi(2)).sum();
        (sum / payload.len().max(1) as f64).sqrt()
    };
    let audio: Vec<(std::time::Instant, f64)> = relay
        .forwarded()
        .into_iter()
        .filter(|(_, d)| d.len() > 12 && d[1] & 0x7f == 0)
        .map(|(at, d)| (at, level(&d)))
        .collect();
    let before: Vec<f64> =
        audio.iter().filter(|(at, _)| *at < held_at - Duration::from_millis(600)).map(|a| a.1).collect();
    let during: Vec<f64> =
        audio.iter().filter(|(at, _)| *at > held_at + Duration::from_millis(100)).map(|a| a.1).collect();
    assert!(
        before.len() > 20 && during.len() > 40,
        "RTP must flow before and during hold: {} and {}",
        before.len(),
        during.len()
    );
    assert!(before.iter().all(|l| *l > 5000.0), "the tone before the hold: {before:?}");
    assert!(during.iter().all(|l| *l < 100.0), "silence during the hold: {during:?}");
}
