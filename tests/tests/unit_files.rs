//! The systemd user unit and the D-Bus activation file, as `install.sh` installs them:
//! `systemd-analyze verify` accepts the unit without a word on stderr, and the activation
//! file really starts cusaxd when a client calls it.

use std::path::{Path, PathBuf};
use std::process::Command;

use cusax_tests::{PidGuard, PrivateBus, alive, busctl, cusaxctl, repo_root, write_private};

/// Installs into a temporary prefix with the binaries of this build.
fn install(prefix: &Path) {
    let from = cusax_tests::binary("cusaxd").parent().map(Path::to_path_buf).unwrap_or_default();
    let out = Command::new(repo_root().join("install.sh"))
        .arg("--prefix")
        .arg(prefix)
        .arg("--from")
        .arg(&from)
        .output()
        .unwrap();
    assert!(out.status.success(), "install.sh: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn systemd_analyze_accepts_the_installed_user_unit_without_any_message() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("usr");
    install(&prefix);
    let unit: PathBuf = prefix.join("lib/systemd/user/cusaxd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains(&format!("ExecStart={}/bin/cusaxd\n", prefix.display())), "{text}");

    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--user", "--man=no"])
        .arg(&unit)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {stderr}");
    // Unknown keys and bad values only warn, with exit 0 (testbed NOTES.md section 7).
    assert!(stderr.trim().is_empty(), "systemd-analyze verify complained: {stderr}");
}

#[test]
fn the_installed_activation_file_starts_cusaxd_on_first_call() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("usr");
    install(&prefix);
    let service =
        std::fs::read_to_string(prefix.join("share/dbus-1/services/org.cusax.Cusax1.service")).unwrap();
    assert!(service.contains("Name=org.cusax.Cusax1\n"), "{service}");
    assert!(service.contains("SystemdService=cusaxd.service\n"), "{service}");

    let bus = PrivateBus::start().unwrap();
    std::fs::copy(
        prefix.join("share/dbus-1/services/org.cusax.Cusax1.service"),
        bus.services_dir().join("org.cusax.Cusax1.service"),
    )
    .unwrap();
    std::fs::create_dir_all(bus.config_home().join("cusax")).unwrap();
    write_private(&bus.config_home().join("cusax/config.toml"), "[sip]\naor = \"sip:dave@127.0.0.1\"\n")
        .unwrap();

    // No cusaxd runs; the call starts one (it reads the default config under XDG_CONFIG_HOME).
    let out = cusaxctl(&bus, &["--timeout", "10", "status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["SipAddress"], "sip:dave@127.0.0.1");

    let out = busctl(
        &bus,
        &[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetConnectionUnixProcessID",
            "s",
            "org.cusax.Cusax1",
        ],
    );
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("u ").parse().unwrap();
    let guard = PidGuard(pid);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, prefix.join("bin/cusaxd"), "the activated process is the installed binary");
    drop(guard);
    assert!(!alive(pid), "activated cusaxd did not stop on SIGTERM");
}
