//! Support for cusax's end-to-end tests: real processes on loopback, each one stopped by its
//! PID when its guard is dropped, also when a test fails.
//!
//! - [`PrivateBus`]: a `dbus-daemon` of the test's own (a user has one cusaxd per bus).
//! - [`Testbed`]: Prosody, Kamailio and friends through `testbed/testbed.sh`, on ports of
//!   the test's own, so tests run in parallel.
//! - [`Cusaxd`]: the daemon under test on a private bus; [`cusaxctl`] runs the CLI against it.
//! - [`audio`]: checks recordings for a test tone (SNR, presence, gaps).
//! - [`XmppPeer`]: a stock XMPP client (slixmpp) a test drives, to chat with cusaxd.
//!
//! The binaries come from the workspace's target directory: build them first with
//! `cargo build --workspace --bins` (the README's test command does).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

pub mod audio;
mod xmpp_peer;

use tempfile::TempDir;
pub use xmpp_peer::{XmppPeer, python};

/// How long a process may take to become ready, or to stop, before the test calls it hung.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The repository's top folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A workspace binary (`cusaxd`, `cusaxctl`) next to the running test's `deps/` folder. The
/// test crate cannot depend on binaries, so a binary older than the sources it is built from
/// fails the test instead of passing on old code.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let path = profile_dir.join(name);
    let built = fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: run `cargo build --workspace --bins`", path.display()));
    // The sources each binary is built from (a crate's own tests do not rebuild it).
    let crates: &[&str] = match name {
        "cusaxctl" => &["cli/src"],
        _ => &["daemon/src", "protocol/src"],
    };
    let sources = crates.iter().map(|c| repo_root().join(c)).filter_map(|d| newest(&d)).max();
    if let Some(source) = sources {
        assert!(
            source <= built,
            "{} is older than its sources: run `cargo build --workspace --bins` (tests/run does)",
            path.display()
        );
    }
    path
}

/// The newest modification time of the files below `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let entries = fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            if meta.is_dir() { newest(&entry.path()) } else { meta.modified().ok() }
        })
        .max()
}

/// `count` ports no other test of this process has taken, each free on 127.0.0.1 and ::1 for
/// TCP and UDP when handed out.
pub fn free_ports(count: usize) -> Vec<u16> {
    (0..count).map(|_| free_port_block(1)).collect()
}

/// The first of `len` consecutive free ports (for tools that take a port range).
pub fn free_port_block(len: u16) -> u16 {
    // Test ports come from 10000-16383: below cusaxd's default RTP range (16384-32767, which
    // the daemons under test bind from) and the kernel's ephemeral range (32768-60999, which
    // every outgoing connection binds from), so nothing else takes one between the check
    // and the server's bind. Each test process starts 100 ports apart from those of
    // neighbouring pids, so two test runs at once rarely meet; within a process the counter
    // never hands a port out twice.
    const FIRST: u32 = 10000;
    const SPAN: u32 = 16384 - FIRST;
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 60) * 100;
    loop {
        let taken = TAKEN.fetch_add(u32::from(len), Ordering::SeqCst);
        assert!(taken + u32::from(len) <= SPAN, "ran out of test ports");
        let offset = (start + taken) % SPAN;
        if offset + u32::from(len) > SPAN {
            continue;
        }
        let first = (FIRST + offset) as u16;
        if (first..first + len).all(port_is_free) {
            return first;
        }
    }
}

fn port_is_free(port: u16) -> bool {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    [v4, v6].iter().all(|addr| TcpListener::bind(addr).is_ok() && UdpSocket::bind(addr).is_ok())
}

/// Whether a process still runs: not gone and not a zombie (testbed NOTES.md section 1).
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// Waits for a child to exit, at most `limit`; returns its status and how long it took.
pub fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<(ExitStatus, Duration)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some((status, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Stops a child by PID: TERM, then KILL after [`PATIENCE`]. Always reaps it.
fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id(), "TERM");
    if wait_for_exit(child, PATIENCE).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Stops, on drop, a process this test did not spawn itself (one D-Bus activation started).
pub struct PidGuard(pub u32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if alive(self.0) {
            signal(self.0, "TERM");
            let start = Instant::now();
            while alive(self.0) && start.elapsed() < PATIENCE {
                std::thread::sleep(Duration::from_millis(10));
            }
            if alive(self.0) {
                signal(self.0, "KILL");
            }
        }
    }
}

/// Writes a file readable by its owner only (configs with passwords must be).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A private D-Bus session bus. Services in `services_dir` can be started by activation; the
/// activated processes get `XDG_CONFIG_HOME` and `HOME` inside the bus's own folder.
pub struct PrivateBus {
    child: Child,
    address: String,
    dir: TempDir,
}

impl PrivateBus {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let services = dir.path().join("services");
        let home = dir.path().join("home");
        fs::create_dir_all(&services)?;
        fs::create_dir_all(home.join(".config"))?;
        let config = dir.path().join("bus.conf");
        fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}/bus</listen>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path().display(),
                services.display()
            ),
        )?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start dbus-daemon (install the dbus package)")?;
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
        }
        match rx.recv_timeout(PATIENCE) {
            Ok(line) if !line.trim().is_empty() => Ok(Self { child, address: line.trim().to_owned(), dir }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("dbus-daemon printed no address within {PATIENCE:?}")
            }
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Where D-Bus activation files for this bus go.
    pub fn services_dir(&self) -> PathBuf {
        self.dir.path().join("services")
    }

    /// `$XDG_CONFIG_HOME` of services this bus activates.
    pub fn config_home(&self) -> PathBuf {
        self.dir.path().join("home/.config")
    }

    /// A command with this bus as its session bus.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("DBUS_SESSION_BUS_ADDRESS", &self.address).stdin(Stdio::null());
        command
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Runs `cusaxctl ARGS` against a bus, bounded by its own `--timeout`.
pub fn cusaxctl(bus: &PrivateBus, args: &[&str]) -> Output {
    bus.command(binary("cusaxctl")).args(args).output().unwrap_or_else(|e| panic!("run cusaxctl: {e}"))
}

/// Runs `busctl --user ARGS` against a bus.
pub fn busctl(bus: &PrivateBus, args: &[&str]) -> Output {
    bus.command("busctl").arg("--user").args(args).output().unwrap_or_else(|e| panic!("run busctl: {e}"))
}

/// `cusaxd` on a private bus, with its stderr in a log file.
pub struct Cusaxd {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Cusaxd {
    /// Starts `cusaxd --config CONFIG` and waits until it owns its bus name.
    pub fn start(bus: &PrivateBus, config: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(bus, config, &[])
    }

    /// [`Cusaxd::start`] with extra environment variables.
    pub fn start_with_env(bus: &PrivateBus, config: &Path, env: &[(&str, &Path)]) -> anyhow::Result<Self> {
        Self::launch(bus, config, env, None)
    }

    /// [`Cusaxd::start_with_env`] in a mount namespace of its own whose /etc/resolv.conf is
    /// `resolv_conf` (a [`FakeDns`]'s); `unshare` and `sh` exec into cusaxd, so the pid is its.
    pub fn start_with_dns(
        bus: &PrivateBus,
        config: &Path,
        env: &[(&str, &Path)],
        resolv_conf: &Path,
    ) -> anyhow::Result<Self> {
        Self::launch(bus, config, env, Some(resolv_conf))
    }

    fn launch(
        bus: &PrivateBus,
        config: &Path,
        env: &[(&str, &Path)],
        resolv_conf: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("cusaxd.log");
        let mut command = match resolv_conf {
            None => bus.command(binary("cusaxd")),
            Some(resolv_conf) => {
                let mut command = bus.command("unshare");
                command
                    .args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
                    .arg(resolv_conf)
                    .arg(binary("cusaxd"));
                command
            }
        };
        // Each daemon keeps its history apart unless the test names a data directory.
        let child = command
            .arg("--config")
            .arg(config)
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("RUST_LOG", "debug,pulseaudio=info")
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("start cusaxd")?;
        let mut daemon = Self { child, log, _dir: dir };
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if daemon.log_text().contains("ready on the session bus") {
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                bail!("cusaxd exited ({status}) before it was ready:\n{}", daemon.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("cusaxd not ready after {PATIENCE:?}:\n{}", daemon.log_text())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `SIGNAL` (TERM, INT, HUP, STOP, CONT) to the daemon.
    pub fn signal(&self, signal_name: &str) {
        signal(self.child.id(), signal_name);
    }

    /// Sends `SIGNAL` (TERM, INT) and waits for the exit: its status and how long it took.
    pub fn stop_with(mut self, signal_name: &str) -> anyhow::Result<(ExitStatus, Duration)> {
        signal(self.child.id(), signal_name);
        wait_for_exit(&mut self.child, PATIENCE)
            .ok_or_else(|| anyhow!("cusaxd still running {PATIENCE:?} after SIG{signal_name}"))
    }
}

impl Drop for Cusaxd {
    fn drop(&mut self) {
        // A test may have left it stopped (SIGSTOP); TERM would then wait forever.
        signal(self.child.id(), "CONT");
        stop_child(&mut self.child);
    }
}

/// `cusaxctl watch` with its stdout lines on a channel.
pub struct Watch {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watch {
    pub fn start(bus: &PrivateBus, json: bool) -> Self {
        let mut command = bus.command(binary("cusaxctl"));
        command.arg("watch");
        if json {
            command.arg("--json");
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // The watch is subscribed once it says so on stderr.
        let mut ready = String::new();
        let err = child.stderr.take().unwrap();
        BufReader::new(err).read_line(&mut ready).unwrap();
        assert!(ready.contains("watching org.cusax.Cusax1"), "watch did not start: {ready}");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line about one of `properties`, skipping the others (the SIP account's
    /// state moves by itself), or `None` after `PATIENCE`.
    pub fn next_about(&self, properties: &[&str]) -> Option<String> {
        self.next_matching(|line| {
            properties
                .iter()
                .any(|p| line.contains(&format!(".{p} =")) || line.contains(&format!("\"property\":\"{p}\"")))
        })
    }

    /// The next JSON event (of a `--json` watch) for which `wanted` holds, or `None` after
    /// `PATIENCE`.
    pub fn next_event(&self, wanted: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        let line = self.next_matching(|line| serde_json::from_str(line).is_ok_and(|v| wanted(&v)))?;
        serde_json::from_str(&line).ok()
    }

    /// The next line for which `wanted` holds, or `None` after `PATIENCE`.
    pub fn next_matching(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let line = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()?;
            if wanted(&line) {
                return Some(line);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The loopback servers of `testbed/testbed.sh`, on ports of their own.
/// The XMPP servers of the test bed: every XMPP test runs against both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmppServer {
    Prosody,
    Ejabberd,
}

impl XmppServer {
    /// Its service name for [`Testbed::start`].
    pub fn service(self) -> &'static str {
        match self {
            XmppServer::Prosody => "prosody",
            XmppServer::Ejabberd => "ejabberd",
        }
    }

    fn port_name(self) -> &'static str {
        match self {
            XmppServer::Prosody => "XMPP_C2S_PORT",
            XmppServer::Ejabberd => "EJ_C2S_PORT",
        }
    }
}

/// Defines, for each named `fn NAME(server: XmppServer)`, a test against Prosody
/// (`prosody::NAME`) and one against ejabberd (`ejabberd::NAME`).
#[macro_export]
macro_rules! on_both_xmpp_servers {
    ($($name:ident),+ $(,)?) => {
        mod prosody {
            $(#[test]
            fn $name() {
                super::$name($crate::XmppServer::Prosody)
            })+
        }
        mod ejabberd {
            $(#[test]
            fn $name() {
                super::$name($crate::XmppServer::Ejabberd)
            })+
        }
    };
}

pub struct Testbed {
    dir: TempDir,
    pub ports: BTreeMap<&'static str, u16>,
    running: bool,
}

impl Testbed {
    /// Starts the named services (`prosody`, `kamailio`, `pulse`, `dbus`) and waits until each
    /// answers its protocol. A failed start stops whatever did start.
    pub fn start(services: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(services, &[])
    }

    /// [`Testbed::start`] with options for `testbed.sh` (`TESTBED_SIP_GRUU=1` ...).
    pub fn start_with(services: &[&str], options: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let names = [
            "XMPP_C2S_PORT",
            "XMPP_C2S_TLS_PORT",
            "EJ_C2S_PORT",
            "EJ_C2S_TLS_PORT",
            "SIP_PORT",
            "SIP_TLS_PORT",
            "KAM_CTL_PORT",
        ];
        let ports: BTreeMap<&'static str, u16> = names.into_iter().zip(free_ports(names.len())).collect();
        let mut testbed = Self { dir, ports, running: true };
        let output = testbed
            .script("up")
            .env("TESTBED_SERVICES", services.join(" "))
            .envs(options.iter().copied())
            .output()?;
        if !output.status.success() {
            let log = String::from_utf8_lossy(&output.stderr).into_owned();
            let stopped =
                testbed.stop().err().map(|e| format!("\nand stopping it failed: {e:#}")).unwrap_or_default();
            bail!("testbed.sh up failed:\n{log}{stopped}");
        }
        Ok(testbed)
    }

    fn script(&self, action: &str) -> Command {
        let mut command = Command::new(repo_root().join("tests/testbed/testbed.sh"));
        command.arg(action).arg(self.dir.path()).envs(self.ports.iter().map(|(k, v)| (k, v.to_string())));
        command.stdin(Stdio::null());
        command
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The test CA that signed the servers' certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs/ca.crt")
    }

    /// Stops the test bed's XMPP server `server` (its accounts, rosters and stored messages
    /// stay).
    pub fn stop_xmpp(&self, server: XmppServer) -> anyhow::Result<()> {
        self.run_script(&format!("{}-stop", server.service()))
    }

    /// Starts the XMPP server `server` again and waits until it answers.
    pub fn start_xmpp(&self, server: XmppServer) -> anyhow::Result<()> {
        self.run_script(&format!("{}-start", server.service()))
    }

    /// The config of `user`@localhost's XMPP account on `server` (password
    /// `secret-<user>`), trusting the test bed's CA.
    pub fn xmpp_config(&self, server: XmppServer, user: &str) -> String {
        format!(
            "[xmpp]\njid = \"{user}@localhost\"\npassword = \"secret-{user}\"\nserver = \"127.0.0.1:{}\"\n\
             [tls]\nextra_ca = \"{}\"\n",
            self.xmpp_port(server),
            self.ca_file().display()
        )
    }

    /// The STARTTLS client port of `server`.
    pub fn xmpp_port(&self, server: XmppServer) -> u16 {
        self.port(server.port_name())
    }

    fn run_script(&self, action: &str) -> anyhow::Result<()> {
        let output = self.script(action).output()?;
        if !output.status.success() {
            bail!("testbed.sh {action} failed:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }

    pub fn port(&self, name: &str) -> u16 {
        self.ports.get(name).copied().unwrap_or_else(|| panic!("no port {name}"))
    }

    /// `XDG_RUNTIME_DIR` for clients of the test bed's PulseAudio (started with `pulse`).
    pub fn pulse_runtime_dir(&self) -> PathBuf {
        self.dir.path().join("pulse/run")
    }

    /// The PIDs the test bed recorded, by service name.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        let Ok(entries) = fs::read_dir(self.dir.path().join("pids")) else {
            return BTreeMap::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.path().file_stem()?.to_string_lossy().into_owned();
                let pid = fs::read_to_string(entry.path()).ok()?.trim().parse().ok()?;
                Some((name, pid))
            })
            .collect()
    }

    /// Stops every service by PID and returns what `testbed.sh down` reported.
    pub fn stop(&mut self) -> anyhow::Result<String> {
        if !self.running {
            return Ok(String::new());
        }
        let output = self.script("down").output()?;
        let report = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            bail!("testbed.sh down failed:\n{report}");
        }
        self.running = false;
        Ok(report)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A headless baresip (the stock SIP softphone of the test bed) registered with the test
/// bed's Kamailio, auto-answering, playing a 440 Hz tone; driven through its ctrl_tcp JSON.
pub struct Baresip {
    child: Child,
    dir: TempDir,
    ctrl: std::net::TcpStream,
    buffer: Vec<u8>,
}

/// How a [`Baresip`] is set up beyond its account.
#[derive(Debug, Clone)]
pub struct BaresipOptions {
    /// `audio_codecs` of the account: "PCMU,PCMA" or "opus/48000/2".
    pub codecs: &'static str,
    /// The tone it sends; with Opus the file is 48 kHz stereo (aufile takes nothing else).
    pub tone_hz: u32,
    /// `jitter_buffer_delay`; "0-0" lets the last packets of a stream (DTMF ends) through.
    pub jitter: &'static str,
    pub rtcp_mux: bool,
}

impl Default for BaresipOptions {
    fn default() -> Self {
        Self { codecs: "PCMU,PCMA", tone_hz: 440, jitter: "5-10", rtcp_mux: false }
    }
}

impl Baresip {
    /// Starts `user` (password `secret-<user>`) and waits for its registration.
    pub fn start(testbed: &Testbed, user: &str, transport: &str) -> anyhow::Result<Self> {
        Self::start_with(testbed, user, transport, &BaresipOptions::default())
    }

    pub fn start_with(
        testbed: &Testbed,
        user: &str,
        transport: &str,
        options: &BaresipOptions,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let sip_port = free_port_block(2);
        let rtp = free_port_block(20);
        let ctrl_port = free_ports(1)[0];
        let proxy_port = testbed.port(if transport == "tls" { "SIP_TLS_PORT" } else { "SIP_PORT" });
        let conf = dir.path().join("conf");
        let status = Command::new(repo_root().join("tests/testbed/baresip/mkconf.sh"))
            .arg(&conf)
            .args([user, &format!("secret-{user}"), &sip_port.to_string(), &format!("{rtp}-{}", rtp + 19)])
            .args([&ctrl_port.to_string(), "tone.wav"])
            .env("BARESIP_OUTBOUND", format!("sip:127.0.0.1:{proxy_port}"))
            .env("BARESIP_TRANSPORT", transport)
            .env("BARESIP_CAFILE", testbed.ca_file())
            .env("BARESIP_DISPLAY", format!("{user} (baresip)"))
            .env("BARESIP_CODECS", options.codecs)
            .env("BARESIP_JITTER", options.jitter)
            .env("BARESIP_RTCP_MUX", if options.rtcp_mux { "yes" } else { "no" })
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("mkconf.sh failed");
        }
        let (rate, channels) = if options.codecs.starts_with("opus") { (48_000, 2) } else { (8_000, 1) };
        audio::write_tone(&conf.join("tone.wav"), options.tone_hz, rate, channels, 60, 0.5)?;
        let log = dir.path().join("baresip.log");
        let child = Command::new("baresip")
            .args(["-f", "."])
            .current_dir(&conf)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()
            .context("start baresip")?;
        let start = Instant::now();
        let ctrl = loop {
            let registered = fs::read_to_string(&log).unwrap_or_default().contains("200 OK");
            if registered && let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", ctrl_port)) {
                break stream;
            }
            if start.elapsed() > PATIENCE {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                bail!("baresip did not register:\n{}", fs::read_to_string(&log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        ctrl.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Self { child, dir, ctrl, buffer: Vec::new() })
    }

    /// Sends a ctrl_tcp command (`dial`, `hangup`, `accept` ...).
    pub fn command(&mut self, command: &str, params: &str) -> anyhow::Result<()> {
        let json = serde_json::json!({"command": command, "params": params, "token": "t"}).to_string();
        std::io::Write::write_all(&mut self.ctrl, format!("{}:{json},", json.len()).as_bytes())?;
        Ok(())
    }

    /// Waits for an event of `kind` (CALL_ESTABLISHED, CALL_CLOSED ...), skipping others.
    pub fn wait_event(&mut self, kind: &str) -> anyhow::Result<serde_json::Value> {
        let start = Instant::now();
        loop {
            while let Some(message) = self.next_netstring()? {
                if message["event"] == true && message["type"] == kind {
                    return Ok(message);
                }
            }
            if start.elapsed() > PATIENCE {
                bail!("no {kind} from baresip within {PATIENCE:?}:\n{}", self.log());
            }
            let mut chunk = [0u8; 4096];
            match std::io::Read::read(&mut self.ctrl, &mut chunk) {
                Ok(0) => bail!("baresip closed its control connection"),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn next_netstring(&mut self) -> anyhow::Result<Option<serde_json::Value>> {
        let Some(colon) = self.buffer.iter().position(|b| *b == b':') else { return Ok(None) };
        let length: usize = std::str::from_utf8(&self.buffer[..colon])?.parse()?;
        if self.buffer.len() < colon + 1 + length + 1 {
            return Ok(None);
        }
        let value = serde_json::from_slice(&self.buffer[colon + 1..colon + 1 + length])?;
        self.buffer.drain(..colon + 1 + length + 1);
        Ok(Some(value))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// The audio baresip received in its last call (the sndfile module's `-dec.wav`).
    pub fn received_audio(&self) -> anyhow::Result<PathBuf> {
        self.received_audio_files()?.pop().ok_or_else(|| anyhow!("baresip recorded no call"))
    }

    /// Every recording of received audio, oldest first: baresip starts a new one when a
    /// re-INVITE changes the stream (hold, resume).
    pub fn received_audio_files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut dumps: Vec<PathBuf> = fs::read_dir(self.dir.path().join("conf"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        dumps.sort();
        Ok(dumps)
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// One line per member of every interface in `node` but the three every D-Bus object has, in
/// a form that ignores order and doc comments; `only` limits it to the named interfaces.
pub fn api_shape(node: &zbus_xml::Node<'_>, only: Option<&[&str]>) -> std::collections::BTreeSet<String> {
    const EVERY_OBJECT: [&str; 3] = [
        "org.freedesktop.DBus.Properties",
        "org.freedesktop.DBus.Introspectable",
        "org.freedesktop.DBus.Peer",
    ];
    let args = |args: &[zbus_xml::Arg<'_>]| {
        args.iter()
            .map(|a| format!("{} {} {:?}", a.name().unwrap_or("-"), a.ty(), a.direction()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = std::collections::BTreeSet::new();
    for interface in node.interfaces() {
        let name = interface.name().to_string();
        if EVERY_OBJECT.contains(&name.as_str()) || only.is_some_and(|o| !o.contains(&name.as_str())) {
            continue;
        }
        lines.insert(format!("interface {name}"));
        for a in interface.annotations() {
            lines.insert(format!("{name} annotation {}={}", a.name(), a.value()));
        }
        for m in interface.methods() {
            lines.insert(format!("{name}.{} method ({})", m.name(), args(m.args())));
            for a in m.annotations() {
                lines.insert(format!("{name}.{} annotation {}={}", m.name(), a.name(), a.value()));
            }
        }
        for s in interface.signals() {
            lines.insert(format!("{name}.{} signal ({})", s.name(), args(s.args())));
        }
        for p in interface.properties() {
            lines.insert(format!("{name}.{} property {} {:?}", p.name(), p.ty(), p.access()));
            for a in p.annotations() {
                lines.insert(format!("{name}.{} annotation {}={}", p.name(), a.name(), a.value()));
            }
        }
    }
    lines
}

/// Asserts that the object at `path` exports `interface` exactly as the shipped XML says.
pub fn assert_documented(bus: &PrivateBus, path: &str, interface: &str) {
    let live = api_shape(&introspect(bus, path), Some(&[interface]));
    let documented = api_shape(&documented_api(), Some(&[interface]));
    assert!(live.contains(&format!("interface {interface}")), "{path} has no {interface}");
    assert_eq!(live, documented, "{interface} differs from dbus/org.cusax.Cusax1.xml");
}

/// The live introspection of `path` on `bus`.
pub fn introspect(bus: &PrivateBus, path: &str) -> zbus_xml::Node<'static> {
    let out = bus
        .command("gdbus")
        .args(["introspect", "--session", "--xml", "-d", "org.cusax.Cusax1", "-o", path])
        .output()
        .unwrap_or_else(|e| panic!("gdbus: {e}"));
    assert!(out.status.success(), "gdbus introspect {path}: {}", String::from_utf8_lossy(&out.stderr));
    zbus_xml::Node::from_reader(out.stdout.as_slice())
        .unwrap_or_else(|e| panic!("introspection of {path}: {e}"))
}

/// The shipped API description.
pub fn documented_api() -> zbus_xml::Node<'static> {
    let path = repo_root().join("dbus/org.cusax.Cusax1.xml");
    let file = fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    zbus_xml::Node::from_reader(file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A UDP relay on loopback between a client and a server that drops chosen datagrams, to
/// test recovery from loss. It runs until dropped; what it dropped is kept for assertions.
pub struct LossyRelay {
    pub port: u16,
    dropped: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LossyRelay {
    /// Relays between whoever sends to `port` and `server`; `drop_once` lists (start of the
    /// datagram, text it contains): the first datagram in either direction that matches an
    /// entry is lost, once per entry.
    pub fn start(server: SocketAddr, drop_once: &[(&str, &str)]) -> anyhow::Result<Self> {
        let front = UdpSocket::bind("127.0.0.1:0")?;
        let back = UdpSocket::bind("127.0.0.1:0")?;
        back.connect(server)?;
        front.set_read_timeout(Some(Duration::from_millis(20)))?;
        back.set_read_timeout(Some(Duration::from_millis(20)))?;
        let port = front.local_addr()?.port();
        let dropped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut pending: Vec<(String, String)> =
            drop_once.iter().map(|(start, contains)| (start.to_string(), contains.to_string())).collect();
        let (seen, halt) = (dropped.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut client: Option<SocketAddr> = None;
            let mut buffer = [0u8; 65536];
            let mut lose = |bytes: &[u8]| {
                let text = String::from_utf8_lossy(bytes);
                let position = pending.iter().position(|(start, contains)| {
                    text.starts_with(start.as_str()) && text.contains(contains.as_str())
                });
                if let Some(position) = position {
                    let first = text.lines().next().unwrap_or_default().to_owned();
                    seen.lock().map(|mut s| s.push(first)).ok();
                    pending.remove(position);
                    return true;
                }
                false
            };
            while !halt.load(Ordering::SeqCst) {
                if let Ok((n, from)) = front.recv_from(&mut buffer) {
                    client = Some(from);
                    if !lose(&buffer[..n]) {
                        let _ = back.send(&buffer[..n]);
                    }
                }
                if let Ok(n) = back.recv(&mut buffer)
                    && let Some(client) = client
                    && !lose(&buffer[..n])
                {
                    let _ = front.send_to(&buffer[..n], client);
                }
            }
        });
        Ok(Self { port, dropped, stop, thread: Some(thread) })
    }

    /// The start lines of the datagrams it dropped.
    pub fn dropped(&self) -> Vec<String> {
        self.dropped.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A DNS server for one test, on 127.0.0.77:53 (a resolv.conf cannot name a port), answering
/// from a fixed table: NAPTR, SRV and A records; NXDOMAIN for any other name. Needs root, as
/// do the mount namespaces that point a daemon's /etc/resolv.conf at it ([`Cusaxd::start_with_dns`]).
pub struct FakeDns {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub resolv_conf: PathBuf,
    _dir: TempDir,
}

impl FakeDns {
    pub const ADDRESS: &'static str = "127.0.0.77";

    pub fn start(records: Vec<hickory_proto::rr::Record>) -> anyhow::Result<Self> {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        let socket =
            UdpSocket::bind((Self::ADDRESS, 53)).context("bind 127.0.0.77:53 (the DNS tests run as root)")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let dir = tempfile::tempdir()?;
        let resolv_conf = dir.path().join("resolv.conf");
        fs::write(&resolv_conf, format!("nameserver {}\noptions timeout:1 attempts:1\n", Self::ADDRESS))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while !halt.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buffer) else { continue };
                let Ok(query) = Message::from_vec(&buffer[..n]) else { continue };
                let mut reply =
                    Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.metadata.authoritative = true;
                let mut known = false;
                for question in &query.queries {
                    reply.add_query(question.clone());
                    for record in &records {
                        if record.name == *question.name() {
                            known = true;
                            if record.record_type() == question.query_type() {
                                reply.add_answer(record.clone());
                            }
                        }
                    }
                }
                if !known {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from);
                }
            }
        });
        Ok(Self { stop, thread: Some(thread), resolv_conf, _dir: dir })
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `busctl get-property` of the `org.cusax.Cusax1.Daemon` properties named.
pub fn daemon_property(bus: &PrivateBus, names: &[&str]) -> Output {
    let mut args = vec!["get-property", "org.cusax.Cusax1", "/org/cusax/Cusax1", "org.cusax.Cusax1.Daemon"];
    args.extend_from_slice(names);
    busctl(bus, &args)
}

/// The daemon's status (`cusaxctl status --json`), or `Null` when it cannot be read.
pub fn status_json(bus: &PrivateBus) -> serde_json::Value {
    let out = cusaxctl(bus, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Every call's properties (`cusaxctl calls --json`), with its `Path`.
pub fn calls_json(bus: &PrivateBus) -> Vec<serde_json::Value> {
    let out = cusaxctl(bus, &["calls", "--json"]);
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Polls `probe` every 20 ms until it gives something; panics with `what` after `PATIENCE`.
pub fn wait_for<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_within(what, PATIENCE, probe)
}

/// [`wait_for`] with a limit of its own: for what waits on the daemon's reconnect backoff,
/// which after a long outage is longer than [`PATIENCE`] by design.
pub fn wait_for_within<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// sipp running `scenario` once on 127.0.0.1:`port`, quiet, errors traced into `dir`.
pub fn sipp_command(dir: &Path, scenario: &Path, port: u16, args: &[String]) -> Command {
    let mut command = Command::new("sipp");
    command
        .current_dir(dir)
        .arg("-sf")
        .arg(scenario)
        .args(["-nostdin", "-trace_err", "-i", "127.0.0.1", "-m", "1", "-timeout", "30s", "-timeout_error"])
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// A sipp UAS registered with the test bed's Kamailio as `user` (password `secret-<user>`)
/// on a port of its own, running `scenario` (from tests/sipp) in the background with `args`.
pub fn sipp_uas(testbed: &Testbed, dir: &Path, user: &str, scenario: &str, args: &[String]) -> Child {
    let port = free_port_block(1);
    let registrar = format!("127.0.0.1:{}", testbed.port("SIP_PORT"));
    let register = repo_root().join("tests/testbed/sipp/register_auth.xml");
    let password = format!("secret-{user}");
    let credentials: Vec<String> =
        ["-s", user, "-au", user, "-ap", &password, &registrar].iter().map(|s| s.to_string()).collect();
    let status = sipp_command(dir, &register, port, &credentials).status().expect("run sipp");
    assert!(status.success(), "sipp could not register {user}");
    sipp_command(dir, &repo_root().join("tests/sipp").join(scenario), port, args).spawn().expect("run sipp")
}

/// Waits for sipp to end and asserts it succeeded, showing its error trace if not.
pub fn finish_sipp(mut child: Child, what: &str, dir: &Path) {
    let (status, _) = wait_for_exit(&mut child, Duration::from_secs(40)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("{what} did not finish")
    });
    let errors: String = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log"))
                .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    assert!(status.success(), "{what} failed ({status}):\n{errors}");
}

/// A UDP relay that impairs one direction of an RTP stream: datagrams from the front (the
/// caller) to `target` are lost with probability `loss` and each delayed by a random 0 to
/// `jitter` (so they also arrive out of order); the way back is untouched. The randomness
/// comes from a fixed seed, so every run sees the same pattern. It keeps what it forwarded
/// (the first `RELAY_RECORD` datagrams), with when.
pub struct ImpairedRelay {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
    forwarded: Recorded,
}

/// Datagrams with when they were forwarded, shared with the relay's thread.
type Recorded = std::sync::Arc<std::sync::Mutex<Vec<(Instant, Vec<u8>)>>>;

/// How many forwarded datagrams an [`ImpairedRelay`] keeps: 100 s of a 20 ms stream.
const RELAY_RECORD: usize = 5000;

impl ImpairedRelay {
    pub fn start(target: SocketAddr, loss: f64, jitter: Duration, seed: u64) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        use std::sync::{Arc, Mutex};
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        front.set_read_timeout(Some(Duration::from_millis(5)))?;
        back.set_read_timeout(Some(Duration::from_millis(20)))?;
        let port = front.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicU64::new(0));
        let caller: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let forwarded: Recorded = Arc::new(Mutex::new(Vec::new()));
        let forward = {
            let (front, back, stop, lost, caller, record) =
                (front.clone(), back.clone(), stop.clone(), lost.clone(), caller.clone(), forwarded.clone());
            std::thread::spawn(move || {
                let mut state = seed | 1;
                let mut random = move || {
                    // xorshift64*: deterministic and good enough to spread loss and delay.
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
                };
                let mut pending: Vec<(Instant, Vec<u8>)> = Vec::new();
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, from)) = front.recv_from(&mut buffer) {
                        if let Ok(mut known) = caller.lock() {
                            *known = Some(from);
                        }
                        if random() < loss {
                            lost.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let delay = jitter.mul_f64(random());
                            pending.push((Instant::now() + delay, buffer[..len].to_vec()));
                        }
                    }
                    let now = Instant::now();
                    pending.sort_by_key(|(at, _)| *at);
                    while pending.first().is_some_and(|(at, _)| *at <= now) {
                        let (_, datagram) = pending.remove(0);
                        let _ = back.send_to(&datagram, target);
                        if let Ok(mut record) = record.lock()
                            && record.len() < RELAY_RECORD
                        {
                            record.push((now, datagram));
                        }
                    }
                }
            })
        };
        let backward = {
            let (front, back, stop) = (front.clone(), back.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, _)) = back.recv_from(&mut buffer)
                        && let Some(to) = caller.lock().ok().and_then(|c| *c)
                    {
                        let _ = front.send_to(&buffer[..len], to);
                    }
                }
            })
        };
        Ok(Self { port, stop, threads: vec![forward, backward], lost, forwarded })
    }

    /// How many datagrams it dropped.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// What it forwarded so far, with when.
    pub fn forwarded(&self) -> Vec<(Instant, Vec<u8>)> {
        self.forwarded.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for ImpairedRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
