//! The named D-Bus errors of the API: `org.cusax.Cusax1.Error.<Name>`.

/// An error a caller receives from a cusax method. Each variant is a D-Bus error name under
/// `org.cusax.Cusax1.Error`; the string is a message for people.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.cusax.Cusax1.Error")]
pub enum CusaxError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The config file is invalid; the message names the file, line and key. The running
    /// config stays in force.
    InvalidConfig(String),
    /// The request could not be carried out (for example, the daemon is shutting down).
    Failed(String),
    /// The address cannot be called (not sip:, sips:, tel: or +E.164, or malformed).
    InvalidAddress(String),
    /// The SIP account is not registered, so no call can be placed.
    NotRegistered(String),
    /// No such call (or other object).
    NotFound(String),
    /// An option or argument is not understood.
    InvalidArgument(String),
    /// The account this needs (XMPP for chat and presence) is not in the config.
    NotConfigured(String),
    /// The account this needs is not online now.
    NotConnected(String),
}

impl From<crate::sip::CallError> for CusaxError {
    fn from(e: crate::sip::CallError) -> Self {
        use crate::sip::CallError;
        match e {
            CallError::InvalidAddress(m) => CusaxError::InvalidAddress(m),
            CallError::NotRegistered => CusaxError::NotRegistered(e.to_string()),
            CallError::NotFound => CusaxError::NotFound(e.to_string()),
            CallError::Failed(m) => CusaxError::Failed(m),
        }
    }
}

impl From<crate::hub::MessagingError> for CusaxError {
    fn from(e: crate::hub::MessagingError) -> Self {
        use crate::hub::MessagingError;
        match e {
            MessagingError::InvalidAddress(m) => CusaxError::InvalidAddress(m),
            MessagingError::InvalidArgument(m) => CusaxError::InvalidArgument(m),
            MessagingError::NotFound => CusaxError::NotFound(e.to_string()),
            MessagingError::NotConfigured => CusaxError::NotConfigured(e.to_string()),
            MessagingError::NotConnected => CusaxError::NotConnected(e.to_string()),
            MessagingError::Failed(m) => CusaxError::Failed(m),
        }
    }
}
