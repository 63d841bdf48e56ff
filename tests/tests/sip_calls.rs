//! Calls through a real Kamailio with a real baresip at the other end: cusaxd calls baresip
//! and hangs up; baresip calls cusaxd and `cusaxctl answer` answers; failures end with their
//! reason; the call object's interface matches the shipped XML.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cusax_tests::{
    Baresip, Cusaxd, PATIENCE, PrivateBus, Testbed, assert_documented, cusaxctl, write_private,
};
use serde_json::Value;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// alice's cusaxd, registered with the test bed's Kamailio.
fn alice(testbed: &Testbed, dir: &Path, transport: &str) -> (PrivateBus, Cusaxd) {
    account(testbed, dir, "alice", transport)
}

/// `user`'s cusaxd (password `secret-<user>`), registered with the test bed's Kamailio.
fn account(testbed: &Testbed, dir: &Path, user: &str, transport: &str) -> (PrivateBus, Cusaxd) {
    let path: PathBuf = dir.join("config.toml");
    let port = testbed.port(if transport == "tls" { "SIP_TLS_PORT" } else { "SIP_PORT" });
    let text = format!(
        "[sip]\naor = \"sip:{user}@127.0.0.1\"\nproxy = \"sip:127.0.0.1:{port}\"\ntransport = \"{transport}\"\n\
         password = \"secret-{user}\"\n[media]\ncodecs = [\"pcmu\", \"pcma\"]\n[tls]\nextra_ca = \"{}\"\n",
        testbed.ca_file().display()
    );
    write_private(&path, &text).unwrap();
    let bus = PrivateBus::start().unwrap();
    let data = dir.join("data");
    let daemon = Cusaxd::start_with_env(&bus, &path, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    let start = Instant::now();
    while cusaxd_status(&bus)["SipState"] != "registered" {
        assert!(start.elapsed() < PATIENCE, "{user} did not register:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    (bus, daemon)
}

fn cusaxd_status(bus: &PrivateBus) -> Value {
    let out = cusaxctl(bus, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn calls(bus: &PrivateBus) -> Vec<Value> {
    let out = cusaxctl(bus, &["calls", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits until the call at `path` has `state`; returns its properties.
fn wait_for_call(bus: &PrivateBus, path: &str, state: &str) -> Value {
    let start = Instant::now();
    loop {
        let now = calls(bus);
        if let Some(call) = now.iter().find(|c| c["Path"] == path && c["State"] == state) {
            return call.clone();
        }
        assert!(start.elapsed() < PATIENCE, "{path} never became {state}: {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_no_calls(bus: &PrivateBus) {
    let start = Instant::now();
    while !calls(bus).is_empty() {
        assert!(start.elapsed() < PATIENCE, "the ended call was never removed: {:?}", calls(bus));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn calls_baresip_and_hangs_up(transport: &str) {
    let testbed = Testbed::start_with(&["kamailio"], &[("TESTBED_SIP_TLS", "1")]).unwrap();
    let mut bob = Baresip::start(&testbed, "bob", transport).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, _alice) = alice(&testbed, dir.path(), transport);

    let out = cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(path, "/org/cusax/Cusax1/call/1");
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    let call = wait_for_call(&bus, &path, "active");
    assert_eq!(call["Direction"], "outgoing");
    assert_eq!(call["RemoteUri"], "sip:bob@127.0.0.1");

    // The live call object is what the XML documents.
    assert_documented(&bus, &path, "org.cusax.Cusax1.Call");

    let out = cusaxctl(&bus, &["hangup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    bob.wait_event("CALL_CLOSED").unwrap();
    let ended = wait_for_call(&bus, &path, "ended");
    assert_eq!(ended["StateReason"], "hung up");
    wait_for_no_calls(&bus);
}

#[test]
fn cusaxd_calls_baresip_over_udp_and_hangs_up() {
    calls_baresip_and_hangs_up("udp");
}

#[test]
fn cusaxd_calls_baresip_over_tcp_and_hangs_up() {
    calls_baresip_and_hangs_up("tcp");
}

#[test]
fn cusaxd_calls_baresip_over_tls_and_hangs_up() {
    calls_baresip_and_hangs_up("tls");
}

fn baresip_calls_and_cusaxctl_answers(transport: &str) {
    let testbed = Testbed::start_with(&["kamailio"], &[("TESTBED_SIP_TLS", "1")]).unwrap();
    let mut bob = Baresip::start(&testbed, "bob", transport).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, _alice) = alice(&testbed, dir.path(), transport);

    bob.command("dial", "sip:alice@127.0.0.1").unwrap();
    let path = "/org/cusax/Cusax1/call/1";
    let call = wait_for_call(&bus, path, "incoming");
    assert_eq!(call["Direction"], "incoming");
    assert_eq!(call["RemoteUri"], "sip:bob@127.0.0.1");
    assert_eq!(call["RemoteName"], "bob (baresip)");

    let out = cusaxctl(&bus, &["answer"]);
    assert!(out.status.success(), "{}", stderr(&out));
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    wait_for_call(&bus, path, "active");

    bob.command("hangup", "").unwrap();
    let ended = wait_for_call(&bus, path, "ended");
    assert_eq!(ended["StateReason"], "the other side hung up");
}

#[test]
fn baresip_calls_cusaxd_over_udp_and_cusaxctl_answers() {
    baresip_calls_and_cusaxctl_answers("udp");
}

#[test]
fn baresip_calls_cusaxd_over_tcp_and_cusaxctl_answers() {
    baresip_calls_and_cusaxctl_answers("tcp");
}

#[test]
fn baresip_calls_cusaxd_over_tls_and_cusaxctl_answers() {
    baresip_calls_and_cusaxctl_answers("tls");
}

#[test]
fn declining_an_incoming_call_tells_the_caller() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let mut bob = Baresip::start(&testbed, "bob", "udp").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, _alice) = alice(&testbed, dir.path(), "udp");
    bob.command("dial", "sip:alice@127.0.0.1").unwrap();
    wait_for_call(&bus, "/org/cusax/Cusax1/call/1", "incoming");
    let out = cusaxctl(&bus, &["hangup", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let closed = bob.wait_event("CALL_CLOSED").unwrap();
    assert!(closed.to_string().contains("603"), "baresip should see the 603: {closed}");
    assert_eq!(wait_for_call(&bus, "/org/cusax/Cusax1/call/1", "ended")["StateReason"], "declined");
}

#[test]
fn a_call_to_nobody_ends_with_the_proxys_reason() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, _alice) = alice(&testbed, dir.path(), "udp");
    let out = cusaxctl(&bus, &["call", "sip:nobody@127.0.0.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ended = wait_for_call(&bus, "/org/cusax/Cusax1/call/1", "ended");
    assert_eq!(ended["StateReason"], "404 Not Found");
    // While the ended call is still shown, acting on it is a named error.
    let out = cusaxctl(&bus, &["hangup", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(org.cusax.Cusax1.Error.NotFound)"), "{}", stderr(&out));
}

#[test]
fn bad_targets_and_an_unregistered_account_are_named_errors() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, _alice) = alice(&testbed, dir.path(), "udp");
    let out = cusaxctl(&bus, &["call", "bob"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(org.cusax.Cusax1.Error.InvalidAddress)"), "{}", stderr(&out));
    let out = cusaxctl(&bus, &["answer"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no call to answer"), "{}", stderr(&out));
    let out = cusaxctl(&bus, &["hangup", "7"]);
    assert!(
        stderr(&out).contains("org.freedesktop.DBus.Error.UnknownObject")
            || stderr(&out).contains("NotFound"),
        "{}",
        stderr(&out)
    );

    let other = tempfile::tempdir().unwrap();
    let config = other.path().join("config.toml");
    // A registrar port where nothing listens: never registered.
    write_private(
        &config,
        "[sip]\naor = \"sip:carol@127.0.0.1\"\nproxy = \"sip:127.0.0.1:9\"\ntransport = \"tcp\"\n",
    )
    .unwrap();
    let lonely = PrivateBus::start().unwrap();
    let _carol = Cusaxd::start(&lonely, &config).unwrap();
    let out = cusaxctl(&lonely, &["call", "sip:bob@127.0.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(org.cusax.Cusax1.Error.NotRegistered)"), "{}", stderr(&out));
}

#[test]
fn hold_and_resume_both_ways_with_baresip() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let mut bob = Baresip::start(&testbed, "bob", "udp").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, _alice) = alice(&testbed, dir.path(), "udp");
    let out = cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = "/org/cusax/Cusax1/call/1";
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    wait_for_call(&bus, path, "active");

    // We hold, baresip agrees; we resume.
    let out = cusaxctl(&bus, &["hold"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_call(&bus, path, "held");
    let out = cusaxctl(&bus, &["resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_call(&bus, path, "active");

    // baresip holds us, then resumes.
    bob.command("hold", "").unwrap();
    wait_for_call(&bus, path, "held");
    bob.command("resume", "").unwrap();
    wait_for_call(&bus, path, "active");
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    bob.wait_event("CALL_CLOSED").unwrap();
}

#[test]
fn two_cusaxd_call_each_other_through_kamailio() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let (alice_bus, _alice) = account(&testbed, alice_dir.path(), "alice", "udp");
    let (bob_bus, _bob) = account(&testbed, bob_dir.path(), "bob", "tcp");

    let out = cusaxctl(&alice_bus, &["call", "sip:bob@127.0.0.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = "/org/cusax/Cusax1/call/1";
    let incoming = wait_for_call(&bob_bus, path, "incoming");
    assert_eq!(incoming["RemoteUri"], "sip:alice@127.0.0.1");
    wait_for_call(&alice_bus, path, "ringing");
    assert!(cusaxctl(&bob_bus, &["answer"]).status.success());
    wait_for_call(&alice_bus, path, "active");
    wait_for_call(&bob_bus, path, "active");
    assert!(cusaxctl(&bob_bus, &["hangup"]).status.success());
    assert_eq!(wait_for_call(&alice_bus, path, "ended")["StateReason"], "the other side hung up");
    assert_eq!(wait_for_call(&bob_bus, path, "ended")["StateReason"], "hung up");
}

#[test]
fn options_through_the_proxy_are_answered_with_what_cusaxd_can_do() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_bus, _alice) = alice(&testbed, dir.path(), "udp");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let local = socket.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:alice@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKopt1\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@example.org>;tag=p1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: options-1\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket.send_to(options.as_bytes(), ("127.0.0.1", testbed.port("SIP_PORT"))).unwrap();
    let mut buffer = [0u8; 4096];
    let n = socket.recv(&mut buffer).unwrap();
    let reply = String::from_utf8_lossy(&buffer[..n]).into_owned();
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
    assert!(reply.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"), "{reply}");
    assert!(reply.contains("Accept: application/sdp\r\n"), "{reply}");
    assert!(reply.contains(";audio\r\n"), "{reply}");
    let to = reply.lines().find(|l| l.starts_with("To: ")).unwrap_or_default();
    let tag = to.split(";tag=").nth(1).unwrap_or_default();
    assert!(tag.len() >= 8 && tag.chars().all(|c| c.is_ascii_hexdigit()), "a real To tag: {to}");
}

#[test]
fn a_second_incoming_call_is_offered_while_one_is_up() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let mut bob = Baresip::start(&testbed, "bob", "udp").unwrap();
    let mut carol = Baresip::start(&testbed, "carol", "udp").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, _alice) = alice(&testbed, dir.path(), "udp");
    bob.command("dial", "sip:alice@127.0.0.1").unwrap();
    wait_for_call(&bus, "/org/cusax/Cusax1/call/1", "incoming");
    assert!(cusaxctl(&bus, &["answer", "1"]).status.success());
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    wait_for_call(&bus, "/org/cusax/Cusax1/call/1", "active");

    carol.command("dial", "sip:alice@127.0.0.1").unwrap();
    let second = wait_for_call(&bus, "/org/cusax/Cusax1/call/2", "incoming");
    assert_eq!(second["RemoteUri"], "sip:carol@127.0.0.1");
    assert_eq!(calls(&bus).len(), 2);
    // With two calls, a bare "answer" knows which one is meant: the only incoming one.
    assert!(cusaxctl(&bus, &["answer"]).status.success());
    carol.wait_event("CALL_ESTABLISHED").unwrap();
    wait_for_call(&bus, "/org/cusax/Cusax1/call/2", "active");
    let out = cusaxctl(&bus, &["hangup"]);
    assert_eq!(out.status.code(), Some(1), "two calls are up: hangup must ask which");
    assert!(stderr(&out).contains("several calls"), "{}", stderr(&out));
    assert!(cusaxctl(&bus, &["hangup", "1"]).status.success());
    assert!(cusaxctl(&bus, &["hangup", "2"]).status.success());
    bob.wait_event("CALL_CLOSED").unwrap();
    carol.wait_event("CALL_CLOSED").unwrap();
}

#[test]
fn an_invite_over_1300_bytes_goes_over_tcp() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let mut bob = Baresip::start(&testbed, "bob", "udp").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, alice) = alice(&testbed, dir.path(), "udp");
    // A long URI parameter makes the INVITE larger than UDP may carry without a known MTU.
    let target = format!("sip:bob@127.0.0.1;note={}", "x".repeat(1000));
    let out = cusaxctl(&bus, &["call", &target]);
    assert!(out.status.success(), "{}", stderr(&out));
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    wait_for_call(&bus, "/org/cusax/Cusax1/call/1", "active");
    assert!(alice.log_text().contains("a request over 1300 bytes goes over TCP"), "{}", alice.log_text());
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    bob.wait_event("CALL_CLOSED").unwrap();
}
