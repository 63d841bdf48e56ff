//! [`XmppPeer`]: a stock XMPP client (slixmpp, `testbed/tools/xmpp_peer.py`) that a test
//! drives with JSON commands and watches through the JSON events it prints.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{PATIENCE, Testbed, repo_root, stop_child};

pub struct XmppPeer {
    /// The full JID it is bound to.
    pub jid: String,
    child: Child,
    stdin: ChildStdin,
    events: Receiver<Value>,
    /// Events read while waiting for another one, in order.
    seen: Vec<Value>,
}

/// The Python that has slixmpp: `TESTBED_PYTHON`, else the test bed's venv.
pub fn python() -> std::path::PathBuf {
    std::env::var_os("TESTBED_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join("tests/testbed/.venv/bin/python"))
}

impl XmppPeer {
    /// Logs `user` (password `secret-<user>`) in to the test bed's XMPP server on `port`
    /// and waits until the server has made it available.
    pub fn start(testbed: &Testbed, user: &str, port: u16) -> anyhow::Result<Self> {
        let mut child = std::process::Command::new(python())
            .arg(repo_root().join("tests/testbed/tools/xmpp_peer.py"))
            .args(["--jid", &format!("{user}@localhost"), "--password", &format!("secret-{user}")])
            .args(["--port", &port.to_string(), "--cafile"])
            .arg(testbed.ca_file())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start xmpp_peer.py (run tests/testbed/install.sh for slixmpp)")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && tx.send(event).is_err()
                {
                    break;
                }
            }
        });
        let mut peer = Self { jid: String::new(), child, stdin, events, seen: Vec::new() };
        let online =
            peer.expect(|e| e["event"] == "online", PATIENCE).context("the peer did not come online")?;
        peer.jid = online["jid"].as_str().unwrap_or_default().to_owned();
        // Online is not yet available: until the server has taken our initial presence, a
        // message to the bare JID goes to offline storage (ejabberd just woken from SIGSTOP
        // routed one there). The server echoes that presence to us (RFC 6121 4.2.2); it
        // stays for the test to see.
        let jid = peer.jid.clone();
        let own = peer
            .expect(
                |e| e["event"] == "presence" && e["frm"] == jid.as_str() && e["type"] == "available",
                PATIENCE,
            )
            .context("the server did not echo the peer's initial presence")?;
        peer.seen.insert(0, own);
        Ok(peer)
    }

    /// Sends one command (see the script's doc) and waits until the peer has carried it out.
    pub fn command(&mut self, command: Value) -> anyhow::Result<()> {
        let kind = command["cmd"].clone();
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        self.expect(|e| e["event"] == "done" && e["cmd"] == kind, PATIENCE)?;
        Ok(())
    }

    /// The first event (seen before or arriving within `limit`) that `wanted` accepts; it is
    /// taken out, the others stay for later calls.
    pub fn expect(&mut self, wanted: impl Fn(&Value) -> bool, limit: Duration) -> anyhow::Result<Value> {
        if let Some(at) = self.seen.iter().position(&wanted) {
            return Ok(self.seen.remove(at));
        }
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.events.recv_timeout(left) {
                Ok(event) if wanted(&event) => return Ok(event),
                Ok(event) => self.seen.push(event),
                Err(RecvTimeoutError::Timeout) => {
                    bail!("no such event within {limit:?}; seen: {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the peer exited; seen: {:?}", self.seen),
            }
        }
    }

    /// Every event that arrives within `period` (and those seen before), taken out.
    pub fn drain(&mut self, period: Duration) -> Vec<Value> {
        let start = Instant::now();
        while let Ok(event) = self.events.recv_timeout(period.saturating_sub(start.elapsed())) {
            self.seen.push(event);
        }
        std::mem::take(&mut self.seen)
    }
}

impl Drop for XmppPeer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
