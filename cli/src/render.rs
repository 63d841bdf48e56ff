//! How D-Bus values and signals look on the terminal: human lines, or JSON objects.

use std::collections::HashMap;

use serde_json::{Value as Json, json};
use zbus::{OwnedVariant as OwnedValue, Variant as Value};

/// One thing `watch` reports, printable as a human line or a JSON object.
pub struct Event {
    human: String,
    json: Json,
}

impl Event {
    pub fn line(&self, json: bool) -> String {
        if json { self.json.to_string() } else { self.human.clone() }
    }
}

/// A D-Bus value as JSON: structs become arrays, dicts objects, object paths strings.
pub fn to_json(value: &Value<'_>) -> Json {
    match value {
        Value::U8(v) => json!(v),
        Value::Bool(v) => json!(v),
        Value::I16(v) => json!(v),
        Value::U16(v) => json!(v),
        Value::I32(v) => json!(v),
        Value::U32(v) => json!(v),
        Value::I64(v) => json!(v),
        Value::U64(v) => json!(v),
        Value::F64(v) => json!(v),
        Value::Str(v) => json!(v.as_str()),
        Value::Signature(v) => json!(v.to_string()),
        Value::ObjectPath(v) => json!(v.as_str()),
        Value::Variant(v) => to_json(v),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Dict(dict) => Json::Object(
            dict.iter()
                .map(|(k, v)| match to_json(k) {
                    Json::String(key) => (key, to_json(v)),
                    other => (other.to_string(), to_json(v)),
                })
                .collect(),
        ),
        Value::Structure(s) => Json::Array(s.fields().iter().map(to_json).collect()),
        Value::Fd(fd) => json!(format!("fd {fd:?}")),
    }
}

/// A value on one human line: strings quoted, containers as JSON.
fn human(value: &Value<'_>) -> String {
    to_json(value).to_string()
}

/// The human `status` text, from the Daemon interface's properties.
pub fn status_text(properties: &HashMap<String, OwnedValue>) -> String {
    let text = |name: &str| match properties.get(name).map(|v| to_json(v)) {
        Some(Json::String(s)) => s,
        Some(other) => other.to_string(),
        None => "?".to_owned(),
    };
    let with_address = |state: String, address: String| {
        if address.is_empty() { state } else { format!("{state:<13} {address}") }
    };
    let presence = match properties.get("Presence").map(|v| to_json(v)) {
        Some(Json::Array(parts)) => {
            let show = parts.first().and_then(Json::as_str).unwrap_or("?");
            match parts.get(1).and_then(Json::as_str) {
                Some(status) if !status.is_empty() => format!("{show} ({status})"),
                _ => show.to_owned(),
            }
        }
        _ => "?".to_owned(),
    };
    format!(
        "cusaxd {}\nSIP       {}\nXMPP      {}\nPresence  {}\n",
        text("Version"),
        with_address(text("SipState"), text("SipAddress")),
        with_address(text("XmppState"), text("Jid")),
        presence
    )
}

/// One line of `cusaxctl calls`.
pub fn call_line(path: &str, properties: &HashMap<String, OwnedValue>) -> String {
    let text = |name: &str| match properties.get(name).map(|v| to_json(v)) {
        Some(Json::String(s)) => s,
        _ => String::new(),
    };
    let name = path.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/");
    let reason = text("StateReason");
    let reason = if reason.is_empty() { String::new() } else { format!("  ({reason})") };
    let mut line =
        format!("{name:<8} {:<9} {:<9} {}{reason}\n", text("State"), text("Direction"), text("RemoteUri"));
    let media = media_line(properties);
    if !media.is_empty() {
        line.push_str(&format!("         {media}\n"));
    }
    let link = link_line(properties);
    if !link.is_empty() {
        line.push_str(&format!("         {link}\n"));
    }
    line
}

/// What a call is linked to on XMPP: its conversation (correlated or not), the contact and
/// the JID the far end named.
fn link_line(properties: &HashMap<String, OwnedValue>) -> String {
    let json = |name: &str| properties.get(name).map(|v| to_json(v)).unwrap_or(Json::Null);
    let object = |name: &str| match json(name) {
        Json::String(p) if p != "/" => {
            p.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/")
        }
        _ => String::new(),
    };
    let mut parts = Vec::new();
    let conversation = object("Conversation");
    if !conversation.is_empty() {
        let how = if json("Correlated") == Json::Bool(true) { "correlated" } else { "not confirmed" };
        parts.push(format!("chat {conversation} ({how})"));
    }
    let contact = object("Contact");
    if !contact.is_empty() {
        let how = if json("ContactVerified") == Json::Bool(true) { "verified" } else { "unverified" };
        parts.push(format!("contact {contact} ({how})"));
    }
    if let Json::String(jid) = json("PeerJid")
        && !jid.is_empty()
    {
        parts.push(format!("xmpp:{jid}"));
    }
    parts.join(", ")
}

/// The media part of a call: state, mute, and the figures of `MediaStats`.
fn media_line(properties: &HashMap<String, OwnedValue>) -> String {
    let json = |name: &str| properties.get(name).map(|v| to_json(v)).unwrap_or(Json::Null);
    let state = match json("MediaState") {
        Json::String(s) if s != "none" => s,
        _ => return String::new(),
    };
    let mut parts = vec![match json("MediaStateReason") {
        Json::String(reason) if !reason.is_empty() => format!("media {state} ({reason})"),
        _ => format!("media {state}"),
    }];
    if json("Muted") == Json::Bool(true) {
        parts.push("muted".into());
    }
    if let Json::Object(stats) = json("MediaStats") {
        let figure = |key: &str| stats.get(key).map(|v| v.to_string().trim_matches('"').to_owned());
        for (key, label) in [
            ("codec", "codec"),
            ("packets-sent", "sent"),
            ("packets-received", "received"),
            ("packets-lost", "lost"),
            ("packets-late", "late"),
            ("frames-concealed", "concealed"),
            ("jitter-ms", "jitter ms"),
            ("jitter-buffer-ms", "buffer ms"),
            ("rtt-ms", "rtt ms"),
        ] {
            if let Some(value) = figure(key) {
                parts.push(format!("{label} {value}"));
            }
        }
    }
    parts.join(", ")
}

pub fn property_events(
    path: &str,
    interface: &str,
    changed: &HashMap<String, OwnedValue>,
    invalidated: &[String],
) -> Vec<Event> {
    let mut names: Vec<&String> = changed.keys().collect();
    names.sort();
    let mut events: Vec<Event> = names
        .into_iter()
        .map(|name| {
            let value = &changed[name];
            Event {
                human: format!("{path} {interface}.{name} = {}", human(value)),
                json: json!({"event": "property", "path": path, "interface": interface,
                             "property": name, "value": to_json(value)}),
            }
        })
        .collect();
    events.extend(invalidated.iter().map(|name| Event {
        human: format!("{path} {interface}.{name} changed"),
        json: json!({"event": "property", "path": path, "interface": interface, "property": name}),
    }));
    events
}

pub fn object_added(path: &str, interfaces: &HashMap<String, HashMap<String, OwnedValue>>) -> Event {
    let mut names: Vec<&str> = interfaces.keys().map(String::as_str).collect();
    names.sort();
    let properties: serde_json::Map<String, Json> = interfaces
        .iter()
        .map(|(iface, props)| {
            let props = props.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
            (iface.clone(), Json::Object(props))
        })
        .collect();
    Event {
        human: format!("{path} added ({})", names.join(", ")),
        json: json!({"event": "added", "path": path, "interfaces": properties}),
    }
}

pub fn object_removed(path: &str, interfaces: &[String]) -> Event {
    Event {
        human: format!("{path} removed ({})", interfaces.join(", ")),
        json: json!({"event": "removed", "path": path, "interfaces": interfaces}),
    }
}

pub fn daemon_presence(running: bool) -> Event {
    let state = if running { "started" } else { "stopped" };
    Event { human: format!("cusaxd {state}"), json: json!({"event": "daemon", "state": state}) }
}

pub fn signal(path: &str, interface: &str, member: &str, args: &[Value<'_>]) -> Event {
    let args: Vec<Json> = args.iter().map(to_json).collect();
    let shown: Vec<String> = args.iter().map(Json::to_string).collect();
    Event {
        human: format!("{path} {interface}.{member}({})", shown.join(", ")),
        json: json!({"event": "signal", "path": path, "interface": interface, "member": member, "args": args}),
    }
}

/// Unix ms as UTC date and time, to the second.
pub fn time_of(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map_or_else(|| unix_ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// One object as a JSON line (with its path), or as the text `line` makes of it.
pub fn object_line(
    path: &str,
    properties: &HashMap<String, OwnedValue>,
    json: bool,
    line: fn(&HashMap<String, OwnedValue>) -> String,
) -> String {
    if !json {
        return line(properties);
    }
    let mut object: serde_json::Map<String, Json> =
        properties.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
    object.insert("Path".into(), Json::String(path.to_owned()));
    format!("{}\n", Json::Object(object))
}

/// A roster contact: JID, name, presence, subscription, capabilities.
pub fn contact_line(properties: &HashMap<String, OwnedValue>) -> String {
    let json = |name: &str| properties.get(name).map(|v| to_json(v)).unwrap_or(Json::Null);
    let text = |name: &str| match json(name) {
        Json::String(s) => s,
        _ => String::new(),
    };
    let presence = match json("Presence") {
        Json::Array(parts) => {
            let part = |i: usize| parts.get(i).and_then(|p| p.as_str()).unwrap_or_default().to_owned();
            let (show, status) = (part(0), part(1));
            if status.is_empty() { show } else { format!("{show}: {status}") }
        }
        _ => String::new(),
    };
    let name = text("Name");
    let name = if name.is_empty() { String::new() } else { format!(" ({name})") };
    let mut subscription = text("Subscription");
    if json("SubscriptionPending") == Json::Bool(true) {
        subscription.push_str(", asked");
    }
    let list = |name: &str| match json(name) {
        Json::Array(c) => c.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    let capabilities = list("Capabilities");
    let capabilities =
        if capabilities.is_empty() { String::new() } else { format!("  [{}]", capabilities.join(", ")) };
    let mut line = format!("{}{name}  {presence}  subscription {subscription}{capabilities}\n", text("Jid"));
    let addresses: Vec<String> = list("SipAddresses").into_iter().chain(list("Numbers")).collect();
    let sip = text("SipStatus");
    if !addresses.is_empty() || !matches!(sip.as_str(), "" | "unknown") {
        let verified = if json("Verified") == Json::Bool(true) { "verified" } else { "unverified" };
        line.push_str(&format!("    SIP {sip}  {} ({verified})\n", addresses.join(" ")));
    }
    line
}

/// `cusaxctl lookup`: the contact on both networks.
pub fn lookup_text(properties: &HashMap<String, OwnedValue>) -> String {
    let json = |name: &str| properties.get(name).map(|v| to_json(v)).unwrap_or(Json::Null);
    let list = |name: &str| match json(name) {
        Json::Array(items) => items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    };
    let text = |name: &str| match json(name) {
        Json::String(s) => s,
        other => other.to_string(),
    };
    let verified = if json("AddressVerified") == Json::Bool(true) {
        "yes (their own vCard lists it)"
    } else {
        "no (a hint)"
    };
    format!(
        "JID       {}\nSIP       {}\nNumbers   {}\nVerified  {verified}\nSipStatus {}\n",
        text("Jid"),
        list("SipAddresses"),
        list("Numbers"),
        text("SipStatus")
    )
}

/// A History.Query entry: time, direction, peer, body and status.
pub fn history_line(entry: &HashMap<String, OwnedValue>) -> String {
    let json = |name: &str| entry.get(name).map(|v| to_json(v)).unwrap_or(Json::Null);
    let text = |name: &str| match json(name) {
        Json::String(s) => s,
        _ => String::new(),
    };
    let at = json("unix_ms").as_i64().map(time_of).unwrap_or_default();
    let arrow = if text("direction") == "in" { "<-" } else { "->" };
    format!("{at} {arrow} {}: {}  [{}]\n", text("peer"), text("body"), text("status"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::ObjectPath;
    use zbus::wire::StructureBuilder;

    #[test]
    fn values_become_json() {
        assert_eq!(to_json(&Value::from("sip:a@b")), json!("sip:a@b"));
        assert_eq!(to_json(&Value::from(true)), json!(true));
        let pair = StructureBuilder::new().add_field("away").add_field("On the phone").build().unwrap();
        assert_eq!(to_json(&Value::from(pair)), json!(["away", "On the phone"]));
        let path = ObjectPath::try_from("/org/cusax/Cusax1/call/1").unwrap();
        assert_eq!(to_json(&Value::from(path)), json!("/org/cusax/Cusax1/call/1"));
        assert_eq!(to_json(&Value::from(vec!["audio", "video"])), json!(["audio", "video"]));
    }

    #[test]
    fn property_change_lines() {
        let mut changed = HashMap::new();
        changed.insert("SipAddress".to_owned(), OwnedValue::try_from(Value::from("sip:bob@x")).unwrap());
        let events = property_events("/org/cusax/Cusax1", "org.cusax.Cusax1.Daemon", &changed, &[]);
        assert_eq!(
            events[0].line(false),
            "/org/cusax/Cusax1 org.cusax.Cusax1.Daemon.SipAddress = \"sip:bob@x\""
        );
        let json: Json = serde_json::from_str(&events[0].line(true)).unwrap();
        assert_eq!(json["property"], "SipAddress");
        assert_eq!(json["value"], "sip:bob@x");
    }
}
