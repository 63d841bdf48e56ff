//! cusaxd's XMPP account against a real Prosody: it logs in over STARTTLS (or direct TLS)
//! with a private CA and says `online`; a wrong password or a certificate from an unknown CA
//! is `failed` with the reason, at once and for good (against ejabberd too); a server that is
//! not there is `offline` and retried.

use std::path::Path;
use std::time::{Duration, Instant};

use cusax_tests::{
    Cusaxd, PrivateBus, Testbed, Watch, XmppServer, busctl, daemon_property, free_ports,
    on_both_xmpp_servers, status_json, wait_for, write_private,
};

/// alice's cusaxd with only an XMPP account (`password`, server port `port`), trusting the
/// test bed's CA when `trust` is set.
fn alice(testbed: &Testbed, dir: &Path, password: &str, port: u16, trust: bool) -> (PrivateBus, Cusaxd) {
    let path = dir.join("config.toml");
    write_private(&path, &config(testbed, password, port, trust)).unwrap();
    let bus = PrivateBus::start().unwrap();
    let data = dir.join("data");
    let daemon = Cusaxd::start_with_env(&bus, &path, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    (bus, daemon)
}

fn config(testbed: &Testbed, password: &str, port: u16, trust: bool) -> String {
    let ca = if trust {
        format!("[tls]\nextra_ca = \"{}\"\n", testbed.ca_file().display())
    } else {
        String::new()
    };
    format!(
        "[xmpp]\njid = \"alice@localhost\"\npassword = \"{password}\"\nserver = \"127.0.0.1:{port}\"\n{ca}"
    )
}

/// `Reload()` over D-Bus, as a settings dialog would after changing the file.
fn reload(bus: &PrivateBus) {
    let out =
        busctl(bus, &["call", "org.cusax.Cusax1", "/org/cusax/Cusax1", "org.cusax.Cusax1.Daemon", "Reload"]);
    assert!(out.status.success(), "{out:?}");
}

/// The test bed's Prosody log (debug level: logins, mechanisms, disconnections).
fn prosody_log(testbed: &Testbed) -> std::path::PathBuf {
    testbed.dir().join("prosody/prosody.log")
}

/// The status once `XmppState` is `state`, and how long that took.
fn wait_for_state(bus: &PrivateBus, state: &str) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    let status = wait_for(&format!("XmppState {state}"), || {
        Some(status_json(bus)).filter(|s| s["XmppState"] == state)
    });
    (status, start.elapsed())
}

#[test]
fn logs_in_to_prosody_over_starttls_and_says_online() {
    let testbed = Testbed::start(&["prosody"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, daemon) = alice(&testbed, dir.path(), "secret-alice", testbed.port("XMPP_C2S_PORT"), true);
    let (status, _) = wait_for_state(&bus, "online");
    assert_eq!(status["XmppStateReason"], "");
    // busctl reads the same: an empty reason, not an error.
    let out = daemon_property(&bus, &["XmppStateReason"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "s \"\"");
    // Prosody agrees: alice authenticated, with SCRAM, over TLS.
    let log = wait_for("Prosody to log alice's session", || {
        let log = std::fs::read_to_string(prosody_log(&testbed)).ok()?;
        log.contains("Authenticated as alice@localhost").then_some(log)
    });
    assert!(log.contains("SCRAM-SHA-"), "alice did not use SCRAM");
    // A clean stop says goodbye and is quick, and the server sees the session end.
    let (exit, took) = daemon.stop_with("TERM").unwrap();
    assert!(exit.success() && took < Duration::from_secs(1), "{exit} after {took:?}");
    wait_for("Prosody to see alice leave", || {
        let log = std::fs::read_to_string(prosody_log(&testbed)).ok()?;
        log.contains("Client disconnected").then_some(())
    });
}

fn a_wrong_password_fails_within_5_seconds_and_is_not_retried(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bus, daemon) = alice(&testbed, dir.path(), "not-the-password", testbed.xmpp_port(server), true);
    let watch = Watch::start(&bus, true);
    let (status, took) = wait_for_state(&bus, "failed");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let reason = status["XmppStateReason"].as_str().unwrap_or_default();
    assert!(reason.contains("refused the password") && reason.contains("not-authorized"), "{reason}");
    // No retry: no other state in the next 3 s, and one login attempt in the log.
    let _ = watch.next_about(&["XmppState"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status_json(&bus)["XmppState"], "failed");
    assert_eq!(daemon.log_text().matches("cannot log in").count(), 1, "{}", daemon.log_text());
}

fn an_unknown_ca_fails_until_extra_ca_trusts_it(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = testbed.xmpp_port(server);
    let (bus, _daemon) = alice(&testbed, dir.path(), "secret-alice", port, false);
    let (status, _) = wait_for_state(&bus, "failed");
    let reason = status["XmppStateReason"].as_str().unwrap_or_default();
    assert!(reason.contains("certificate is not trusted") && reason.contains("UnknownIssuer"), "{reason}");
    write_private(&dir.path().join("config.toml"), &config(&testbed, "secret-alice", port, true)).unwrap();
    reload(&bus);
    wait_for_state(&bus, "online");
}

#[test]
fn a_server_that_is_not_there_is_offline_and_retried() {
    let testbed = Testbed::start(&["prosody"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nobody = free_ports(1)[0];
    let (bus, _daemon) = alice(&testbed, dir.path(), "secret-alice", nobody, true);
    let watch = Watch::start(&bus, true);
    let (status, _) = wait_for_state(&bus, "offline");
    let reason = status["XmppStateReason"].as_str().unwrap_or_default();
    assert!(reason.contains("cannot reach the server"), "{reason}");
    // The backoff's first wait is about 2 s: then it tries again.
    let again = watch.next_matching(|l| l.contains("\"property\":\"XmppState\"") && l.contains("connecting"));
    assert!(again.is_some(), "no second attempt");
}

/// A failed account is retried when the user reloads, even with the same config: here the
/// password file was mended in between.
#[test]
fn a_reload_retries_a_failed_login_after_the_password_file_is_mended() {
    let testbed = Testbed::start(&["prosody"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("xmpp.password");
    write_private(&secret, "wrong\n").unwrap();
    let path = dir.path().join("config.toml");
    let text = format!(
        "[xmpp]\njid = \"alice@localhost\"\npassword_file = \"{}\"\nserver = \"127.0.0.1:{}\"\n[tls]\nextra_ca = \"{}\"\n",
        secret.display(),
        testbed.port("XMPP_C2S_PORT"),
        testbed.ca_file().display()
    );
    write_private(&path, &text).unwrap();
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start(&bus, &path).unwrap();
    wait_for_state(&bus, "failed");
    write_private(&secret, "secret-alice\n").unwrap();
    reload(&bus);
    wait_for_state(&bus, "online");
}

/// Reconfiguring while the old account is still trying leaves nothing of it behind: the new
/// account comes online and stays so, with no state from the old one's attempts.
#[test]
fn a_reload_while_offline_leaves_no_old_attempts_behind() {
    let testbed = Testbed::start(&["prosody"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nobody = free_ports(1)[0];
    let (bus, _daemon) = alice(&testbed, dir.path(), "secret-alice", nobody, true);
    wait_for_state(&bus, "offline");
    write_private(
        &dir.path().join("config.toml"),
        &config(&testbed, "secret-alice", testbed.port("XMPP_C2S_PORT"), true),
    )
    .unwrap();
    reload(&bus);
    wait_for_state(&bus, "online");
    let watch = Watch::start(&bus, true);
    // The old attempts retried every 2-4 s: long enough to see one if it were still there.
    let stray = watch.next_matching(|l| l.contains("\"property\":\"XmppState\""));
    assert!(stray.is_none(), "the old account still reports: {stray:?}");
}

/// `direct_tls = true`: TLS from the first byte (XEP-0368) on Prosody's direct TLS port,
/// which answers nothing else.
#[test]
fn direct_tls_on_the_configured_port() {
    let testbed = Testbed::start(&["prosody"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = format!(
        "[xmpp]\njid = \"alice@localhost\"\npassword = \"secret-alice\"\nserver = \"127.0.0.1:{}\"\ndirect_tls = true\n[tls]\nextra_ca = \"{}\"\n",
        testbed.port("XMPP_C2S_TLS_PORT"),
        testbed.ca_file().display()
    );
    write_private(&path, &text).unwrap();
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start(&bus, &path).unwrap();
    wait_for_state(&bus, "online");
}

on_both_xmpp_servers!(
    a_wrong_password_fails_within_5_seconds_and_is_not_retried,
    an_unknown_ca_fails_until_extra_ca_trusts_it
);
