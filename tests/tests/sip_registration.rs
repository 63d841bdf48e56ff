//! cusaxd registers its SIP account with a real Kamailio (digest authentication), over UDP and
//! TCP: the location table shows our Contact with `+sip.instance` and `reg-id`, a wrong
//! password ends in `failed` without a retry loop, and a clean stop unregisters.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cusax_tests::{Cusaxd, FakeDns, PATIENCE, PrivateBus, Testbed, cusaxctl, write_private};
use serde_json::Value;

fn status(bus: &PrivateBus) -> Value {
    let out = cusaxctl(bus, &["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls the daemon until `SipState` is `state`; returns the status and how long it took.
fn wait_for_sip_state(bus: &PrivateBus, state: &str) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let now = status(bus);
        if now["SipState"] == state {
            return (now, start.elapsed());
        }
        assert!(start.elapsed() < PATIENCE, "SipState never became {state}: {now}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kamcmd(testbed: &Testbed, args: &[&str]) -> String {
    let socket = format!("tcp:127.0.0.1:{}", testbed.port("KAM_CTL_PORT"));
    let out = Command::new("kamcmd").arg("-s").arg(&socket).args(args).output().unwrap();
    assert!(out.status.success(), "kamcmd {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many REGISTER requests Kamailio has received.
fn registers_received(testbed: &Testbed) -> u64 {
    let stats = kamcmd(testbed, &["stats.get_statistics", "all"]);
    stats
        .lines()
        .find_map(|line| line.trim().strip_prefix("core:rcv_requests_register = "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no REGISTER count in {stats}"))
}

fn account(dir: &Path, testbed: &Testbed, transport: &str, password: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let port = testbed.port(if transport == "tls" { "SIP_TLS_PORT" } else { "SIP_PORT" });
    let mut text = format!(
        "[sip]\naor = \"sip:alice@127.0.0.1\"\nproxy = \"sip:127.0.0.1:{port}\"\ntransport = \"{transport}\"\npassword = \"{password}\"\n"
    );
    if transport == "tls" {
        text.push_str(&format!("[tls]\nextra_ca = \"{}\"\n", testbed.ca_file().display()));
    }
    write_private(&path, &text).unwrap();
    path
}

fn registers_unregisters(transport: &str) {
    let testbed = Testbed::start_with(&["kamailio"], &[("TESTBED_SIP_TLS", "1")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = account(dir.path(), &testbed, transport, "secret-alice");
    let bus = PrivateBus::start().unwrap();
    let daemon = Cusaxd::start_with_env(&bus, &config, &[("XDG_DATA_HOME", data.as_path())]).unwrap();

    let (now, _) = wait_for_sip_state(&bus, "registered");
    assert_eq!(now["SipStateReason"], "");
    // This registrar gives no GRUU (like many providers): none is taken.
    assert!(daemon.log_text().contains("gruu=false"), "{}", daemon.log_text());
    let instance = std::fs::read_to_string(data.join("cusax/instance-id")).unwrap();
    let location = kamcmd(&testbed, &["ul.dump"]);
    assert!(location.contains("AoR: alice"), "{location}");
    assert!(location.contains(&format!("Instance: <{}>", instance.trim())), "{location}");
    assert!(location.contains("Reg-Id: 1"), "{location}");
    assert!(location.contains("User-Agent: cusaxd/"), "{location}");
    assert!(location.contains(&format!("Socket: {transport}:127.0.0.1:")), "{location}");

    let (exit, _) = daemon.stop_with("TERM").unwrap();
    assert!(exit.success());
    let location = kamcmd(&testbed, &["ul.dump"]);
    assert!(!location.contains("AoR: alice"), "the binding outlived a clean stop: {location}");

    // A second start keeps the same instance (RFC 5626: stable across restarts).
    let daemon = Cusaxd::start_with_env(&bus, &config, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    wait_for_sip_state(&bus, "registered");
    let location = kamcmd(&testbed, &["ul.dump"]);
    assert!(location.contains(&format!("Instance: <{}>", instance.trim())), "{location}");
    drop(daemon);
}

#[test]
fn registers_and_unregisters_over_udp() {
    registers_unregisters("udp");
}

#[test]
fn registers_and_unregisters_over_tcp() {
    registers_unregisters("tcp");
}

#[test]
fn registers_and_unregisters_over_tls() {
    registers_unregisters("tls");
}

#[test]
fn a_registrar_certificate_from_an_unknown_ca_is_refused() {
    let testbed = Testbed::start_with(&["kamailio"], &[("TESTBED_SIP_TLS", "1")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = dir.path().join("config.toml");
    // TLS without [tls] extra_ca: the test CA is not among the system's roots.
    let text = format!(
        "[sip]\naor = \"sip:alice@127.0.0.1\"\nproxy = \"sip:127.0.0.1:{}\"\ntransport = \"tls\"\npassword = \"secret-alice\"\n",
        testbed.port("SIP_TLS_PORT")
    );
    write_private(&path, &text).unwrap();
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start_with_env(&bus, &path, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    let (now, _) = wait_for_sip_state(&bus, "failed");
    let reason = now["SipStateReason"].as_str().unwrap_or_default();
    assert!(reason.contains("TLS with 127.0.0.1") && reason.contains("UnknownIssuer"), "{reason}");
    assert!(!kamcmd(&testbed, &["ul.dump"]).contains("AoR: alice"));
}

#[test]
fn a_wrong_password_fails_within_5_seconds_and_is_not_retried() {
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // TCP: no retransmission can change the REGISTER count.
    let config = account(dir.path(), &testbed, "tcp", "not-alices-password");
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start_with_env(&bus, &config, &[("XDG_DATA_HOME", data.as_path())]).unwrap();

    let (now, took) = wait_for_sip_state(&bus, "failed");
    assert!(took < Duration::from_secs(5), "failed only after {took:?}");
    assert_eq!(now["SipStateReason"], "the registrar refused our credentials: wrong username or password");
    // One REGISTER without and one with credentials; then nothing more.
    assert_eq!(registers_received(&testbed), 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(registers_received(&testbed), 2, "cusaxd retried a refused password");
    assert_eq!(status(&bus)["SipState"], "failed");
}

#[test]
fn an_unreachable_registrar_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Nothing listens on this port: the connection is refused.
    let port = cusax_tests::free_ports(1)[0];
    let path = dir.path().join("config.toml");
    write_private(
        &path,
        &format!("[sip]\naor = \"sip:alice@127.0.0.1\"\nproxy = \"sip:127.0.0.1:{port}\"\ntransport = \"tcp\"\npassword = \"x\"\n"),
    )
    .unwrap();
    let bus = PrivateBus::start().unwrap();
    let daemon = Cusaxd::start_with_env(&bus, &path, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    let (now, _) = wait_for_sip_state(&bus, "failed");
    let reason = now["SipStateReason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with(&format!("cannot connect to 127.0.0.1:{port}")), "{reason}");
    // The first retry comes after 1 to 2 s.
    let start = Instant::now();
    while !daemon.log_text().contains("retry_in")
        || daemon.log_text().matches("SIP account not started").count() < 2
    {
        assert!(start.elapsed() < PATIENCE, "no retry:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_gruu_from_the_registrar_is_taken() {
    let testbed = Testbed::start_with(&["kamailio"], &[("TESTBED_SIP_GRUU", "1")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = account(dir.path(), &testbed, "udp", "secret-alice");
    let bus = PrivateBus::start().unwrap();
    let daemon = Cusaxd::start_with_env(&bus, &config, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    wait_for_sip_state(&bus, "registered");
    assert!(daemon.log_text().contains("gruu=true"), "no GRUU taken:\n{}", daemon.log_text());
}

#[test]
fn a_lost_connection_is_reopened_with_backoff_not_a_spin() {
    let mut testbed = Testbed::start(&["kamailio"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = account(dir.path(), &testbed, "tcp", "secret-alice");
    let bus = PrivateBus::start().unwrap();
    let daemon = Cusaxd::start_with_env(&bus, &config, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    wait_for_sip_state(&bus, "registered");
    testbed.stop().unwrap();
    let (now, _) = wait_for_sip_state(&bus, "failed");
    assert!(
        now["SipStateReason"].as_str().unwrap_or_default().starts_with("the connection to the proxy failed"),
        "{now}"
    );
    // The next attempt comes after a backoff (1 to 2 s), and finds nobody.
    let start = Instant::now();
    while !daemon.log_text().contains("SIP account not started") {
        assert!(start.elapsed() < PATIENCE, "no reconnect attempt:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(daemon.log_text().matches("SIP transport lost").count(), 1, "{}", daemon.log_text());
}

#[test]
fn the_registration_is_refreshed_before_it_expires() {
    // Kamailio grants 12 s, so the refresh is due after about 80 % of that.
    let testbed = Testbed::start_with(&["kamailio"], &[("TESTBED_SIP_MAX_EXPIRES", "12")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // TCP: no retransmission can change the REGISTER count.
    let config = account(dir.path(), &testbed, "tcp", "secret-alice");
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start_with_env(&bus, &config, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    wait_for_sip_state(&bus, "registered");
    assert_eq!(registers_received(&testbed), 2, "REGISTER, then REGISTER with credentials");
    let start = Instant::now();
    while registers_received(&testbed) < 3 {
        assert!(start.elapsed() < Duration::from_secs(15), "no refresh within 15 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The refresh carried the cached credentials: accepted at once, still registered.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(registers_received(&testbed), 3);
    assert_eq!(status(&bus)["SipState"], "registered");
    assert!(kamcmd(&testbed, &["ul.dump"]).contains("AoR: alice"));
}

#[test]
fn the_registrar_of_a_domain_is_found_through_naptr_and_srv() {
    use hickory_proto::rr::rdata::{A, NAPTR, SRV};
    use hickory_proto::rr::{Name, RData, Record};
    let testbed = Testbed::start(&["kamailio"]).unwrap();
    let name = |text: &str| Name::from_ascii(text).unwrap();
    // RFC 3263: cusax.test prefers TCP (NAPTR), whose SRV names the proxy and the test bed's port.
    let records = vec![
        Record::from_rdata(
            name("cusax.test."),
            60,
            RData::NAPTR(NAPTR::new(
                10,
                10,
                b"s".to_vec().into(),
                b"SIP+D2T".to_vec().into(),
                Box::default(),
                name("_sip._tcp.cusax.test."),
            )),
        ),
        Record::from_rdata(
            name("cusax.test."),
            60,
            RData::NAPTR(NAPTR::new(
                20,
                10,
                b"s".to_vec().into(),
                b"SIP+D2U".to_vec().into(),
                Box::default(),
                name("_sip._udp.cusax.test."),
            )),
        ),
        Record::from_rdata(
            name("_sip._tcp.cusax.test."),
            60,
            RData::SRV(SRV::new(0, 0, testbed.port("SIP_PORT"), name("proxy.cusax.test."))),
        ),
        Record::from_rdata(name("proxy.cusax.test."), 60, RData::A(A::new(127, 0, 0, 1))),
    ];
    let dns = FakeDns::start(records).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = dir.path().join("config.toml");
    // No proxy, no registrar, no transport: everything comes from DNS.
    write_private(&path, "[sip]\naor = \"sip:alice@cusax.test\"\npassword = \"secret-alice\"\n").unwrap();
    let bus = PrivateBus::start().unwrap();
    let _daemon =
        Cusaxd::start_with_dns(&bus, &path, &[("XDG_DATA_HOME", data.as_path())], &dns.resolv_conf).unwrap();
    wait_for_sip_state(&bus, "registered");
    let location = kamcmd(&testbed, &["ul.dump"]);
    assert!(location.contains("AoR: alice") && location.contains("Socket: tcp:127.0.0.1:"), "{location}");
}
