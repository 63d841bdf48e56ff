//! The chat commands: `msg`, `chat`, `contacts`, `presence`, `history`, and the
//! subscription answers.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::anyhow;
use futures_util::StreamExt;
use tokio::io::AsyncBufReadExt;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant, Variant};

use crate::{BUS_NAME, DAEMON_IFACE, ROOT_PATH, bounded, managed_objects, print_line, render};

const CONVERSATION_IFACE: &str = "org.cusax.Cusax1.Conversation";
const CONTACT_IFACE: &str = "org.cusax.Cusax1.Contact";

async fn start_conversation(
    conn: &Connection,
    timeout: Duration,
    jid: &str,
) -> anyhow::Result<OwnedObjectPath> {
    let args = (jid, HashMap::<&str, Variant<'_>>::new());
    let call = conn.call_method(
        Some(BUS_NAME),
        ROOT_PATH,
        Some("org.cusax.Cusax1.Conversations"),
        "StartConversation",
        &args,
    );
    Ok(bounded(timeout, call).await?.body().deserialize()?)
}

async fn send(conn: &Connection, timeout: Duration, path: &str, body: &str) -> anyhow::Result<String> {
    let args = (body, HashMap::<&str, Variant<'_>>::new());
    let call = conn.call_method(Some(BUS_NAME), path, Some(CONVERSATION_IFACE), "SendMessage", &args);
    Ok(bounded(timeout, call).await?.body().deserialize()?)
}

/// The conversation's signals, subscribed before anything is sent so that none is missed.
async fn conversation_signals(
    conn: &Connection,
    timeout: Duration,
    path: &str,
) -> anyhow::Result<MessageStream> {
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .path(path.to_owned())
        .interface(CONVERSATION_IFACE)
        .build()?;
    bounded(timeout, MessageStream::for_match_rule(rule, conn, NonZeroUsize::new(256))).await
}

/// `msg JID TEXT`: prints the message id; with `wait`, returns once its status is `wait` (or
/// fails when it failed).
pub async fn message(
    conn: &Connection,
    timeout: Duration,
    jid: &str,
    text: &str,
    wait: Option<&str>,
) -> anyhow::Result<()> {
    let path = start_conversation(conn, timeout, jid).await?;
    let mut signals = match wait {
        Some(_) => Some(conversation_signals(conn, timeout, path.as_str()).await?),
        None => None,
    };
    let id = send(conn, timeout, path.as_str(), text).await?;
    print_line(&id)?;
    let (Some(wanted), Some(signals)) = (wait, signals.as_mut()) else { return Ok(()) };
    let order = |s: &str| ["queued", "sent", "delivered"].iter().position(|x| *x == s);
    while let Some(Ok(message)) = signals.next().await {
        if message.header().member().is_none_or(|m| m.as_str() != "MessageStatus") {
            continue;
        }
        let Ok((of, status)) = message.body().deserialize::<(String, String)>() else { continue };
        if of != id {
            continue;
        }
        if status == "failed" {
            return Err(anyhow!("message {id} failed"));
        }
        if order(&status) >= order(wanted) {
            return Ok(());
        }
    }
    Err(anyhow!("the daemon went away before message {id} was {wanted}"))
}

/// `chat JID`: sends each line read from stdin, prints each message that arrives, until
/// stdin ends.
pub async fn chat(conn: &Connection, timeout: Duration, jid: &str) -> anyhow::Result<()> {
    let path = start_conversation(conn, timeout, jid).await?;
    chat_on(conn, timeout, &path, jid).await
}

/// `chat --call CALL`: the chat the call's `StartChat` opens with its far end.
pub async fn chat_about_call(conn: &Connection, timeout: Duration, call: &str) -> anyhow::Result<()> {
    let start = conn.call_method(Some(BUS_NAME), call, Some("org.cusax.Cusax1.Call"), "StartChat", &());
    let path: OwnedObjectPath = bounded(timeout, start).await?.body().deserialize()?;
    let peer = conn.call_method(
        Some(BUS_NAME),
        path.as_str(),
        Some("org.freedesktop.DBus.Properties"),
        "Get",
        &(CONVERSATION_IFACE, "Peer"),
    );
    let peer: OwnedVariant = bounded(timeout, peer).await?.body().deserialize()?;
    let peer = match render::to_json(&peer) {
        serde_json::Value::String(peer) => peer,
        _ => String::new(),
    };
    chat_on(conn, timeout, &path, &peer).await
}

async fn chat_on(
    conn: &Connection,
    timeout: Duration,
    path: &OwnedObjectPath,
    jid: &str,
) -> anyhow::Result<()> {
    let mut signals = conversation_signals(conn, timeout, path.as_str()).await?;
    eprintln!("cusaxctl: chatting with {jid}; one line per message, end with Ctrl-D");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                None => return Ok(()),
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    send(conn, timeout, path.as_str(), &line).await?;
                }
            },
            message = signals.next() => {
                let Some(Ok(message)) = message else { return Err(anyhow!("the daemon went away")) };
                let member = message.header().member().map(|m| m.to_string()).unwrap_or_default();
                if member == "MessageReceived" {
                    let Ok((_, from, body, at, _)) =
                        message.body().deserialize::<(String, String, String, i64, HashMap<String, OwnedVariant>)>()
                    else { continue };
                    print_line(&format!("{} {from}: {body}", render::time_of(at)))?;
                }
            }
        }
    }
}

/// `lookup ADDRESS`: the contact a JID, SIP address or number belongs to.
pub async fn lookup(conn: &Connection, timeout: Duration, address: &str, json: bool) -> anyhow::Result<()> {
    let args = (address,);
    let call =
        conn.call_method(Some(BUS_NAME), ROOT_PATH, Some("org.cusax.Cusax1.Contacts"), "Lookup", &args);
    let (path, verified): (OwnedObjectPath, bool) = bounded(timeout, call).await?.body().deserialize()?;
    let all = conn.call_method(
        Some(BUS_NAME),
        path.as_str(),
        Some("org.freedesktop.DBus.Properties"),
        "GetAll",
        &(CONTACT_IFACE,),
    );
    let mut properties: HashMap<String, OwnedVariant> = bounded(timeout, all).await?.body().deserialize()?;
    // What the lookup says of this address, not the contact's verdict on all of theirs.
    properties.insert("AddressVerified".into(), OwnedVariant::from(verified));
    crate::print_text(&render::object_line(path.as_str(), &properties, json, render::lookup_text))
}

/// `contacts`: one line (or JSON object) per roster contact, then the pending requests.
pub async fn contacts(conn: &Connection, timeout: Duration, json: bool) -> anyhow::Result<()> {
    let mut text = String::new();
    for (path, properties) in managed_objects(conn, timeout, CONTACT_IFACE).await? {
        text.push_str(&render::object_line(&path, &properties, json, render::contact_line));
    }
    let requests = root_property(conn, timeout, "org.cusax.Cusax1.Contacts", "SubscriptionRequests").await?;
    if let serde_json::Value::Array(requests) = render::to_json(&requests) {
        for jid in requests {
            let jid = jid.as_str().unwrap_or_default();
            text.push_str(&if json {
                format!("{}\n", serde_json::json!({ "SubscriptionRequest": jid }))
            } else {
                format!("{jid} asks to see your presence (cusaxctl approve|deny {jid})\n")
            });
        }
    }
    crate::print_text(&text)
}

async fn root_property(
    conn: &Connection,
    timeout: Duration,
    iface: &str,
    name: &str,
) -> anyhow::Result<OwnedVariant> {
    let args = (iface, name);
    let call =
        conn.call_method(Some(BUS_NAME), ROOT_PATH, Some("org.freedesktop.DBus.Properties"), "Get", &args);
    Ok(bounded(timeout, call).await?.body().deserialize()?)
}

/// `presence [SHOW [STATUS]]`: prints ours, or sets it.
pub async fn presence(
    conn: &Connection,
    timeout: Duration,
    show: Option<&str>,
    status: &str,
) -> anyhow::Result<()> {
    match show {
        None => {
            let value = root_property(conn, timeout, DAEMON_IFACE, "Presence").await?;
            let (show, status): (String, String) = value.try_into()?;
            print_line(&if status.is_empty() { show } else { format!("{show}: {status}") })
        }
        Some(show) => {
            let args = (show, status);
            let call = conn.call_method(Some(BUS_NAME), ROOT_PATH, Some(DAEMON_IFACE), "SetPresence", &args);
            bounded(timeout, call).await.map(drop)
        }
    }
}

/// `subscribe`, `approve`, `deny`.
pub async fn subscription(
    conn: &Connection,
    timeout: Duration,
    method: &str,
    jid: &str,
) -> anyhow::Result<()> {
    let call = conn.call_method(Some(BUS_NAME), ROOT_PATH, Some("org.cusax.Cusax1.Contacts"), method, &jid);
    bounded(timeout, call).await.map(drop)
}

/// `history [JID]`: the newest `limit` messages, oldest first.
pub async fn history(
    conn: &Connection,
    timeout: Duration,
    jid: Option<&str>,
    limit: u32,
    json: bool,
) -> anyhow::Result<()> {
    let mut filter: HashMap<&str, Variant<'_>> = HashMap::from([("limit", Variant::from(limit))]);
    if let Some(jid) = jid {
        filter.insert("peer", Variant::from(jid));
    }
    let call =
        conn.call_method(Some(BUS_NAME), ROOT_PATH, Some("org.cusax.Cusax1.History"), "Query", &filter);
    let page: Vec<HashMap<String, OwnedVariant>> = bounded(timeout, call).await?.body().deserialize()?;
    let mut text = String::new();
    for entry in &page {
        if json {
            let object: serde_json::Map<String, serde_json::Value> =
                entry.iter().map(|(k, v)| (k.clone(), render::to_json(v))).collect();
            text.push_str(&format!("{}\n", serde_json::Value::Object(object)));
        } else {
            text.push_str(&render::history_line(entry));
        }
    }
    crate::print_text(&text)
}
