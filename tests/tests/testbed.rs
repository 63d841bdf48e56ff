//! The project's own loopback test bed: its servers start, answer, and stop cleanly by PID,
//! and its stock peers (baresip, sipp, slixmpp, PulseAudio) work, so that the later
//! end-to-end tests stand on known ground.

use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use cusax_tests::{Testbed, alive, free_port_block, repo_root};

#[test]
fn prosody_and_kamailio_start_answer_and_stop_cleanly() {
    let mut testbed = Testbed::start(&["prosody", "kamailio"]).unwrap();
    let pids = testbed.pids();
    assert_eq!(pids.keys().collect::<Vec<_>>(), ["kamailio", "prosody"]);
    assert!(pids.values().all(|pid| alive(*pid)));

    // Prosody answers a stream header with its features (STARTTLS required).
    let xmpp = testbed.port("XMPP_C2S_PORT");
    let mut stream = TcpStream::connect(("127.0.0.1", xmpp)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
          xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("</stream:features>") {
        let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
        assert!(n > 0, "prosody closed the stream: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("urn:ietf:params:xml:ns:xmpp-tls"));

    // Kamailio answers OPTIONS over UDP.
    let sip = testbed.port("SIP_PORT");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = socket.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKtestbed1\r\n\
         Max-Forwards: 70\r\nTo: <sip:127.0.0.1>\r\nFrom: <sip:probe@127.0.0.1>;tag=t1\r\n\
         Call-ID: testbed-probe-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(options.as_bytes(), ("127.0.0.1", sip)).unwrap();
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"));

    let report = testbed.stop().unwrap();
    assert!(report.contains("stopped prosody") && report.contains("stopped kamailio"), "{report}");
    assert!(!report.contains("killed"), "a server needed SIGKILL: {report}");
    assert!(pids.values().all(|pid| !alive(*pid)), "a server outlived `down`");
    assert!(TcpStream::connect(("127.0.0.1", xmpp)).is_err(), "prosody's port is still open");
}

/// Runs one of testbed.sh's self-checks against a running test bed, on ports of its own.
fn self_check(testbed: &Testbed, check: &str) {
    let ports = [
        ("CALL_SIP_PORT", free_port_block(4)),
        ("CALL_CTRL_PORT", free_port_block(2)),
        ("CALL_RTP_PORT", free_port_block(40)),
        ("SIPP_PORT", free_port_block(3)),
        ("SIPP_RTP_PORT", free_port_block(12)),
    ];
    let out = Command::new(repo_root().join("tests/testbed/testbed.sh"))
        .arg(check)
        .arg(testbed.dir())
        .envs(testbed.ports.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .envs(ports.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "testbed.sh {check} failed:\n{log}");
}

#[test]
fn stock_peers_work_on_the_test_bed() {
    let testbed = Testbed::start(&["prosody", "kamailio", "pulse"]).unwrap();
    // baresip calls baresip through Kamailio; audio is checked both ways.
    self_check(&testbed, "call-demo");
    // sipp registers, answers and calls, with RTP checked both ways.
    self_check(&testbed, "sipp-demo");
    // slixmpp sends a message with a custom element through Prosody.
    self_check(&testbed, "xmpp-demo");
    let pulse = testbed.pids()["pulseaudio"];
    assert!(alive(pulse));
}
