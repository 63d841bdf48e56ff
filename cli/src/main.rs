//! `cusaxctl`: a thin D-Bus client of `cusaxd`. It holds no logic of its own beyond turning
//! D-Bus values into text or JSON; every call is bounded by `--timeout`.
//!
//! Exit status: 0 on success, 1 when the daemon is not running, a call fails or times out,
//! 2 for usage errors.

mod chat;
mod render;

use std::collections::HashMap;
use std::io::Write;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{CommandFactory, Parser, Subcommand};
use futures_util::StreamExt;
use zbus::fdo::{PeerProxy, PropertiesProxy};
use zbus::message::Type as MessageType;
use zbus::names::InterfaceName;
use zbus::{Connection, MatchRule, Message, MessageStream, connection};
use zbus::{OwnedVariant as OwnedValue, Structure};

const BUS_NAME: &str = "org.cusax.Cusax1";
const ROOT_PATH: &str = "/org/cusax/Cusax1";
const DAEMON_IFACE: &str = "org.cusax.Cusax1.Daemon";

/// Control and watch cusaxd, the SIP + XMPP endpoint daemon, over the D-Bus session bus.
#[derive(Debug, Parser)]
#[command(name = "cusaxctl", version)]
struct Cli {
    /// Give up on any D-Bus call after this many seconds.
    #[arg(long, global = true, default_value_t = 5.0, value_name = "SECONDS",
          value_parser = parse_timeout)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon's state: accounts, addresses, presence.
    Status {
        /// One JSON object with every Daemon property.
        #[arg(long)]
        json: bool,
    },
    /// Print one line per property change, object added or removed, and signal, until
    /// interrupted.
    Watch {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Call a sip:/sips: URI, a tel: URI, an E.164 number, or a JID (on the SIP address that
    /// contact published); prints the call's object path.
    Call { target: String },
    /// Answer an incoming call (the only one when CALL is left out).
    Answer {
        /// A call number (call/N) or object path.
        call: Option<String>,
    },
    /// Hang up, cancel or decline a call (the only one when CALL is left out).
    Hangup {
        /// A call number (call/N) or object path.
        call: Option<String>,
    },
    /// Put a call on hold (the only active one when CALL is left out).
    Hold {
        /// A call number (call/N) or object path.
        call: Option<String>,
    },
    /// Take a call off hold (the only held one when CALL is left out).
    Resume {
        /// A call number (call/N) or object path.
        call: Option<String>,
    },
    /// Send DTMF digits (0-9, *, #, A-D) in a call (the only active one when CALL is left out).
    Dtmf {
        digits: String,
        /// A call number (call/N) or object path.
        call: Option<String>,
    },
    /// Mute the microphone in a call (the only live one when CALL is left out).
    Mute {
        /// A call number (call/N) or object path.
        call: Option<String>,
        /// Unmute instead.
        #[arg(long)]
        off: bool,
    },
    /// List the calls, with their media figures.
    Calls {
        /// One JSON object per call.
        #[arg(long)]
        json: bool,
    },
    /// Send a chat message to a JID; prints the message id once it is safely stored.
    Msg {
        jid: String,
        text: String,
        /// Return only once the message is sent (the server has it) or delivered (the
        /// peer's client has it).
        #[arg(long, value_parser = ["sent", "delivered"])]
        wait: Option<String>,
    },
    /// Chat with a JID, or (--call) with the far end of a call, linked to it: each line of
    /// stdin is sent, each message that arrives is printed.
    Chat {
        #[arg(required_unless_present = "call", conflicts_with = "call")]
        jid: Option<String>,
        /// A call number (call/N) or object path.
        #[arg(long)]
        call: Option<String>,
    },
    /// Who an address is on both networks: a JID, a SIP address or a number; prints the
    /// contact's JID, SIP addresses, numbers, whether their vCard verifies them, SIP status.
    Lookup {
        address: String,
        /// One JSON object with the contact's properties.
        #[arg(long)]
        json: bool,
    },
    /// List the roster contacts with their presence, and who asks to see ours.
    Contacts {
        /// One JSON object per contact.
        #[arg(long)]
        json: bool,
    },
    /// Show our presence, or set it (SHOW: available, chat, away, xa, dnd).
    Presence {
        show: Option<String>,
        #[arg(default_value = "")]
        status: String,
    },
    /// Show the newest messages (with one JID, or with everyone).
    History {
        jid: Option<String>,
        /// How many (1-500).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Ask a JID to let us see their presence.
    Subscribe { jid: String },
    /// Let a JID that asked see our presence.
    Approve { jid: String },
    /// Refuse a JID's request to see our presence.
    Deny { jid: String },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => Ok(seconds),
        _ => Err("a number of seconds between 0 and 3600".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let timeout = Duration::from_secs_f64(cli.timeout);
    if let Command::Completions { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "cusaxctl", &mut script);
        return write_stdout(&script);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cusaxctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let conn = connect(timeout).await?;
        match cli.command {
            Command::Status { json } => status(&conn, timeout, json).await,
            Command::Watch { json } => watch(&conn, timeout, json).await,
            Command::Call { target } => place_call(&conn, timeout, &target).await,
            Command::Answer { call } => {
                call_method(&conn, timeout, call.as_deref(), "Answer", &["incoming"]).await
            }
            Command::Hangup { call } => {
                let live = ["dialing", "ringing", "incoming", "active", "held"];
                call_method(&conn, timeout, call.as_deref(), "Hangup", &live).await
            }
            Command::Hold { call } => call_method(&conn, timeout, call.as_deref(), "Hold", &["active"]).await,
            Command::Resume { call } => {
                call_method(&conn, timeout, call.as_deref(), "Resume", &["held"]).await
            }
            Command::Dtmf { digits, call } => {
                let path = find_call(&conn, timeout, call.as_deref(), "send DTMF in", &["active"]).await?;
                let body = digits.as_str();
                bounded(
                    timeout,
                    conn.call_method(Some(BUS_NAME), path.as_str(), Some(CALL_IFACE), "SendDtmf", &body),
                )
                .await
                .map(drop)
            }
            Command::Mute { call, off } => {
                let live = ["dialing", "ringing", "incoming", "active", "held"];
                let path = find_call(&conn, timeout, call.as_deref(), "mute", &live).await?;
                let value = zbus::Variant::from(!off);
                let body = (CALL_IFACE, "Muted", value);
                let set = conn.call_method(
                    Some(BUS_NAME),
                    path.as_str(),
                    Some("org.freedesktop.DBus.Properties"),
                    "Set",
                    &body,
                );
                bounded(timeout, set).await.map(drop)
            }
            Command::Calls { json } => list_calls(&conn, timeout, json).await,
            Command::Msg { jid, text, wait } => {
                chat::message(&conn, timeout, &jid, &text, wait.as_deref()).await
            }
            Command::Chat { jid: Some(jid), .. } => chat::chat(&conn, timeout, &jid).await,
            Command::Chat { jid: None, call } => {
                let path = find_call(&conn, timeout, call.as_deref(), "chat about", &[]).await?;
                chat::chat_about_call(&conn, timeout, &path).await
            }
            Command::Lookup { address, json } => chat::lookup(&conn, timeout, &address, json).await,
            Command::Contacts { json } => chat::contacts(&conn, timeout, json).await,
            Command::Presence { show, status } => {
                chat::presence(&conn, timeout, show.as_deref(), &status).await
            }
            Command::History { jid, limit, json } => {
                chat::history(&conn, timeout, jid.as_deref(), limit, json).await
            }
            Command::Subscribe { jid } => chat::subscription(&conn, timeout, "Subscribe", &jid).await,
            Command::Approve { jid } => chat::subscription(&conn, timeout, "Approve", &jid).await,
            Command::Deny { jid } => chat::subscription(&conn, timeout, "Deny", &jid).await,
            Command::Completions { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cusaxctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a reader that closed the pipe early (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cusaxctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(timeout: Duration) -> anyhow::Result<Connection> {
    let build = connection::Builder::session().method_timeout(timeout).build();
    tokio::time::timeout(timeout, build)
        .await
        .map_err(|_| anyhow!("the session bus did not answer within {timeout:?}"))?
        .context("cannot connect to the D-Bus session bus")
}

/// Turns "nobody owns the name" into the message a user needs.
fn daemon_error(e: zbus::Error) -> anyhow::Error {
    let name = match &e {
        zbus::Error::MethodError(name, _, _) => name.as_str().to_owned(),
        zbus::Error::FDO(fdo) => zbus::DBusError::name(&**fdo).to_string(),
        _ => String::new(),
    };
    match name.as_str() {
        ours if ours.starts_with("org.cusax.Cusax1.Error.") => {
            let message = match &e {
                zbus::Error::MethodError(_, Some(message), _) => message.clone(),
                _ => e.to_string(),
            };
            anyhow!("{message} ({ours})")
        }
        "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
            anyhow!("cusaxd is not running on the session bus (nobody owns {BUS_NAME})")
        }
        spawn
            if spawn.starts_with("org.freedesktop.DBus.Error.Spawn.")
                || spawn.starts_with("org.freedesktop.systemd1.") =>
        {
            anyhow::Error::new(e).context("cusaxd is not running, and D-Bus activation could not start it")
        }
        _ => anyhow::Error::new(e).context("cusaxd did not answer"),
    }
}

async fn bounded<T>(timeout: Duration, call: impl Future<Output = zbus::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(daemon_error),
        Err(_) => Err(anyhow!("cusaxd did not answer within {timeout:?}")),
    }
}

async fn daemon_properties(
    conn: &Connection,
    timeout: Duration,
) -> anyhow::Result<HashMap<String, OwnedValue>> {
    let proxy = PropertiesProxy::builder(conn)
        .destination(BUS_NAME)
        .path(ROOT_PATH)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let iface = InterfaceName::try_from(DAEMON_IFACE)?;
    bounded(timeout, async { proxy.get_all(iface).await.map_err(zbus::Error::from) }).await
}

async fn status(conn: &Connection, timeout: Duration, json: bool) -> anyhow::Result<()> {
    let properties = daemon_properties(conn, timeout).await?;
    let text = if json {
        let object: serde_json::Map<String, serde_json::Value> =
            properties.iter().map(|(name, value)| (name.clone(), render::to_json(value))).collect();
        format!("{}\n", serde_json::Value::Object(object))
    } else {
        // The calls with what they are linked to: the chat, the contact.
        let mut text = render::status_text(&properties);
        for (path, properties) in calls(conn, timeout).await? {
            text.push_str(&render::call_line(&path, &properties));
        }
        text
    };
    match write_stdout(text.as_bytes()) {
        ExitCode::SUCCESS => Ok(()),
        _ => Err(anyhow!("cannot write the status")),
    }
}

async fn watch(conn: &Connection, timeout: Duration, json: bool) -> anyhow::Result<()> {
    // Every signal the daemon sends (whichever process owns the name over time), and the
    // daemon coming and going.
    let ours = MatchRule::builder().msg_type(MessageType::Signal).sender(BUS_NAME).build()?;
    let owner = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
        .member("NameOwnerChanged")
        .arg(0, BUS_NAME)
        .build()?;
    let mut signals =
        bounded(timeout, MessageStream::for_match_rule(ours, conn, NonZeroUsize::new(256))).await?;
    let mut owners =
        bounded(timeout, MessageStream::for_match_rule(owner, conn, NonZeroUsize::new(16))).await?;
    // Fail clearly, now, when there is nothing to watch (this also starts an activatable
    // daemon that is not running yet).
    let peer =
        bounded(timeout, PeerProxy::builder(conn).destination(BUS_NAME).path(ROOT_PATH).build()).await?;
    bounded(timeout, peer.ping()).await?;
    eprintln!("cusaxctl: watching {BUS_NAME}");
    loop {
        let (message, from_bus) = tokio::select! {
            Some(message) = signals.next() => (message, false),
            Some(message) = owners.next() => (message, true),
            else => return Err(anyhow!("the session bus closed the connection")),
        };
        let Ok(message) = message else { continue };
        // zbus also hands the bus's own NameOwnerChanged for our name to the stream of the
        // daemon's signals; report it once, from the stream that asked for it.
        let bus_signal = message.header().sender().is_some_and(|s| s.as_str() == "org.freedesktop.DBus");
        if bus_signal != from_bus {
            continue;
        }
        for line in describe(&message, json) {
            if write_stdout(format!("{line}\n").as_bytes()) != ExitCode::SUCCESS {
                return Err(anyhow!("cannot write to stdout"));
            }
        }
    }
}

const CALL_IFACE: &str = "org.cusax.Cusax1.Call";

async fn place_call(conn: &Connection, timeout: Duration, target: &str) -> anyhow::Result<()> {
    let options: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
    let reply = bounded(
        timeout,
        conn.call_method(
            Some(BUS_NAME),
            ROOT_PATH,
            Some("org.cusax.Cusax1.Calls"),
            "PlaceCall",
            &(target, options),
        ),
    )
    .await?;
    let path: zbus::OwnedObjectPath = reply.body().deserialize()?;
    print_line(path.as_str())
}

/// Every call object with its properties, by path.
async fn calls(
    conn: &Connection,
    timeout: Duration,
) -> anyhow::Result<Vec<(String, HashMap<String, OwnedValue>)>> {
    managed_objects(conn, timeout, CALL_IFACE).await
}

/// Every object with `iface`, with that interface's properties, in the order of their numbers.
async fn managed_objects(
    conn: &Connection,
    timeout: Duration,
    iface: &str,
) -> anyhow::Result<Vec<(String, HashMap<String, OwnedValue>)>> {
    let reply = bounded(
        timeout,
        conn.call_method(
            Some(BUS_NAME),
            ROOT_PATH,
            Some("org.freedesktop.DBus.ObjectManager"),
            "GetManagedObjects",
            &(),
        ),
    )
    .await?;
    let objects: HashMap<zbus::OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>> =
        reply.body().deserialize()?;
    let mut found: Vec<(String, HashMap<String, OwnedValue>)> = objects
        .into_iter()
        .filter_map(|(path, mut interfaces)| Some((path.to_string(), interfaces.remove(iface)?)))
        .collect();
    found.sort_by_key(|(path, _)| path.rsplit('/').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0));
    Ok(found)
}

async fn list_calls(conn: &Connection, timeout: Duration, json: bool) -> anyhow::Result<()> {
    let mut text = String::new();
    for (path, properties) in calls(conn, timeout).await? {
        if json {
            let mut object: serde_json::Map<String, serde_json::Value> =
                properties.iter().map(|(k, v)| (k.clone(), render::to_json(v))).collect();
            object.insert("Path".into(), serde_json::Value::String(path));
            text.push_str(&format!("{}\n", serde_json::Value::Object(object)));
        } else {
            text.push_str(&render::call_line(&path, &properties));
        }
    }
    match write_stdout(text.as_bytes()) {
        ExitCode::SUCCESS => Ok(()),
        _ => Err(anyhow!("cannot write the calls")),
    }
}

/// Calls `method` on the call named by `call` (`N`, `call/N` or a path), or on the only call
/// whose state is one of `states` when `call` is left out.
async fn call_method(
    conn: &Connection,
    timeout: Duration,
    call: Option<&str>,
    method: &str,
    states: &[&str],
) -> anyhow::Result<()> {
    let path = find_call(conn, timeout, call, &method.to_lowercase(), states).await?;
    bounded(timeout, conn.call_method(Some(BUS_NAME), path.as_str(), Some(CALL_IFACE), method, &())).await?;
    Ok(())
}

/// The path of the call named by `call` (`N`, `call/N` or a path), or of the only call whose
/// state is one of `states` when `call` is left out; `verb` says what for, in errors.
async fn find_call(
    conn: &Connection,
    timeout: Duration,
    call: Option<&str>,
    verb: &str,
    states: &[&str],
) -> anyhow::Result<String> {
    Ok(match call {
        Some(name) => {
            let number = name.rsplit('/').next().unwrap_or(name);
            number
                .parse::<u64>()
                .map_err(|_| anyhow!("{name:?} is not a call (give N, call/N or its path)"))?;
            format!("{ROOT_PATH}/call/{number}")
        }
        None => {
            let candidates: Vec<String> = calls(conn, timeout)
                .await?
                .into_iter()
                .filter(|(_, p)| p.get("State").is_some_and(|s| matches!(render::to_json(s), serde_json::Value::String(s) if states.contains(&s.as_str()))))
                .map(|(path, _)| path)
                .collect();
            match candidates.as_slice() {
                [one] => one.clone(),
                [] => return Err(anyhow!("no call to {verb} ({})", states.join(", "))),
                _ => return Err(anyhow!("several calls: name one ({})", candidates.join(", "))),
            }
        }
    })
}

fn print_line(text: &str) -> anyhow::Result<()> {
    print_text(&format!("{text}\n"))
}

fn print_text(text: &str) -> anyhow::Result<()> {
    match write_stdout(text.as_bytes()) {
        ExitCode::SUCCESS => Ok(()),
        _ => Err(anyhow!("cannot write to stdout")),
    }
}

/// The lines `watch` prints for one signal.
fn describe(message: &Message, json: bool) -> Vec<String> {
    let header = message.header();
    let path = header.path().map(|p| p.to_string()).unwrap_or_default();
    let interface = header.interface().map(|i| i.to_string()).unwrap_or_default();
    let member = header.member().map(|m| m.to_string()).unwrap_or_default();
    let body = message.body();
    let events = match (interface.as_str(), member.as_str()) {
        ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
            match body.deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>() {
                Ok((iface, changed, invalidated)) => {
                    render::property_events(&path, &iface, &changed, &invalidated)
                }
                Err(_) => return Vec::new(),
            }
        }
        ("org.freedesktop.DBus.ObjectManager", "InterfacesAdded") => {
            match body.deserialize::<(String, HashMap<String, HashMap<String, OwnedValue>>)>() {
                Ok((object, interfaces)) => vec![render::object_added(&object, &interfaces)],
                Err(_) => return Vec::new(),
            }
        }
        ("org.freedesktop.DBus.ObjectManager", "InterfacesRemoved") => {
            match body.deserialize::<(String, Vec<String>)>() {
                Ok((object, interfaces)) => vec![render::object_removed(&object, &interfaces)],
                Err(_) => return Vec::new(),
            }
        }
        ("org.freedesktop.DBus", "NameOwnerChanged") => {
            match body.deserialize::<(String, String, String)>() {
                Ok((_, _, new_owner)) => vec![render::daemon_presence(!new_owner.is_empty())],
                Err(_) => return Vec::new(),
            }
        }
        _ => {
            let args = body.deserialize::<Structure<'_>>().map(|s| s.into_fields()).unwrap_or_default();
            vec![render::signal(&path, &interface, &member, &args)]
        }
    };
    events.into_iter().map(|event| event.line(json)).collect()
}
