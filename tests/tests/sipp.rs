//! cusaxd calls sipp through Kamailio, with a lossy relay in front of Kamailio: a lost INVITE
//! is recovered by our retransmission (Timer A), a lost 200 by the callee's and our ACK; a
//! busy callee ends the call with its 486. sipp calls cusaxd with a delayed offer.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use cusax_tests::{
    Cusaxd, LossyRelay, PATIENCE, PrivateBus, Testbed, cusaxctl, finish_sipp, free_port_block, repo_root,
    sipp_command, sipp_uas, write_private,
};
use serde_json::Value;

/// A sipp UAS registered as carol, running `scenario` in the background.
fn carol_uas(testbed: &Testbed, dir: &Path, scenario: &str) -> Child {
    let rtp = free_port_block(4).to_string();
    let args: Vec<String> = ["-mi", "127.0.0.1", "-mp", &rtp].iter().map(|s| s.to_string()).collect();
    sipp_uas(testbed, dir, "carol", scenario, &args)
}

/// alice's cusaxd, reaching Kamailio through `proxy_port` (the test bed's, or a relay's).
fn alice(proxy_port: u16, dir: &Path) -> (PrivateBus, Cusaxd) {
    let path = dir.join("config.toml");
    let text = format!(
        "[sip]\naor = \"sip:alice@127.0.0.1\"\nproxy = \"sip:127.0.0.1:{proxy_port}\"\npassword = \"secret-alice\"\n\
         [media]\ncodecs = [\"pcmu\"]\n"
    );
    write_private(&path, &text).unwrap();
    let bus = PrivateBus::start().unwrap();
    let data = dir.join("data");
    let daemon = Cusaxd::start_with_env(&bus, &path, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    wait_until(&bus, |s| s["SipState"] == "registered", &daemon);
    (bus, daemon)
}

fn wait_until(bus: &PrivateBus, done: impl Fn(&Value) -> bool, daemon: &Cusaxd) {
    let start = Instant::now();
    loop {
        let out = cusaxctl(bus, &["status", "--json"]);
        let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if done(&status) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "timed out; status {status}\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The call's properties once its State is `state`.
fn wait_for_call(bus: &PrivateBus, state: &str) -> Value {
    let start = Instant::now();
    loop {
        let out = cusaxctl(bus, &["calls", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(call) =
            text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|c| c["State"] == state)
        {
            return call;
        }
        assert!(start.elapsed() < PATIENCE, "no call became {state}: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn call_through_a_lossy_relay(drop_once: &[(&str, &str)]) {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uas = carol_uas(&testbed, dir.path(), "uas_answer.xml");
    let kamailio = std::net::SocketAddr::from(([127, 0, 0, 1], testbed.port("SIP_PORT")));
    let relay = LossyRelay::start(kamailio, drop_once).unwrap();
    let (bus, _alice) = alice(relay.port, dir.path());
    assert!(cusaxctl(&bus, &["call", "sip:carol@127.0.0.1"]).status.success());
    wait_for_call(&bus, "active");
    assert_eq!(relay.dropped().len(), drop_once.len(), "the relay dropped {:?}", relay.dropped());
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    finish_sipp(uas, "the sipp UAS", dir.path());
}

#[test]
fn our_invite_retransmission_recovers_a_lost_invite() {
    // The first INVITE (CSeq 1, no credentials yet) is lost; its retransmission draws the 407.
    call_through_a_lossy_relay(&[("INVITE sip:carol", "CSeq: 1 INVITE")]);
}

#[test]
fn a_lost_200_is_recovered_by_its_retransmission_and_our_ack() {
    call_through_a_lossy_relay(&[("SIP/2.0 200 OK", " INVITE\r\n")]);
}

#[test]
fn a_busy_callee_ends_the_call_with_486() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uas = carol_uas(&testbed, dir.path(), "uas_busy.xml");
    let (bus, _alice) = alice(testbed.port("SIP_PORT"), dir.path());
    assert!(cusaxctl(&bus, &["call", "sip:carol@127.0.0.1"]).status.success());
    let ended = wait_for_call(&bus, "ended");
    assert_eq!(ended["StateReason"], "busy (486 Busy Here)");
    finish_sipp(uas, "the sipp UAS", dir.path());
}

#[test]
fn a_caller_with_a_delayed_offer_gets_our_offer_and_answers_in_the_ack() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, alice) = alice(testbed.port("SIP_PORT"), dir.path());
    let port = free_port_block(1);
    let rtp = free_port_block(4);
    let proxy = format!("127.0.0.1:{}", testbed.port("SIP_PORT"));
    let args: Vec<String> = ["-s", "alice", "-key", "caller", "bob", "-au", "bob", "-ap", "secret-bob"]
        .iter()
        .map(|s| s.to_string())
        .chain(["-mi".into(), "127.0.0.1".into(), "-mp".into(), rtp.to_string(), proxy])
        .collect();
    let uac = sipp_command(dir.path(), &repo_root().join("tests/sipp/uac_late_offer.xml"), port, &args)
        .spawn()
        .unwrap();
    wait_for_call(&bus, "incoming");
    assert!(cusaxctl(&bus, &["answer"]).status.success());
    let ended = wait_for_call(&bus, "ended");
    assert_eq!(ended["StateReason"], "the other side hung up");
    finish_sipp(uac, "the sipp UAC", dir.path());
    let log = alice.log_text();
    assert!(log.contains("answering with an offer") && log.contains("media agreed"), "{log}");
}
