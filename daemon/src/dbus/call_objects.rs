//! `org.cusax.Cusax1.Calls` on the root object, and one `/org/cusax/Cusax1/call/N` object per
//! call with `org.cusax.Cusax1.Call`. Both read the hub's published status; methods become hub
//! commands.

use std::collections::HashMap;

use tokio::sync::watch;
use zbus::object_server::ObjectServer;
use zbus::{OwnedObjectPath, OwnedVariant, interface};

use super::{CusaxError, ROOT_PATH};
use crate::hub::{CallInfo, CallState, DaemonStatus, HubHandle};
use crate::sip::CallId;

/// The object path of call `id`.
pub fn call_path(id: CallId) -> OwnedObjectPath {
    // A number after a fixed prefix is always a valid path.
    OwnedObjectPath::try_from(format!("{ROOT_PATH}/call/{id}")).unwrap_or_default()
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
    /// Calls target: a sip: or sips: URI, a tel: URI or an E.164 number (+...). options: none
    /// yet (video and conversation come later); unknown keys fail with InvalidArgument.
    /// Returns the new call's object. Fails with InvalidAddress or NotRegistered.
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
        // The object goes out with its first state, not before the hub has it.
        let mut status = self.hub.status();
        let known = status.wait_for(|s| s.calls.contains_key(&id));
        if tokio::time::timeout(std::time::Duration::from_secs(1), known).await.is_err() {
            return Err(CusaxError::Failed("the call was placed but not reported in time".into()));
        }
        export_call(server, &self.hub, id).await?;
        Ok(call_path(id))
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
