//! The SIP transport of one account: a UDP socket, or a TCP or TLS connection, to the first
//! hop (the outbound proxy, else the registrar, else the AoR's host). Every request and
//! response goes through it; the proxy routes them on. TLS certificates are verified against
//! the system's roots plus `[tls] extra_ca`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cusax_protocol::sip::locate::{LocatedTransport, NaptrRecord, order_srv, srv_names};
use cusax_protocol::sip::transaction::Reliability;
use cusax_protocol::sip::{Frame, Normalised, SipUri, StreamFramer, normalise};
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tracing::{debug, trace};

use crate::config::{SipAccount, SipTransport};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream SIP runs over: TCP, or TLS over TCP.
pub trait SipStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> SipStream for T {}

pub enum Transport {
    /// UDP, and a TCP connection to the same server opened when a request is too large for
    /// UDP (RFC 3261 18.1.1); responses to it come back over that connection.
    Udp {
        socket: UdpSocket,
        peer: SocketAddr,
        overflow: Option<(Box<dyn SipStream>, StreamFramer)>,
        /// Branches of requests sent over that TCP connection.
        tcp_branches: std::collections::HashSet<String>,
    },
    Stream {
        stream: Box<dyn SipStream>,
        framer: StreamFramer,
    },
}

/// RFC 3261 18.1.1: a request larger than this, with the path MTU unknown, goes over TCP.
const UDP_REQUEST_LIMIT: usize = 1300;

/// An open transport and what our messages say about it.
pub struct Opened {
    pub transport: Transport,
    pub local: SocketAddr,
    pub reliability: Reliability,
    /// `UDP` or `TCP`, as the Via writes it.
    pub name: &'static str,
}

impl Transport {
    /// Finds the first hop (RFC 3263) and opens the transport to the first candidate that
    /// takes a connection.
    pub async fn open(account: &SipAccount, extra_ca: Option<&Path>) -> Result<Opened, String> {
        let mut failure = String::from("no address for the SIP server");
        for candidate in locate(account).await? {
            match open_one(account, extra_ca, &candidate).await {
                Ok(opened) => return Ok(opened),
                // A refused certificate is not a reason to try the same server in cleartext.
                Err(e) if candidate.kind == SipTransport::Tls && e.starts_with("TLS with") => return Err(e),
                Err(e) => failure = e,
            }
        }
        Err(failure)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // The whole message only at trace: it carries thread ids and correlation tokens.
        trace!(target: "cusaxd::sip::wire", sip = %String::from_utf8_lossy(bytes), "sent");
        match self {
            Transport::Udp { socket, peer, overflow, tcp_branches } => {
                let branch = top_branch(bytes);
                // Large requests, and the CANCEL or ACK of one (same branch: RFC 3261 9.1,
                // 17.1.1.3), go over TCP; if TCP cannot be had, over UDP after all (18.1.1).
                let over_tcp = !bytes.starts_with(b"SIP/2.0 ")
                    && (bytes.len() > UDP_REQUEST_LIMIT
                        || branch.as_ref().is_some_and(|b| tcp_branches.contains(b)));
                if over_tcp && let Err(e) = send_over_tcp(*peer, overflow, bytes).await {
                    debug!(error = %e, "no TCP for a large request; sending it over UDP");
                } else if over_tcp {
                    if let Some(branch) = branch {
                        if tcp_branches.len() >= 64 {
                            tcp_branches.clear();
                        }
                        tcp_branches.insert(branch);
                    }
                    return Ok(());
                }
                socket.send(bytes).await.map(|_| ())
            }
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
            Transport::Udp { socket, overflow, .. } => {
                let from_overflow = match overflow {
                    None => None,
                    Some((stream, framer)) => tokio::select! {
                        received = socket.recv(&mut buffer) => { let n = received?; return Ok(datagram(&buffer[..n])) }
                        read = read_frames(stream.as_mut(), framer) => Some(read),
                    },
                };
                match from_overflow {
                    None => {
                        let n = socket.recv(&mut buffer).await?;
                        Ok(datagram(&buffer[..n]))
                    }
                    Some(Ok(messages)) => Ok(messages),
                    Some(Err(e)) => {
                        // Only the side connection for large requests is gone; UDP goes on.
                        debug!(error = %e, "the TCP connection for large requests closed");
                        *overflow = None;
                        Ok(Vec::new())
                    }
                }
            }
            Transport::Stream { stream, framer } => read_frames(stream.as_mut(), framer).await,
        }
    }
}

fn datagram(bytes: &[u8]) -> Vec<Normalised> {
    match normalise(bytes) {
        Ok(message) => vec![message],
        Err(e) => {
            debug!(error = %e, "dropped an unreadable datagram");
            Vec::new()
        }
    }
}

/// Reads from a stream until at least one frame is complete; answers keep-alive pings.
async fn read_frames(
    stream: &mut dyn SipStream,
    framer: &mut StreamFramer,
) -> std::io::Result<Vec<Normalised>> {
    let mut buffer = vec![0u8; 65536];
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
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

async fn send_over_tcp(
    peer: SocketAddr,
    overflow: &mut Option<(Box<dyn SipStream>, StreamFramer)>,
    bytes: &[u8],
) -> std::io::Result<()> {
    if overflow.is_none() {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TCP connect timed out"))??;
        debug!(%peer, size = bytes.len(), "a request over 1300 bytes goes over TCP");
        *overflow = Some((Box::new(tcp), StreamFramer::new()));
    }
    let request = via_over_tcp(bytes);
    let Some((stream, _)) = overflow.as_mut() else { return Ok(()) };
    let sent = async {
        stream.write_all(&request).await?;
        stream.flush().await
    }
    .await;
    if sent.is_err() {
        *overflow = None;
    }
    sent
}

/// The branch of a message's top Via, read from our own serialised text.
fn top_branch(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let via = text.split("\r\n").find(|line| line.starts_with("Via: "))?;
    let branch = via.split(';').find_map(|p| p.trim().strip_prefix("branch="))?;
    Some(branch.to_owned())
}

/// The request with its top Via saying TCP, as it must when it travels over TCP (RFC 3261
/// 18.1.1).
fn via_over_tcp(request: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    match text.find("\r\nVia: SIP/2.0/UDP ") {
        Some(at) => {
            let mut out = text.into_owned();
            out.replace_range(at + "\r\nVia: SIP/2.0/".len()..at + "\r\nVia: SIP/2.0/UDP".len(), "TCP");
            out.into_bytes()
        }
        None => request.to_vec(),
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

/// Where to send, over what, and the name to check the TLS certificate against.
struct Candidate {
    peer: SocketAddr,
    kind: SipTransport,
    /// The host of the URI, not of the SRV target (RFC 5922 section 4).
    server_name: String,
}

async fn open_one(
    account: &SipAccount,
    extra_ca: Option<&Path>,
    candidate: &Candidate,
) -> Result<Opened, String> {
    let peer = candidate.peer;
    match candidate.kind {
        SipTransport::Udp => {
            let bind = account.listen.unwrap_or_else(|| unspecified(peer));
            let socket = UdpSocket::bind(bind).await.map_err(|e| format!("cannot bind UDP {bind}: {e}"))?;
            socket.connect(peer).await.map_err(|e| format!("cannot reach {peer}: {e}"))?;
            let local = socket.local_addr().map_err(|e| e.to_string())?;
            Ok(Opened {
                transport: Transport::Udp { socket, peer, overflow: None, tcp_branches: Default::default() },
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
            let (stream, name): (Box<dyn SipStream>, _) = if candidate.kind == SipTransport::Tls {
                let host = candidate.server_name.clone();
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| format!("{host:?} is not a TLS server name"))?;
                let connector =
                    TlsConnector::from(crate::tls::client_config(extra_ca.map(Path::to_path_buf)).await?);
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

/// The candidates for the first hop (the outbound proxy, else the registrar, else the AoR's
/// host), in order. An IP address or an explicit port is used as it is; a name goes through
/// RFC 3263: NAPTR (unless the transport is fixed), SRV, then A/AAAA; with no SRV answer,
/// A/AAAA of the name itself on the default port.
async fn locate(account: &SipAccount) -> Result<Vec<Candidate>, String> {
    let hop = account.proxy.as_ref().or(account.registrar.as_ref()).unwrap_or(&account.aor);
    let fixed = account.transport.or_else(|| uri_transport(hop));
    let host = hop.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let default_kind = fixed.unwrap_or(if hop.is_sips() { SipTransport::Tls } else { SipTransport::Udp });
    let at = |peer, kind| Candidate { peer, kind, server_name: host.clone() };
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        let port = hop.port().unwrap_or(located(default_kind).default_port());
        return Ok(vec![at(SocketAddr::new(ip, port), default_kind)]);
    }
    let resolver = crate::dns::resolver()?;
    if let Some(port) = hop.port() {
        let peers = addresses(&resolver, &host, port).await?;
        return Ok(peers.into_iter().map(|peer| at(peer, default_kind)).collect());
    }
    let allowed: Vec<LocatedTransport> = match fixed {
        Some(kind) => vec![located(kind)],
        None => vec![LocatedTransport::Udp, LocatedTransport::Tcp, LocatedTransport::Tls],
    };
    let naptr = if fixed.is_some() { Vec::new() } else { naptr_records(&resolver, &host).await };
    let mut candidates = Vec::new();
    for (transport, srv_name) in srv_names(&host, &naptr, &allowed, hop.is_sips()) {
        for srv in order_srv(crate::dns::srv_records(&resolver, &srv_name).await) {
            let peers = addresses(&resolver, &srv.target, srv.port).await.unwrap_or_default();
            candidates.extend(peers.into_iter().map(|peer| at(peer, sip_transport(transport))));
        }
    }
    if candidates.is_empty() {
        let peers = addresses(&resolver, &host, located(default_kind).default_port()).await?;
        candidates.extend(peers.into_iter().map(|peer| at(peer, default_kind)));
    }
    debug!(count = candidates.len(), "SIP server candidates");
    Ok(candidates)
}

async fn addresses(resolver: &TokioResolver, name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let found = resolver.lookup_ip(name).await.map_err(|e| format!("cannot resolve {name}: {e}"))?;
    Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect())
}

async fn naptr_records(resolver: &TokioResolver, domain: &str) -> Vec<NaptrRecord> {
    let Ok(answer) = resolver.lookup(domain, RecordType::NAPTR).await else { return Vec::new() };
    answer
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::NAPTR(naptr) => Some(NaptrRecord {
                order: naptr.order,
                preference: naptr.preference,
                flags: String::from_utf8_lossy(&naptr.flags).into_owned(),
                service: String::from_utf8_lossy(&naptr.services).into_owned(),
                replacement: naptr.replacement.to_string(),
            }),
            _ => None,
        })
        .collect()
}

fn located(kind: SipTransport) -> LocatedTransport {
    match kind {
        SipTransport::Udp => LocatedTransport::Udp,
        SipTransport::Tcp => LocatedTransport::Tcp,
        SipTransport::Tls => LocatedTransport::Tls,
    }
}

fn sip_transport(kind: LocatedTransport) -> SipTransport {
    match kind {
        LocatedTransport::Udp => SipTransport::Udp,
        LocatedTransport::Tcp => SipTransport::Tcp,
        LocatedTransport::Tls => SipTransport::Tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_sent_over_tcp_says_so_in_its_top_via() {
        let request = b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n\r\n";
        let over_tcp = String::from_utf8(via_over_tcp(request)).unwrap();
        assert!(over_tcp.contains("\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKx\r\n"), "{over_tcp}");
        assert!(
            over_tcp.contains("\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n"),
            "only the top Via changes: {over_tcp}"
        );
    }
}
