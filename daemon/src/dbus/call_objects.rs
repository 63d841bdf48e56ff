//! `org.cusax.Cusax1.Calls` on the root object, and one `/org/cusax/Cusax1/call/N` object per
//! call with `org.cusax.Cusax1.Call`. Both read the hub's published status; methods become hub
//! commands.

use std::collections::HashMap;

use tokio::sync::watch;
use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::{OwnedObjectPath, OwnedVariant, Variant, interface};

use super::{CusaxError, ROOT_PATH};
use cusax_protocol::media::dtmf::{MAX_PENDING_DIGITS, event_for_digit};

use super::chat_objects::{contact_path, conversation_path, export_conversation, root_path};
use crate::hub::{CallInfo, CallState, DaemonStatus, HubHandle, MessagingCommand};
use crate::sip::CallId;

/// The object path of call `id`.
pub fn call_path(id: CallId) -> OwnedObjectPath {
    // A number after a fixed prefix is always a valid path.
    OwnedObjectPath::try_from(format!("{ROOT_PATH}/call/{id}")).unwrap_or_default()
}

/// The object of a call just placed: it goes out with its first state, not before the hub
/// has it.
pub async fn exported_call(
    server: &ObjectServer,
    hub: &HubHandle,
    id: CallId,
) -> Result<OwnedObjectPath, CusaxError> {
    let mut status = hub.status();
    let known = status.wait_for(|s| s.calls.contains_key(&id));
    if tokio::time::timeout(std::time::Duration::from_secs(1), known).await.is_err() {
        return Err(CusaxError::Failed("the call was placed but not reported in time".into()));
    }
    export_call(server, hub, id).await?;
    Ok(call_path(id))
}

/// Exports call `id` unless it already is (the publisher and PlaceCall both get here).
pub async fn export_call(server: &ObjectServer, hub: &HubHandle, id: CallId) -> zbus::Result<()> {
    server.at(call_path(id), CallObject { id, hub: hub.clone(), status: hub.status() }).await.map(|_| ())
}

pub struct CallsObject {
    pub hub: HubHandle,
    pub status: watch::Receiver<DaemonStatus>,
}

/// Placing calls, and the list of calls.
#[interface(name = "org.cusax.Cusax1.Calls")]
impl CallsObject {
    /// Calls target: a sip: or sips: URI, a tel: URI, an E.164 number (+...), or a JID
    /// (user@host or xmpp:user@host: the SIP address that contact published, in a chat
    /// thread, their presence or their vCard). A contact we share with learns our JID from
    /// the INVITE, and a running chat with them is linked to the call. options: none yet;
    /// unknown keys fail with InvalidArgument. Returns the new call's object. Fails with
    /// InvalidAddress or NotRegistered.
    #[zbus(out_args("call"))]
    async fn place_call(
        &self,
        target: String,
        options: HashMap<String, OwnedVariant>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, CusaxError> {
        if let Some(key) = options.keys().next() {
            return Err(CusaxError::InvalidArgument(format!("unknown option {key:?}")));
        }
        let id = self.hub.place_call(target).await?;
        exported_call(server, &self.hub, id).await
    }

    /// The calls there are, in the order they began.
    #[zbus(property)]
    fn calls(&self) -> Vec<OwnedObjectPath> {
        self.status.borrow().calls.keys().map(|id| call_path(*id)).collect()
    }
}

/// One call.
pub struct CallObject {
    id: CallId,
    hub: HubHandle,
    status: watch::Receiver<DaemonStatus>,
}

impl CallObject {
    fn info<T>(&self, read: impl FnOnce(&CallInfo) -> T, missing: T) -> T {
        self.status.borrow().calls.get(&self.id).map_or(missing, read)
    }
}

/// A call, incoming or outgoing.
#[interface(name = "org.cusax.Cusax1.Call")]
impl CallObject {
    /// Answers an incoming call.
    async fn answer(&self) -> Result<(), CusaxError> {
        Ok(self.hub.answer(self.id).await?)
    }

    /// Ends the call: hangs up, cancels while it rings there, declines while it rings here.
    async fn hangup(&self) -> Result<(), CusaxError> {
        Ok(self.hub.hangup(self.id).await?)
    }

    /// Puts the call on hold (a re-INVITE with sendonly media).
    async fn hold(&self) -> Result<(), CusaxError> {
        Ok(self.hub.hold(self.id, true).await?)
    }

    /// Takes the call off hold.
    async fn resume(&self) -> Result<(), CusaxError> {
        Ok(self.hub.hold(self.id, false).await?)
    }

    /// Sends digits (0-9, *, #, A-D; at most 64 queued) as RFC 4733 telephone-events, one
    /// after another. Fails with InvalidArgument for other characters, Failed when the call
    /// has no media, is held, or the peer did not agree to telephone-event.
    async fn send_dtmf(&self, digits: &str) -> Result<(), CusaxError> {
        if digits.is_empty() || digits.chars().count() > MAX_PENDING_DIGITS {
            return Err(CusaxError::InvalidArgument(format!("give 1 to {MAX_PENDING_DIGITS} digits")));
        }
        if let Some(bad) = digits.chars().find(|c| event_for_digit(*c).is_none()) {
            return Err(CusaxError::InvalidArgument(format!("{bad:?} is not a DTMF digit (0-9, *, #, A-D)")));
        }
        Ok(self.hub.send_dtmf(self.id, digits.to_owned()).await?)
    }

    /// Opens a chat with the far end, on the JID it named (its XMPP-Contact full JID, else its
    /// roster contact or Call-Info JID). To a contact we share with, the first message
    /// carries the call's correlation token, and the chat is linked to the call (Correlated
    /// once their reply echoes it). Returns the conversation's object. Fails with
    /// InvalidAddress when the far end named no JID, NotConfigured without an XMPP account.
    #[zbus(out_args("conversation"))]
    async fn start_chat(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, CusaxError> {
        let call = self.id;
        let id = self.hub.messaging(|reply| MessagingCommand::StartChat { call, reply }).await?;
        export_conversation(server, &self.hub, id).await?;
        Ok(conversation_path(id))
    }

    /// The conversation this call belongs to, or "/".
    #[zbus(property)]
    fn conversation(&self) -> OwnedObjectPath {
        self.info(|c| c.link.conversation.map(conversation_path), None).unwrap_or_else(root_path)
    }

    /// Both sides know the call and the conversation belong together: the far end echoed
    /// our thread (XMPP-Thread) or token (sip-correlation), or we matched its thread and echo it.
    #[zbus(property)]
    fn correlated(&self) -> bool {
        self.info(|c| c.link.correlated, false)
    }

    /// The roster contact the far end is (by the JID it named, or the conversation's peer),
    /// or "/".
    #[zbus(property)]
    fn contact(&self) -> OwnedObjectPath {
        self.info(|c| c.link.contact.map(contact_path), None).unwrap_or_else(root_path)
    }

    /// That contact's own vCard lists the far end's SIP identity (RFC 7081 3.5); false means
    /// Contact is a hint.
    #[zbus(property)]
    fn contact_verified(&self) -> bool {
        self.info(|c| c.link.contact_verified, false)
    }

    /// The JID the far end named in its XMPP-Contact (full) or Call-Info (bare), or "".
    #[zbus(property)]
    fn peer_jid(&self) -> String {
        self.info(|c| c.link.peer_jid.clone(), String::new())
    }

    /// Digits the far end sent (RFC 4733), as they arrive.
    #[zbus(signal)]
    pub async fn dtmf_received(emitter: &SignalEmitter<'_>, digits: &str) -> zbus::Result<()>;

    /// Whether we send silence instead of the microphone (DTMF still goes out). Writable,
    /// also before the media starts.
    #[zbus(property)]
    fn muted(&self) -> bool {
        self.info(|c| c.muted, false)
    }

    #[zbus(property)]
    async fn set_muted(&mut self, muted: bool) -> Result<(), zbus::fdo::Error> {
        self.hub.mute(self.id, muted).await.map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        // zbus signals the change with the getter's value once this returns: wait until the
        // snapshot has it (the publisher leaves Muted to zbus, so it is signalled once).
        let settled = self
            .status
            .clone()
            .wait_for(|s| s.calls.get(&self.id).is_none_or(|c| c.muted == muted))
            .await
            .is_ok();
        if !settled {
            return Err(zbus::fdo::Error::Failed("the daemon is shutting down".into()));
        }
        Ok(())
    }

    /// none (no media: not yet, declined, or ended), active, or failed (a sound device or file could not be used; the
    /// call stays up).
    #[zbus(property)]
    fn media_state(&self) -> String {
        self.info(|c| c.media.state.as_str().to_owned(), String::new())
    }

    /// Why the media failed, for people; "" otherwise.
    #[zbus(property)]
    fn media_state_reason(&self) -> String {
        self.info(|c| c.media.reason.clone(), String::new())
    }

    /// codec (s), packets-sent, packets-received, packets-lost, packets-late,
    /// frames-concealed (t), jitter-ms, jitter-buffer-ms (u), and rtt-ms (u) once RTCP has
    /// measured it. Updated at most once a second.
    #[zbus(property)]
    fn media_stats(&self) -> HashMap<String, OwnedVariant> {
        self.info(
            |c| {
                let stats = &c.media.stats;
                let mut map = HashMap::new();
                let mut put = |key: &str, value: Variant<'_>| {
                    if let Ok(value) = value.try_to_owned() {
                        map.insert(key.to_owned(), value);
                    }
                };
                put("codec", Variant::from(stats.codec.clone()));
                put("packets-sent", Variant::from(stats.packets_sent));
                put("packets-received", Variant::from(stats.packets_received));
                put("packets-lost", Variant::from(stats.packets_lost));
                put("packets-late", Variant::from(stats.packets_late));
                put("frames-concealed", Variant::from(stats.frames_concealed));
                put("jitter-ms", Variant::from(stats.jitter_ms));
                put("jitter-buffer-ms", Variant::from(stats.buffer_ms));
                if let Some(rtt) = stats.rtt_ms {
                    put("rtt-ms", Variant::from(rtt));
                }
                map
            },
            HashMap::new(),
        )
    }

    /// dialing, ringing, incoming, active, held or ended.
    #[zbus(property)]
    fn state(&self) -> String {
        self.info(|c| c.state.as_str().to_owned(), CallState::Ended.as_str().to_owned())
    }

    /// Why the call is in its state, for people: for an ended call who hung up, busy,
    /// declined, no answer, with the SIP status where there was one.
    #[zbus(property)]
    fn state_reason(&self) -> String {
        self.info(|c| c.reason.clone(), String::new())
    }

    /// incoming or outgoing.
    #[zbus(property(emits_changed_signal = "const"))]
    fn direction(&self) -> String {
        self.info(|c| c.direction.as_str().to_owned(), String::new())
    }

    /// The far end's SIP URI.
    #[zbus(property(emits_changed_signal = "const"))]
    fn remote_uri(&self) -> String {
        self.info(|c| c.remote_uri.clone(), String::new())
    }

    /// The far end's display name, when it gave one; "" otherwise.
    #[zbus(property)]
    fn remote_name(&self) -> String {
        self.info(|c| c.remote_name.clone(), String::new())
    }
}
