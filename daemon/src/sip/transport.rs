//! The SIP transport of one account: a UDP socket or a TCP connection to the first hop (the
//! outbound proxy, else the registrar, else the AoR's host). Every request and response goes
//! through it; the proxy routes them on.

use std::net::SocketAddr;
use std::time::Duration;

use cusax_protocol::sip::transaction::Reliability;
use cusax_protocol::sip::{Frame, Normalised, SipUri, StreamFramer, normalise};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use crate::config::{SipAccount, SipTransport};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub enum Transport {
    Udp { socket: UdpSocket },
    Tcp { stream: TcpStream, framer: StreamFramer },
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
    pub async fn open(account: &SipAccount) -> Result<Opened, String> {
        let hop = account.proxy.as_ref().or(account.registrar.as_ref()).unwrap_or(&account.aor);
        let kind = account.transport.or_else(|| uri_transport(hop)).unwrap_or(if hop.is_sips() {
            SipTransport::Tls
        } else {
            SipTransport::Udp
        });
        let peer = resolve(hop).await?;
        match kind {
            SipTransport::Tls => {
                Err("SIP over TLS is not supported yet; use transport = \"udp\" or \"tcp\"".into())
            }
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
            SipTransport::Tcp => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
                    .await
                    .map_err(|_| format!("no TCP connection to {peer} within {CONNECT_TIMEOUT:?}"))?
                    .map_err(|e| format!("cannot connect to {peer}: {e}"))?;
                let local = stream.local_addr().map_err(|e| e.to_string())?;
                let transport = Transport::Tcp { stream, framer: StreamFramer::new() };
                Ok(Opened { transport, local, reliability: Reliability::Reliable, name: "TCP" })
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Udp { socket } => socket.send(bytes).await.map(|_| ()),
            Transport::Tcp { stream, .. } => stream.write_all(bytes).await,
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
            Transport::Tcp { stream, framer } => {
                let n = stream.read(&mut buffer).await?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
                }
                framer.push(&buffer[..n]);
                let mut messages = Vec::new();
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(message))) => messages.push(message),
                        Ok(Some(Frame::Ping)) => stream.write_all(b"\r\n").await?,
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
