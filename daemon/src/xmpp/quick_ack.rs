//! The XMPP connection's TCP stream, acknowledging what it reads at once.
//!
//! Most servers leave Nagle's algorithm on (Prosody 0.12 does by default). When the server's
//! last small write to us (the `<a/>` answering our XEP-0198 `<r/>`) is still unacknowledged,
//! its next one (the next message) waits until our ACK, and Linux delays that ACK up to 40 ms
//! when we have nothing to send back. Turning TCP_QUICKACK on after each read (the kernel
//! clears it again on its own) takes that 40 ms off the 1-2 % of messages that met it in
//! bench/xmpp.sh; it costs one system call per read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct QuickAckTcp {
    tcp: TcpStream,
}

impl QuickAckTcp {
    pub fn new(tcp: TcpStream) -> Self {
        Self { tcp }
    }
}

impl AsyncRead for QuickAckTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // Only a hint to the kernel: a failure changes nothing but the ACK's timing.
            let _ = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true);
        }
        polled
    }
}

impl AsyncWrite for QuickAckTcp {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}
