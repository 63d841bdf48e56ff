//! cusaxd on a private session bus, driven the way users drive it: `cusaxctl`, `busctl`,
//! `gdbus`, signals.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cusax_tests::{
    Cusaxd, PATIENCE, PrivateBus, Watch, alive, busctl, cusaxctl, daemon_property, wait_for_exit,
    write_private,
};
use serde_json::{Value, json};

/// Both accounts; the SIP proxy and the XMPP server are a port where nothing listens (port 9,
/// discard), so these tests never talk to a registrar or a server.
const BOTH_ACCOUNTS: &str = "[sip]\naor = \"sip:alice@127.0.0.1\"\nproxy = \"sip:127.0.0.1:9\"\n\
                             transport = \"tcp\"\npassword = \"secret-alice\"\n\
                             [xmpp]\njid = \"alice@localhost\"\npassword = \"secret-alice\"\n\
                             server = \"127.0.0.1:9\"\n";

fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    write_private(&path, text).unwrap();
    path
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn status_json(bus: &PrivateBus) -> Value {
    let out = cusaxctl(bus, &["status", "--json"]);
    assert!(out.status.success(), "cusaxctl status --json: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)))
}

#[test]
fn cusaxctl_and_busctl_read_every_daemon_property() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start(&bus, &config(dir.path(), BOTH_ACCOUNTS)).unwrap();

    // With no registrar on the test bed the SIP state moves on its own (registering, failed):
    // it is checked for its form here and for its values in sip_registration.rs.
    // Both account states move on their own (connecting, then offline or failed, and again):
    // checked for their form here, for their values in sip_registration.rs and
    // xmpp_connection.rs.
    let mut status = status_json(&bus);
    let object = status.as_object_mut().unwrap();
    let sip_state = object.remove("SipState").unwrap();
    assert!(["registering", "failed", "unregistered"].contains(&sip_state.as_str().unwrap()), "{sip_state}");
    let xmpp_state = object.remove("XmppState").unwrap();
    assert!(["connecting", "offline"].contains(&xmpp_state.as_str().unwrap()), "{xmpp_state}");
    assert!(object.remove("SipStateReason").unwrap().is_string());
    assert!(object.remove("XmppStateReason").unwrap().is_string());
    let expected = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "SipAddress": "sip:alice@127.0.0.1",
        "Jid": "alice@localhost",
        "Presence": ["offline", ""],
    });
    assert_eq!(status, expected);

    let out = daemon_property(&bus, &["SipState", "SipStateReason"]);
    let text = stdout(&out);
    assert!(
        out.status.success() && text.lines().count() == 2 && text.lines().all(|l| l.starts_with("s \"")),
        "{text}"
    );

    let busctl_expected = [
        ("Version", format!("s \"{}\"", env!("CARGO_PKG_VERSION"))),
        ("SipAddress", "s \"sip:alice@127.0.0.1\"".to_owned()),
        ("Jid", "s \"alice@localhost\"".to_owned()),
        ("Presence", "(ss) \"offline\" \"\"".to_owned()),
    ];
    for (property, value) in busctl_expected {
        let out = daemon_property(&bus, &[property]);
        assert!(out.status.success(), "busctl {property}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), value, "busctl get-property {property}");
    }

    let human = cusaxctl(&bus, &["status"]);
    assert!(human.status.success());
    let text = stdout(&human);
    assert!(text.lines().any(|l| l.starts_with("SIP  ") && l.ends_with("sip:alice@127.0.0.1")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("XMPP  ") && l.ends_with("alice@localhost")), "{text}");
    assert!(text.contains("Presence  offline"), "{text}");
}

#[test]
fn without_accounts_the_daemon_says_unconfigured() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start(&bus, &config(dir.path(), "")).unwrap();
    let status = status_json(&bus);
    assert_eq!(status["SipState"], "unconfigured");
    assert_eq!(status["XmppState"], "unconfigured");
    assert_eq!(status["SipAddress"], "");
    assert_eq!(status["Jid"], "");
    assert_eq!(status["Presence"], json!(["unconfigured", ""]));
}

/// Two sorted watch lines: the new Jid, and the XMPP state leaving `unconfigured` (the actor
/// starts connecting at once, so the first state shown may already be `connecting`).
fn assert_jid_and_xmpp_state(lines: &[String], jid: &str) {
    assert_eq!(lines[0], format!("/org/cusax/Cusax1 org.cusax.Cusax1.Daemon.Jid = \"{jid}\""));
    let state = lines[1].strip_prefix("/org/cusax/Cusax1 org.cusax.Cusax1.Daemon.XmppState = ");
    assert!(matches!(state, Some("\"offline\"" | "\"connecting\"")), "{lines:?}");
}

#[test]
fn watch_prints_property_changes_when_reload_changes_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "[sip]\naor = \"sip:alice@127.0.0.1\"\nproxy = \"sip:127.0.0.1:9\"\ntransport = \"tcp\"\n",
    );
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start(&bus, &path).unwrap();
    let human = Watch::start(&bus, false);
    let json = Watch::start(&bus, true);

    let bob = "[sip]\naor = \"sip:bob@127.0.0.1\"\nproxy = \"sip:127.0.0.1:9\"\ntransport = \"tcp\"\n";
    write_private(&path, bob).unwrap();
    let out =
        busctl(&bus, &["call", "org.cusax.Cusax1", "/org/cusax/Cusax1", "org.cusax.Cusax1.Daemon", "Reload"]);
    assert!(out.status.success(), "Reload: {}", stderr(&out));

    assert_eq!(
        human.next_about(&["SipAddress"]).as_deref(),
        Some("/org/cusax/Cusax1 org.cusax.Cusax1.Daemon.SipAddress = \"sip:bob@127.0.0.1\"")
    );
    let line = json.next_about(&["SipAddress"]).expect("a JSON line");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        event,
        json!({"event": "property", "path": "/org/cusax/Cusax1", "interface": "org.cusax.Cusax1.Daemon",
               "property": "SipAddress", "value": "sip:bob@127.0.0.1"})
    );

    // Adding the XMPP account changes two properties: one line each.
    write_private(&path, &format!("{bob}[xmpp]\njid = \"bob@localhost\"\nserver = \"127.0.0.1:9\"\n"))
        .unwrap();
    let out =
        busctl(&bus, &["call", "org.cusax.Cusax1", "/org/cusax/Cusax1", "org.cusax.Cusax1.Daemon", "Reload"]);
    assert!(out.status.success());
    let mut lines = vec![
        human.next_about(&["Jid", "XmppState"]).unwrap(),
        human.next_about(&["Jid", "XmppState"]).unwrap(),
    ];
    lines.sort();
    assert_jid_and_xmpp_state(&lines, "bob@localhost");
}

#[test]
fn reload_of_a_bad_config_is_a_named_error_and_keeps_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), BOTH_ACCOUNTS);
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start(&bus, &path).unwrap();

    write_private(&path, "[sip]\naor = \"sip:alice@127.0.0.1\"\nfoo = true\n").unwrap();
    let out = bus
        .command("gdbus")
        .args(["call", "--session", "-d", "org.cusax.Cusax1", "-o", "/org/cusax/Cusax1"])
        .args(["-m", "org.cusax.Cusax1.Daemon.Reload"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(error.contains("org.cusax.Cusax1.Error.InvalidConfig"), "{error}");
    assert!(error.contains(&format!("{}:3:1: sip.foo: [unknown-key]", path.display())), "{error}");

    let status = status_json(&bus);
    assert_eq!(status["Jid"], "alice@localhost");
    assert_ne!(status["XmppState"], "unconfigured");
}

#[test]
fn sighup_reloads_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    let bus = PrivateBus::start().unwrap();
    let daemon = Cusaxd::start(&bus, &path).unwrap();
    let watch = Watch::start(&bus, false);
    write_private(&path, "[xmpp]\njid = \"carol@localhost\"\nserver = \"127.0.0.1:9\"\n").unwrap();
    std::process::Command::new("kill").args(["-HUP", &daemon.pid().to_string()]).status().unwrap();
    let mut lines = vec![
        watch.next_about(&["Jid", "XmppState"]).unwrap(),
        watch.next_about(&["Jid", "XmppState"]).unwrap(),
    ];
    lines.sort();
    assert_jid_and_xmpp_state(&lines, "carol@localhost");
}

#[test]
fn a_second_instance_on_the_same_bus_exits_saying_already_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), BOTH_ACCOUNTS);
    let bus = PrivateBus::start().unwrap();
    let first = Cusaxd::start(&bus, &path).unwrap();
    let mut second = bus
        .command(cusax_tests::binary("cusaxd"))
        .arg("--config")
        .arg(&path)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, _) = wait_for_exit(&mut second, PATIENCE).expect("the second cusaxd must exit");
    // 3: not worth a restart (the unit's RestartPreventExitStatus=).
    assert_eq!(status.code(), Some(3));
    let mut error = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut error).unwrap();
    assert!(
        error.contains(&format!(
            "cusaxd is already running on this session bus (org.cusax.Cusax1 is owned by pid {})",
            first.pid()
        )),
        "{error}"
    );
    // The first one is untouched and still answers.
    assert_eq!(status_json(&bus)["SipAddress"], "sip:alice@127.0.0.1");
    assert!(alive(first.pid()));
}

#[test]
fn sigterm_and_sigint_stop_the_daemon_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), BOTH_ACCOUNTS);
    let bus = PrivateBus::start().unwrap();
    for signal in ["TERM", "INT"] {
        let daemon = Cusaxd::start(&bus, &path).unwrap();
        let (status, took) = daemon.stop_with(signal).unwrap();
        assert!(status.success(), "SIG{signal}: exit {status}");
        // The bound for a clean stop; it takes milliseconds.
        assert!(took < Duration::from_secs(1), "SIG{signal}: cusaxd took {took:?} to stop");
        let out = cusaxctl(&bus, &["status"]);
        assert_eq!(out.status.code(), Some(1), "the name must be gone after SIG{signal}");
    }
}

#[test]
fn cusaxctl_says_clearly_when_the_daemon_is_not_running() {
    let bus = PrivateBus::start().unwrap();
    for args in [&["status"][..], &["status", "--json"], &["watch"]] {
        let out = cusaxctl(&bus, args);
        assert_eq!(out.status.code(), Some(1), "cusaxctl {args:?}");
        assert_eq!(
            stderr(&out).trim(),
            "cusaxctl: cusaxd is not running on the session bus (nobody owns org.cusax.Cusax1)",
            "cusaxctl {args:?}"
        );
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn cusaxctl_gives_up_on_a_daemon_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let daemon = Cusaxd::start(&bus, &config(dir.path(), "")).unwrap();
    daemon.signal("STOP");
    let mut child = bus
        .command(cusax_tests::binary("cusaxctl"))
        .args(["--timeout", "1", "status"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let finished = wait_for_exit(&mut child, PATIENCE);
    daemon.signal("CONT");
    let (status, _) = finished.expect("cusaxctl hung on a stopped daemon");
    assert_eq!(status.code(), Some(1));
    let mut error = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut error).unwrap();
    assert!(error.contains("cusaxd did not answer"), "{error}");
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification from cusaxd");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let bus = PrivateBus::start().unwrap();
    let daemon =
        Cusaxd::start_with_env(&bus, &config(dir.path(), ""), &[("NOTIFY_SOCKET", socket_path.as_path())])
            .unwrap();
    assert_eq!(next().trim(), "READY=1");
    // READY=1 comes once the name is owned: callers can reach the daemon now.
    assert!(cusaxctl(&bus, &["status"]).status.success());

    daemon.signal("HUP");
    let reloading = next();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    assert_eq!(next().trim(), "READY=1");

    daemon.signal("TERM");
    assert_eq!(next().trim(), "STOPPING=1");
}

#[test]
fn cusaxctl_without_any_bus_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(cusax_tests::binary("cusaxctl"))
        .args(["--timeout", "2", "status"])
        .env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={}/no-bus", dir.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect to the D-Bus session bus"), "{}", stderr(&out));
}

#[test]
fn the_daemon_stops_when_its_session_bus_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let daemon = Cusaxd::start(&bus, &config(dir.path(), "")).unwrap();
    let pid = daemon.pid();
    drop(bus);
    let deadline = std::time::Instant::now() + PATIENCE;
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = daemon.log_text();
    assert!(!alive(pid), "cusaxd still runs without its bus:\n{log}");
    assert!(log.contains("lost org.cusax.Cusax1 on the session bus"), "{log}");
}

#[test]
fn completions_are_generated_for_common_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(cusax_tests::binary("cusaxctl"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        assert!(script.contains("watch") && script.contains("status"), "{shell}: {script}");
    }
    // A reader that closes the pipe early is not an error (crates.md 7.7).
    let mut child = std::process::Command::new(cusax_tests::binary("cusaxctl"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let (status, _) = wait_for_exit(&mut child, PATIENCE).unwrap();
    assert!(status.success(), "completions into a closed pipe: {status}");
}
