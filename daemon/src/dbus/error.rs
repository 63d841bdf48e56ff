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
}
