//! The SIP transport of one account: a UDP socket, or a TCP or TLS connection, to the first
//! hop (the outbound proxy, else the registrar, else the AoR's host). Every request and
//! response goes through it; the proxy routes them on. TLS certificates are verified against
//! the system's roots plus `[tls] extra_ca`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cusax_protocol::sip::transaction::Reliability;
use cusax_protocol::sip::{Frame, Normalised, SipUri, StreamFramer, normalise};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tracing::debug;

use crate::config::{SipAccount, SipTransport};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream SIP runs over: TCP, or TLS over TCP.
pub trait SipStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> SipStream for T {}

pub enum Transport {
    Udp { socket: UdpSocket },
    Stream { stream: Box<dyn SipStream>, framer: StreamFramer },
}

/// An open transport and what our messages say about it.
pub struct Opened {
    pub transport: Transport,
    pub local: SocketAddr,
    pub reliability: Reliability,
    /// `UDP` or `TCP`, as the Via writes it.
    pub name: &'static str,
}

impl Transport {
    /// Finds the first hop and opens the transport to it.
    pub async fn open(account: &SipAccount, extra_ca: Option<&Path>) -> Result<Opened, String> {
        let hop = account.proxy.as_ref().or(account.registrar.as_ref()).unwrap_or(&account.aor);
        let kind = account.transport.or_else(|| uri_transport(hop)).unwrap_or(if hop.is_sips() {
            SipTransport::Tls
        } else {
            SipTransport::Udp
        });
        let peer = resolve(hop).await?;
        match kind {
            SipTransport::Udp => {
                let bind = account.listen.unwrap_or_else(|| unspecified(peer));
                let socket =
                    UdpSocket::bind(bind).await.map_err(|e| format!("cannot bind UDP {bind}: {e}"))?;
                socket.connect(peer).await.map_err(|e| format!("cannot reach {peer}: {e}"))?;
                let local = socket.local_addr().map_err(|e| e.to_string())?;
                Ok(Opened {
                    transport: Transport::Udp { socket },
                    local,
                    reliability: Reliability::Unreliable,
                    name: "UDP",
                })
            }
            SipTransport::Tcp | SipTransport::Tls => {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
                    .await
                    .map_err(|_| format!("no TCP connection to {peer} within {CONNECT_TIMEOUT:?}"))?
                    .map_err(|e| format!("cannot connect to {peer}: {e}"))?;
                let local = tcp.local_addr().map_err(|e| e.to_string())?;
                let (stream, name): (Box<dyn SipStream>, _) = if kind == SipTransport::Tls {
                    let host = hop.host().trim_start_matches('[').trim_end_matches(']').to_owned();
                    let name = ServerName::try_from(host.clone())
                        .map_err(|_| format!("{host:?} is not a TLS server name"))?;
                    let connector = TlsConnector::from(tls_config(extra_ca.map(Path::to_path_buf)).await?);
                    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                        .await
                        .map_err(|_| format!("no TLS handshake with {peer} within {CONNECT_TIMEOUT:?}"))?
                        .map_err(|e| format!("TLS with {host} ({peer}) failed: {e}"))?;
                    (Box::new(tls), "TLS")
                } else {
                    (Box::new(tcp), "TCP")
                };
                let transport = Transport::Stream { stream, framer: StreamFramer::new() };
                Ok(Opened { transport, local, reliability: Reliability::Reliable, name })
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Udp { socket } => socket.send(bytes).await.map(|_| ()),
            Transport::Stream { stream, .. } => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }

    /// The next messages from the peer. Keep-alive pings are answered here; an unreadable
    /// datagram is dropped, an unreadable stream is an error (it is out of step).
    pub async fn receive(&mut self) -> std::io::Result<Vec<Normalised>> {
        let mut buffer = vec![0u8; 65536];
        match self {
            Transport::Udp { socket } => {
                let n = socket.recv(&mut buffer).await?;
                match normalise(&buffer[..n]) {
                    Ok(message) => Ok(vec![message]),
                    Err(e) => {
                        debug!(error = %e, "dropped an unreadable datagram");
                        Ok(Vec::new())
                    }
                }
            }
            Transport::Stream { stream, framer } => {
                let n = stream.read(&mut buffer).await?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
                }
                framer.push(&buffer[..n]);
                let mut messages = Vec::new();
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(message))) => messages.push(message),
                        Ok(Some(Frame::Ping)) => {
                            stream.write_all(b"\r\n").await?;
                            stream.flush().await?;
                        }
                        Ok(Some(Frame::Pong)) => {}
                        Ok(None) => return Ok(messages),
                        Err(e) => {
                            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()));
                        }
                    }
                }
            }
        }
    }
}

/// Verified TLS: the system's roots, plus the PEM certificates of `extra_ca` (a private CA).
async fn tls_config(extra_ca: Option<PathBuf>) -> Result<Arc<ClientConfig>, String> {
    let built = tokio::task::spawn_blocking(move || {
        let mut roots = RootCertStore::empty();
        let (_, unreadable) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if unreadable > 0 {
            debug!(unreadable, "system root certificates skipped");
        }
        if let Some(path) = extra_ca {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|iter| iter.collect::<Result<_, _>>())
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("no certificate in the CA file {}", path.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("unusable CA certificate in {}: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    });
    built.await.map_err(|e| e.to_string())?
}

fn uri_transport(uri: &SipUri) -> Option<SipTransport> {
    let text = uri.as_str().to_ascii_lowercase();
    let value = text.split(';').find_map(|p| p.strip_prefix("transport="))?;
    match value {
        "udp" => Some(SipTransport::Udp),
        "tcp" => Some(SipTransport::Tcp),
        "tls" => Some(SipTransport::Tls),
        _ => None,
    }
}

fn unspecified(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// The first hop's address: an IP literal as it is, a name through the system resolver
/// (A/AAAA; RFC 3263 NAPTR/SRV comes later). The default port is 5060 (5061 for sips).
async fn resolve(uri: &SipUri) -> Result<SocketAddr, String> {
    let port = uri.port().unwrap_or(if uri.is_sips() { 5061 } else { 5060 });
    let host = uri.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {bare}: {e}"))?
        .next()
        .ok_or_else(|| format!("{bare} has no address"))
}
