//! `cusaxd --check-config` on bad input: each problem gets its name, the file, the line and
//! the key, and a non-zero exit; good input passes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use cusax_tests::{binary, write_private};

/// cusaxd's exit status for an invalid config (sysexits.h `EX_CONFIG`); the unit does not
/// restart on it.
const EX_CONFIG: i32 = 78;

fn check(config: &Path) -> Output {
    std::process::Command::new(binary("cusaxd"))
        .arg("--check-config")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run cusaxd")
}

/// Writes `text` as a private config, checks it, and returns (exit code, stderr).
fn check_text(dir: &Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("config.toml");
    write_private(&path, text).unwrap();
    let out = check(&path);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_bad_input_is_refused_with_its_name_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let cases = [
        (
            "[sip]\naor = \"sip:alice@example.com\"\nregistar = \"sip:example.com\"\n",
            "unknown-key",
            3,
            "sip.registar",
        ),
        ("[xmpp]\njid = \"alice@example.org\"\n\n[tls]\nextra_ca = 7\n", "wrong-type", 5, "tls.extra_ca"),
        ("[sip]\naor = \"alice@example.com\"\n", "bad-sip-uri", 2, "sip.aor"),
        (
            "[sip]\naor = \"sip:alice@example.com\"\nproxy = \"sip:exa mple.com\"\n",
            "bad-sip-uri",
            3,
            "sip.proxy",
        ),
        ("[xmpp]\njid = \"example.org\"\n", "bad-jid", 2, "xmpp.jid"),
        ("[xmpp]\njid = \"alice@@example.org\"\n", "bad-jid", 2, "xmpp.jid"),
        ("[presence]\non_the_phone = \"maybe\"\n", "bad-value", 2, "presence.on_the_phone"),
        (
            "[sip]\naor = \"sip:a@b\"\ntransport = \"udp\"\nlisten = \"nowhere\"\n",
            "bad-value",
            4,
            "sip.listen",
        ),
        ("[media]\nrtp_ports = \"80-90\"\n", "bad-value", 2, "media.rtp_ports"),
        ("[media]\nrtp_ports = \"20001-20001\"\n", "bad-value", 2, "media.rtp_ports"),
        ("[media]\nrtp_ports = \"lots\"\n", "bad-value", 2, "media.rtp_ports"),
        ("[sip\naor = 1\n", "syntax", 1, "(document)"),
    ];
    for (text, name, line, key) in cases {
        let (code, stderr) = check_text(dir.path(), text);
        assert_eq!(code, Some(EX_CONFIG), "exit code for {text:?}: {stderr}");
        let expected = format!("{}:{line}:", file.display());
        assert!(stderr.contains(&expected), "{text:?} should name {expected}: {stderr}");
        assert!(
            stderr.contains(&format!(" {key}: [{name}]")),
            "{text:?} should give {key}: [{name}]: {stderr}"
        );
    }
}

#[test]
fn a_literal_password_in_a_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    fs::write(&path, "[sip]\naor = \"sip:alice@127.0.0.1\"\npassword = \"secret-alice\"\n").unwrap();
    for mode in [0o644, 0o640, 0o604] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let out = check(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "mode {mode:o}: {stderr}");
        assert!(stderr.contains(":3:") && stderr.contains("sip.password: [exposed-password]"), "{stderr}");
        assert!(!stderr.contains("secret-alice"), "the error must not show the password: {stderr}");
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let out = check(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_password_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("xmpp.pw");
    fs::write(&secret, "secret-alice").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let text = "[xmpp]\njid = \"alice@localhost\"\npassword_file = \"xmpp.pw\"\n";
    let (code, stderr) = check_text(dir.path(), text);
    assert_eq!(code, Some(EX_CONFIG));
    assert!(stderr.contains("xmpp.password_file: [password-file]"), "{stderr}");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(check_text(dir.path(), text).0, Some(0));
}

#[test]
fn a_good_config_passes_and_says_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    write_private(
        &path,
        "[sip]\naor = \"sip:alice@127.0.0.1\"\nregistrar = \"sip:127.0.0.1:5060\"\npassword = \"pw\"\n\
         [xmpp]\njid = \"alice@localhost\"\npassword = { secret = \"xmpp\" }\nserver = \"127.0.0.1:5222\"\n\
         [media]\ncodecs = [\"pcmu\"]\ninput = \"null\"\noutput = \"null\"\n\
         [correlation]\nshare_with = \"nobody\"\n[presence]\non_the_phone = \"off\"\n",
    )
    .unwrap();
    let out = check(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SIP sip:alice@127.0.0.1") && stdout.contains("XMPP alice@localhost"),
        "{stdout}"
    );
}

#[test]
fn a_missing_config_given_on_the_command_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(&dir.path().join("absent.toml"));
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config"));
}

#[test]
fn no_config_at_the_default_place_means_no_accounts() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary("cusaxd"))
        .arg("--check-config")
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("config/cusax/config.toml: ok (no SIP account, no XMPP account)"), "{stdout}");
}
