//! The D-Bus actor: serves `org.cusax.Cusax1` on the session bus.
//!
//! zbus runs the object server on our tokio runtime (no helper thread). Method calls become
//! [`HubCommand`](crate::hub::HubCommand)s; a task follows the hub's published status and
//! emits `PropertiesChanged` for every property whose value changed.

mod call_objects;
mod chat_objects;
mod daemon_object;
mod error;

use futures_util::StreamExt;
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};
use zbus::fdo::{DBusProxy, ObjectManager};
use zbus::names::BusName;
use zbus::{Connection, connection};

use call_objects::{CallObject, CallsObject, call_path, export_call};
use chat_objects::{
    ContactObject, ContactsObject, ConversationObject, ConversationsObject, HistoryObject, contact_path,
    conversation_path, export_contact, export_conversation, received_details,
};
pub use daemon_object::DaemonObject;
pub use error::CusaxError;

use crate::hub::{DaemonStatus, HubHandle, HubSignal, ReceivedMessage};

/// The well-known name the daemon owns on the session bus.
pub const BUS_NAME: &str = "org.cusax.Cusax1";
/// The root object: `ObjectManager` and the `Daemon` interface.
pub const ROOT_PATH: &str = "/org/cusax/Cusax1";

/// Why the D-Bus service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cusaxd is already running on this session bus ({BUS_NAME} is owned{})",
        .pid.map(|p| format!(" by pid {p}")).unwrap_or_default())]
    AlreadyRunning { pid: Option<u32> },
    #[error("cannot serve {BUS_NAME} on the session bus: {0}")]
    Bus(#[from] zbus::Error),
}

/// Connects to the session bus, exports the objects, then claims [`BUS_NAME`] (only then can
/// callers reach us, so every object is in place before the first call). The name is never
/// taken over from, or handed over to, another instance.
pub async fn serve(hub: HubHandle) -> Result<Connection, ServeError> {
    let daemon = DaemonObject::new(hub.clone());
    // The baseline is taken before anyone can call us, so no change slips by unsignalled.
    let mut status = hub.status();
    let shown = status.borrow_and_update().clone();
    let signals = hub.signals();
    let built = connection::Builder::session()
        .serve_at(ROOT_PATH, ObjectManager)
        .serve_at(ROOT_PATH, daemon)
        .serve_at(ROOT_PATH, CallsObject { hub: hub.clone(), status: hub.status() })
        .serve_at(ROOT_PATH, ConversationsObject { hub: hub.clone(), status: hub.status() })
        .serve_at(ROOT_PATH, ContactsObject { hub: hub.clone(), status: hub.status() })
        .serve_at(ROOT_PATH, HistoryObject { hub: hub.clone() })
        .name(BUS_NAME)
        .allow_name_replacements(false)
        .replace_existing_names(false)
        .build()
        .await;
    let conn = match built {
        Ok(conn) => conn,
        Err(zbus::Error::NameTaken) => {
            return Err(ServeError::AlreadyRunning { pid: owner_pid().await });
        }
        Err(e) => return Err(e.into()),
    };
    tokio::spawn(publish_changes(conn.clone(), hub.clone(), status, shown));
    tokio::spawn(emit_signals(conn.clone(), hub.clone(), signals));
    Ok(conn)
}

/// Resolves once we no longer own [`BUS_NAME`]: the bus went away (the session ended), or
/// the name was taken. Either way this daemon can no longer be reached.
pub async fn name_lost(conn: &Connection) -> zbus::Result<()> {
    let proxy = DBusProxy::new(conn).await?;
    let mut lost = proxy.receive_name_lost().await?;
    while let Some(signal) = lost.next().await {
        if signal.args()?.name() == BUS_NAME {
            return Ok(());
        }
    }
    Ok(())
}

/// The pid of the process that owns [`BUS_NAME`], to name it in the "already running" error.
async fn owner_pid() -> Option<u32> {
    let conn = Connection::session().await.ok()?;
    let proxy = DBusProxy::new(&conn).await.ok()?;
    let name = BusName::try_from(BUS_NAME).ok()?;
    proxy.get_connection_unix_process_id(name).await.ok()
}

/// Emits `PropertiesChanged` for each `Daemon` property whose value differs from the last
/// published snapshot. Ends when the hub is gone.
async fn publish_changes(
    conn: Connection,
    hub: HubHandle,
    mut status: watch::Receiver<DaemonStatus>,
    mut shown: DaemonStatus,
) {
    while status.changed().await.is_ok() {
        let now = status.borrow_and_update().clone();
        if let Err(e) = emit_changes(&conn, &shown, &now).await {
            warn!(error = %e, "could not signal a property change");
        }
        if let Err(e) = publish_calls(&conn, &hub, &shown, &now).await {
            warn!(error = %e, "could not publish a call change");
        }
        if let Err(e) = publish_conversations(&conn, &hub, &shown, &now).await {
            warn!(error = %e, "could not publish a conversation change");
        }
        if let Err(e) = publish_contacts(&conn, &hub, &shown, &now).await {
            warn!(error = %e, "could not publish a contact change");
        }
        shown = now;
    }
    debug!("hub gone; no more property changes");
}

/// Emits the hub's signals on their objects. Ends when the hub is gone.
async fn emit_signals(conn: Connection, hub: HubHandle, mut signals: broadcast::Receiver<HubSignal>) {
    loop {
        match signals.recv().await {
            Ok(HubSignal::DtmfReceived { call, digits }) => {
                let emitted = async {
                    let iface = conn.object_server().interface::<_, CallObject>(call_path(call)).await?;
                    CallObject::dtmf_received(iface.signal_emitter(), &digits).await
                };
                if let Err(e) = emitted.await {
                    warn!(error = %e, "could not signal a DTMF digit");
                }
            }
            Ok(HubSignal::MessageReceived(received)) => {
                let ReceivedMessage { conversation, from, message, via, delayed } = *received;
                let emitted = async {
                    let Some(iface) = conversation_interface(&conn, &hub, conversation).await? else {
                        return Ok(());
                    };
                    let details = received_details(&message, via, delayed);
                    let emitter = iface.signal_emitter();
                    ConversationObject::message_received(
                        emitter,
                        &message.uid,
                        &from,
                        &message.body,
                        message.at_ms,
                        details,
                    )
                    .await
                };
                if let Err(e) = emitted.await {
                    warn!(error = %e, "could not signal a message");
                }
            }
            Ok(HubSignal::MessageStatus { conversation, uid, status }) => {
                let emitted = async {
                    let Some(iface) = conversation_interface(&conn, &hub, conversation).await? else {
                        return Ok(());
                    };
                    ConversationObject::message_status(iface.signal_emitter(), &uid, status.as_str()).await
                };
                if let Err(e) = emitted.await {
                    warn!(error = %e, "could not signal a message status");
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => warn!(missed, "signals dropped"),
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

async fn emit_changes(conn: &Connection, before: &DaemonStatus, now: &DaemonStatus) -> zbus::Result<()> {
    let iface = conn.object_server().interface::<_, DaemonObject>(ROOT_PATH).await?;
    let emitter = iface.signal_emitter();
    let object = iface.get().await;
    if before.sip_state != now.sip_state {
        object.sip_state_changed(emitter).await?;
    }
    if before.sip_state_reason != now.sip_state_reason {
        object.sip_state_reason_changed(emitter).await?;
    }
    if before.xmpp_state != now.xmpp_state {
        object.xmpp_state_changed(emitter).await?;
    }
    if before.xmpp_state_reason != now.xmpp_state_reason {
        object.xmpp_state_reason_changed(emitter).await?;
    }
    if before.sip_address != now.sip_address {
        object.sip_address_changed(emitter).await?;
    }
    if before.jid != now.jid {
        object.jid_changed(emitter).await?;
    }
    if before.presence != now.presence {
        object.presence_changed(emitter).await?;
    }
    Ok(())
}

/// Adds and removes call objects (ObjectManager announces them), and signals their changes.
async fn publish_calls(
    conn: &Connection,
    hub: &HubHandle,
    before: &DaemonStatus,
    now: &DaemonStatus,
) -> zbus::Result<()> {
    let server = conn.object_server();
    for (id, info) in &now.calls {
        let previous = before.calls.get(id);
        if previous.is_none() {
            export_call(server, hub, *id).await?;
        }
        let iface = server.interface::<_, CallObject>(call_path(*id)).await?;
        let emitter = iface.signal_emitter();
        let object = iface.get().await;
        if previous.is_some_and(|p| p.state != info.state) {
            object.state_changed(emitter).await?;
        }
        if previous.is_some_and(|p| p.reason != info.reason) {
            object.state_reason_changed(emitter).await?;
        }
        if previous.is_some_and(|p| p.remote_name != info.remote_name) {
            object.remote_name_changed(emitter).await?;
        }
        if let Some(p) = previous.filter(|p| p.link != info.link) {
            let (old, new) = (&p.link, &info.link);
            if old.conversation != new.conversation {
                object.conversation_changed(emitter).await?;
            }
            if old.correlated != new.correlated {
                object.correlated_changed(emitter).await?;
            }
            if old.contact != new.contact {
                object.contact_changed(emitter).await?;
            }
            if old.contact_verified != new.contact_verified {
                object.contact_verified_changed(emitter).await?;
            }
            if old.peer_jid != new.peer_jid {
                object.peer_jid_changed(emitter).await?;
            }
        }
        if let Some(p) = previous {
            if p.media.state != info.media.state {
                object.media_state_changed(emitter).await?;
            }
            if p.media.reason != info.media.reason {
                object.media_state_reason_changed(emitter).await?;
            }
            if p.media.stats != info.media.stats {
                object.media_stats_changed(emitter).await?;
            }
        }
    }
    for id in before.calls.keys().filter(|id| !now.calls.contains_key(id)) {
        server.remove::<CallObject, _>(call_path(*id)).await?;
    }
    if before.calls.keys().ne(now.calls.keys()) {
        let iface = server.interface::<_, CallsObject>(ROOT_PATH).await?;
        iface.get().await.calls_changed(iface.signal_emitter()).await?;
    }
    Ok(())
}

/// The interface of conversation `id`, exported first if the signal outran the publisher
/// (a message that opened the conversation); `None` once it is closed.
async fn conversation_interface(
    conn: &Connection,
    hub: &HubHandle,
    id: crate::hub::ConversationId,
) -> zbus::Result<Option<zbus::object_server::InterfaceRef<ConversationObject>>> {
    if !hub.status().borrow().conversations.contains_key(&id) {
        return Ok(None);
    }
    let server = conn.object_server();
    export_conversation(server, hub, id).await?;
    server.interface::<_, ConversationObject>(conversation_path(id)).await.map(Some)
}

/// Adds and removes conversation objects, and signals their changes.
async fn publish_conversations(
    conn: &Connection,
    hub: &HubHandle,
    before: &DaemonStatus,
    now: &DaemonStatus,
) -> zbus::Result<()> {
    let server = conn.object_server();
    for (id, info) in &now.conversations {
        let previous = before.conversations.get(id);
        if previous.is_none() {
            export_conversation(server, hub, *id).await?;
        }
        let Some(p) = previous else { continue };
        let iface = server.interface::<_, ConversationObject>(conversation_path(*id)).await?;
        let emitter = iface.signal_emitter();
        let object = iface.get().await;
        if p.peer_resource != info.peer_resource {
            object.peer_resource_changed(emitter).await?;
        }
        if p.chat_state != info.chat_state {
            object.chat_state_changed(emitter).await?;
        }
        if p.contact != info.contact {
            object.contact_changed(emitter).await?;
        }
        let calls_of = |s: &DaemonStatus| -> Vec<crate::sip::CallId> {
            s.calls.iter().filter(|(_, c)| c.link.conversation == Some(*id)).map(|(c, _)| *c).collect()
        };
        if calls_of(before) != calls_of(now) {
            object.calls_changed(emitter).await?;
        }
    }
    for id in before.conversations.keys().filter(|id| !now.conversations.contains_key(id)) {
        server.remove::<ConversationObject, _>(conversation_path(*id)).await?;
    }
    if before.conversations.keys().ne(now.conversations.keys()) {
        let iface = server.interface::<_, ConversationsObject>(ROOT_PATH).await?;
        iface.get().await.conversations_changed(iface.signal_emitter()).await?;
    }
    Ok(())
}

/// Adds and removes contact objects, and signals their changes; only the contacts that
/// changed are looked at.
async fn publish_contacts(
    conn: &Connection,
    hub: &HubHandle,
    before: &DaemonStatus,
    now: &DaemonStatus,
) -> zbus::Result<()> {
    use imbl::ordmap::DiffItem;
    let server = conn.object_server();
    let mut membership = false;
    for change in before.contacts.diff(&now.contacts) {
        match change {
            DiffItem::Add(id, _) => {
                export_contact(server, hub, *id).await?;
                membership = true;
            }
            DiffItem::Remove(id, _) => {
                server.remove::<ContactObject, _>(contact_path(*id)).await?;
                membership = true;
            }
            DiffItem::Update { old: (_, old), new: (id, new) } => {
                let iface = server.interface::<_, ContactObject>(contact_path(*id)).await?;
                let emitter = iface.signal_emitter();
                let object = iface.get().await;
                if old.name != new.name {
                    object.name_changed(emitter).await?;
                }
                if old.presence() != new.presence() {
                    object.presence_changed(emitter).await?;
                }
                if old.resources != new.resources {
                    object.resources_changed(emitter).await?;
                }
                if old.capabilities() != new.capabilities() {
                    object.capabilities_changed(emitter).await?;
                }
                if old.subscription != new.subscription {
                    object.subscription_changed(emitter).await?;
                }
                if old.asked != new.asked {
                    object.subscription_pending_changed(emitter).await?;
                }
                if old.telephones != new.telephones {
                    object.telephones_changed(emitter).await?;
                }
                if old.sip_addresses() != new.sip_addresses() {
                    object.sip_addresses_changed(emitter).await?;
                }
                if old.numbers() != new.numbers() {
                    object.numbers_changed(emitter).await?;
                }
                if old.sip_status() != new.sip_status() {
                    object.sip_status_changed(emitter).await?;
                }
                if old.verified() != new.verified() {
                    object.verified_changed(emitter).await?;
                }
            }
        }
    }
    let iface = server.interface::<_, ContactsObject>(ROOT_PATH).await?;
    if membership {
        iface.get().await.contacts_changed(iface.signal_emitter()).await?;
    }
    if before.subscription_requests != now.subscription_requests {
        iface.get().await.subscription_requests_changed(iface.signal_emitter()).await?;
    }
    Ok(())
}
