//! One attempt to open an authenticated XMPP stream, with every failure kept and named.
//!
//! tokio-xmpp's own clients retry forever and build their TLS config themselves, so a wrong
//! password or an untrusted certificate would never show and `[tls] extra_ca` could not
//! apply. This module does the steps of RFC 6120 itself from tokio-xmpp's public pieces: TCP
//! (`[xmpp] server`, else the SRV records of the domain for direct TLS and STARTTLS merged
//! as XEP-0368 says, else port 5222), TLS with our rustls config (from the first byte with
//! ALPN `xmpp-client`, or after STARTTLS: section 5), SASL (section 6, SCRAM or PLAIN, never
//! ANONYMOUS), and the restarted stream's features. Resource binding and stream management
//! are left to the `StanzaStream` the result feeds.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use cusax_protocol::xmpp::locate::{self, TlsStart, XmppTarget};
use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::BufStream;
use tokio::net::TcpStream;

use super::quick_ack::QuickAckTcp;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::error::AuthError;
use tokio_xmpp::stanzastream::Connection;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, ReadError, StreamHeader, Timeouts, XmppStreamElement, initiate_stream,
};
use tracing::debug;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::ns;
use xmpp_parsers::sasl::DefinedCondition;
use xmpp_parsers::starttls;

use crate::config::XmppAccount;

/// Why an attempt failed; `fatal` ones are not retried (RFC 6120 section 6.5: the same
/// credentials will be refused again; a certificate we do not trust stays untrusted).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the server refused the password ({0})")]
    Refused(String),
    #[error("the server refused the login ({0})")]
    LoginRefused(String),
    #[error("the server's certificate is not trusted: {0}")]
    Certificate(String),
    #[error("the server offers no {0}; refusing to log in without it")]
    Unsupported(&'static str),
    #[error("{0}")]
    Config(String),
    #[error("cannot reach the server: {0}")]
    Network(String),
    #[error("the server broke off: {0}")]
    Protocol(String),
}

impl ConnectError {
    pub fn is_fatal(&self) -> bool {
        !matches!(self, ConnectError::Network(_) | ConnectError::Protocol(_))
    }
}

impl From<tokio_xmpp::Error> for ConnectError {
    fn from(e: tokio_xmpp::Error) -> Self {
        match e {
            tokio_xmpp::Error::Auth(AuthError::Fail(DefinedCondition::TemporaryAuthFailure)) => {
                ConnectError::Protocol("temporary authentication failure".into())
            }
            tokio_xmpp::Error::Auth(AuthError::Fail(
                condition @ (DefinedCondition::NotAuthorized
                | DefinedCondition::AccountDisabled
                | DefinedCondition::CredentialsExpired),
            )) => ConnectError::Refused(sasl_condition(&condition).to_owned()),
            tokio_xmpp::Error::Auth(AuthError::Fail(condition)) => {
                ConnectError::LoginRefused(sasl_condition(&condition).to_owned())
            }
            tokio_xmpp::Error::Auth(AuthError::NoMechanism) => ConnectError::Unsupported("SCRAM or PLAIN"),
            tokio_xmpp::Error::Io(e) => ConnectError::Network(e.to_string()),
            other => ConnectError::Protocol(other.to_string()),
        }
    }
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        ConnectError::Network(e.to_string())
    }
}

/// Connects, secures and authenticates the stream of `account`.
pub async fn connect(account: &XmppAccount, tls: Arc<ClientConfig>) -> Result<Connection, ConnectError> {
    let jid = account.jid.bare();
    let domain = jid.domain().as_str().to_owned();
    let username = jid.node().map(|n| n.as_str().to_owned()).ok_or_else(|| {
        // The config already insists on a localpart; this only keeps login from panicking.
        ConnectError::Config("the JID has no local part".into())
    })?;
    let password = account
        .password
        .read()
        .await
        .map_err(ConnectError::Config)?
        .ok_or_else(|| ConnectError::Config("no password is configured".into()))?;
    let timeouts = Timeouts::tight();
    let targets = match &account.server {
        Some(server) => {
            let tls = if account.direct_tls { TlsStart::Direct } else { TlsStart::StartTls };
            vec![XmppTarget { host: server.host.clone(), port: server.port, tls }]
        }
        None => find_targets(&domain).await,
    };
    let header = || StreamHeader { to: Some(Cow::Owned(domain.clone())), from: None, id: None };
    let name = ServerName::try_from(domain.clone()).map_err(|e| ConnectError::Config(e.to_string()))?;
    let mut failure = ConnectError::Network(format!("no server found for {domain}"));
    let mut secured = None;
    for target in targets {
        debug!(host = %target.host, port = target.port, tls = ?target.tls, "trying");
        match secure(&target, name.clone(), tls.clone(), &domain, timeouts).await {
            Ok(stream) => {
                secured = Some(stream);
                break;
            }
            // A certificate we do not trust is what the user must hear about, whatever the
            // servers after it say.
            Err(e) => {
                if !matches!(failure, ConnectError::Certificate(_)) {
                    failure = e;
                }
            }
        }
    }
    let Some(tls_stream) = secured else { return Err(failure) };

    let pending = initiate_stream(BufStream::new(tls_stream), ns::JABBER_CLIENT, header(), timeouts).await?;
    let (features, stream) =
        pending.recv_features::<FallibleStreamElement>().await.map_err(tokio_xmpp::Error::from)?;
    // An anonymous login would be somebody else's session: never.
    let mechanisms: BTreeSet<String> =
        features.sasl_mechanisms.into_iter().filter(|m| m != "ANONYMOUS").collect();
    let credentials = Credentials::default()
        .with_username(username)
        .with_password(password)
        .with_channel_binding(ChannelBinding::None);
    let authenticated = tokio_xmpp::client_login(stream, mechanisms, credentials).await?;
    let pending = authenticated.send_header(header()).await?;
    let (features, stream) =
        pending.recv_features::<FallibleStreamElement>().await.map_err(tokio_xmpp::Error::from)?;
    // tokio-xmpp's stream cannot go on without binding (it would panic): refuse here.
    if !features.can_bind() {
        return Err(ConnectError::Unsupported("resource binding"));
    }
    Ok(Connection { stream: stream.box_stream(), features, identity: Jid::from(jid.clone()) })
}

/// A TCP connection to `target`, secured as it says (STARTTLS needs a first stream).
async fn secure(
    target: &XmppTarget,
    name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    domain: &str,
    timeouts: Timeouts,
) -> Result<TlsStream<QuickAckTcp>, ConnectError> {
    let tcp = tcp_to(&target.host, target.port).await?;
    if target.tls == TlsStart::Direct {
        // XEP-0368 section 3.1: ALPN says which protocol the TLS port should serve.
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
        return TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(certificate_or_network);
    }
    let header = StreamHeader { to: Some(Cow::Owned(domain.to_owned())), from: None, id: None };
    // RFC 6120 section 5: STARTTLS before anything else.
    let pending = initiate_stream(BufStream::new(tcp), ns::JABBER_CLIENT, header, timeouts).await?;
    let (features, mut stream) =
        pending.recv_features::<FallibleStreamElement>().await.map_err(tokio_xmpp::Error::from)?;
    if !features.can_starttls() {
        return Err(ConnectError::Unsupported("STARTTLS"));
    }
    stream.send(&XmppStreamElement::Starttls(starttls::Nonza::Request(starttls::Request))).await?;
    loop {
        match stream.next().await.map(|v| v.map(|v| v.into_read_error()).and_then(|v| v)) {
            Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
            Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::HardError(e))) => return Err(e.into()),
            Some(Err(ReadError::ParseError(e))) => return Err(ConnectError::Protocol(e.to_string())),
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(ConnectError::Protocol("the stream closed during STARTTLS".into()));
            }
        }
    }
    let tcp = stream.into_inner().into_inner();
    TlsConnector::from(tls).connect(name, tcp).await.map_err(certificate_or_network)
}

/// The SRV targets of `domain` for both ways to start TLS, in the order to try them.
async fn find_targets(domain: &str) -> Vec<XmppTarget> {
    let Ok(resolver) = crate::dns::resolver() else { return locate::targets(domain, Vec::new(), Vec::new()) };
    let [(_, direct), (_, starttls)] = locate::srv_names(domain);
    let (direct, starttls) = tokio::join!(
        crate::dns::srv_records(&resolver, &direct),
        crate::dns::srv_records(&resolver, &starttls)
    );
    locate::targets(domain, direct, starttls)
}

/// A TCP connection to the first address of `host` that answers.
async fn tcp_to(host: &str, port: u16) -> Result<QuickAckTcp, ConnectError> {
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ConnectError::Network(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut failure = ConnectError::Network(format!("{host} has no address"));
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(tcp) => {
                // Stanzas are small and often come in pairs (a message, then the XEP-0198
                // request): Nagle's algorithm would hold the second for the peer's delayed
                // ACK, 40 ms on Linux.
                tcp.set_nodelay(true)?;
                return Ok(QuickAckTcp::new(tcp));
            }
            Err(e) => failure = ConnectError::Network(format!("{address}: {e}")),
        }
    }
    Err(failure)
}

/// The condition's name in RFC 6120 section 6.5, as a server's log would say it.
fn sasl_condition(condition: &DefinedCondition) -> &'static str {
    match condition {
        DefinedCondition::Aborted => "aborted",
        DefinedCondition::AccountDisabled => "account-disabled",
        DefinedCondition::CredentialsExpired => "credentials-expired",
        DefinedCondition::EncryptionRequired => "encryption-required",
        DefinedCondition::IncorrectEncoding => "incorrect-encoding",
        DefinedCondition::InvalidAuthzid => "invalid-authzid",
        DefinedCondition::InvalidMechanism => "invalid-mechanism",
        DefinedCondition::MalformedRequest => "malformed-request",
        DefinedCondition::MechanismTooWeak => "mechanism-too-weak",
        DefinedCondition::NotAuthorized => "not-authorized",
        DefinedCondition::TemporaryAuthFailure => "temporary-auth-failure",
    }
}

/// rustls reports a certificate it will not trust as invalid data inside an io error.
fn certificate_or_network(e: std::io::Error) -> ConnectError {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(why)) => ConnectError::Certificate(format!("{why:?}")),
        Some(other) => ConnectError::Protocol(format!("TLS: {other}")),
        None => ConnectError::Network(e.to_string()),
    }
}
