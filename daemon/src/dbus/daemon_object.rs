//! `/org/cusax/Cusax1`, interface `org.cusax.Cusax1.Daemon`: the daemon itself.

use tokio::sync::watch;
use zbus::interface;

use super::CusaxError;
use crate::hub::{DaemonStatus, HubHandle, MessagingCommand};

/// Serves the daemon's own properties from the hub's published status.
pub struct DaemonObject {
    hub: HubHandle,
    status: watch::Receiver<DaemonStatus>,
}

impl DaemonObject {
    pub fn new(hub: HubHandle) -> Self {
        let status = hub.status();
        Self { hub, status }
    }
}

/// The cusax daemon: its accounts' states and its own presence.
#[interface(name = "org.cusax.Cusax1.Daemon")]
impl DaemonObject {
    /// Reads the config file again and applies it. Fails with
    /// org.cusax.Cusax1.Error.InvalidConfig, naming the file, line and key, when the file is
    /// not valid; the running config then stays.
    async fn reload(&self) -> Result<(), CusaxError> {
        match self.hub.reload().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(CusaxError::InvalidConfig(e.to_string())),
            Err(gone) => Err(CusaxError::Failed(gone.to_string())),
        }
    }

    /// Sets our presence: show is available, chat, away, xa or dnd; status is free text (at
    /// most 1024 bytes). It holds from now on, and is sent again after every reconnect. Fails
    /// with InvalidArgument or NotConfigured (no XMPP account).
    async fn set_presence(&self, show: String, status: String) -> Result<(), CusaxError> {
        Ok(self.hub.messaging(|reply| MessagingCommand::SetPresence { show, status, reply }).await?)
    }

    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> &str {
        crate::VERSION
    }

    /// The SIP account: unconfigured, unregistered, registering, registered or failed.
    #[zbus(property)]
    fn sip_state(&self) -> &str {
        self.status.borrow().sip_state.as_str()
    }

    /// Why the SIP account is in its state, for people: for example "the registrar refused
    /// our credentials: wrong username or password". Empty when there is nothing to say.
    #[zbus(property)]
    fn sip_state_reason(&self) -> String {
        self.status.borrow().sip_state_reason.clone()
    }

    /// The XMPP account: unconfigured, offline (waiting to try again), connecting, online or
    /// failed (not retried until the config changes).
    #[zbus(property)]
    fn xmpp_state(&self) -> &str {
        self.status.borrow().xmpp_state.as_str()
    }

    /// Why the XMPP account is in its state, for people: for example "the server refused the
    /// password (not-authorized)". Empty when there is nothing to say.
    #[zbus(property)]
    fn xmpp_state_reason(&self) -> String {
        self.status.borrow().xmpp_state_reason.clone()
    }

    /// Our SIP address of record, or "" without a SIP account.
    #[zbus(property)]
    fn sip_address(&self) -> String {
        self.status.borrow().sip_address.clone()
    }

    /// Our bare JID, or "" without an XMPP account.
    #[zbus(property)]
    fn jid(&self) -> String {
        self.status.borrow().jid.clone()
    }

    /// Our presence as contacts see it: (show, status). show is one of offline, available,
    /// chat, away, xa, dnd, or unconfigured without an XMPP account.
    #[zbus(property)]
    fn presence(&self) -> (String, String) {
        let status = self.status.borrow();
        (status.presence.show.clone(), status.presence.status.clone())
    }
}
