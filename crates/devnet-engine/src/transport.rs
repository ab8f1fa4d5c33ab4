//! How the data path reaches the relay: a [`Dial`] gives a byte stream, TLS
//! runs over it. [`DirectDial`] is TCP to the relay pod's IP or a node port;
//! the CLI adds the API server's port-forward (`devnet-kube`) behind the
//! same trait, and [`Fallback`] tries each in order, so every reconnect
//! takes the fastest transport that works now.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

/// A byte stream to the relay, before TLS.
pub trait RelayIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> RelayIo for T {}

pub type RelayStream = Box<dyn RelayIo>;
pub type DialFuture = Pin<Box<dyn Future<Output = io::Result<(RelayStream, String)>> + Send>>;

/// Opens a stream to the relay and says which transport it took (for status).
pub trait Dial: Send + Sync + fmt::Debug {
    fn dial(&self) -> DialFuture;
}

/// TCP straight to the relay: every address at once, each with a short
/// timeout so a cut path falls through quickly to the next transport.
/// With `bypass`, the socket carries the engine's bypass mark, so a relay
/// pod IP inside a tunnelled CIDR is dialled the way the machine would
/// without devnet, never into the tunnel itself.
#[derive(Debug, Clone)]
pub struct DirectDial {
    pub addrs: Vec<SocketAddr>,
    pub timeout: Duration,
    pub bypass: bool,
}

impl Dial for DirectDial {
    fn dial(&self) -> DialFuture {
        let (addrs, timeout) = (self.addrs.clone(), self.timeout);
        let mark = self.bypass.then_some(crate::os::platform::BYPASS_MARK);
        Box::pin(async move {
            // All at once: an address behind a dropping firewall must not
            // delay one that answers (the first connection wins).
            let mut attempts = tokio::task::JoinSet::new();
            for addr in addrs {
                attempts.spawn(async move {
                    match tokio::time::timeout(timeout, crate::detect::connect_marked(addr, mark)).await {
                        Ok(Ok(tcp)) => Ok((tcp, addr)),
                        Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("{addr}: {e}"))),
                        Err(_) => Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("{addr}: no answer within {timeout:?}"),
                        )),
                    }
                });
            }
            let mut errors = Vec::new();
            while let Some(done) = attempts.join_next().await {
                match done {
                    Ok(Ok((tcp, addr))) => {
                        tcp.set_nodelay(true)?;
                        let tcp = devnet_tls::congestion::RestartAfterQuiet::new(tcp);
                        return Ok((Box::new(tcp) as RelayStream, format!("direct {addr}")));
                    }
                    Ok(Err(e)) => {
                        debug!(error = %e, "direct transport failed");
                        errors.push(e.to_string());
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            if errors.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no relay address to dial"));
            }
            Err(io::Error::other(errors.join(", ")))
        })
    }
}

/// Tries each transport in order; the first stream wins.
#[derive(Debug)]
pub struct Fallback(pub Vec<Box<dyn Dial>>);

impl Dial for Fallback {
    fn dial(&self) -> DialFuture {
        let attempts: Vec<DialFuture> = self.0.iter().map(|d| d.dial()).collect();
        Box::pin(async move {
            let mut errors = Vec::new();
            for attempt in attempts {
                match attempt.await {
                    Ok(s) => return Ok(s),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Err(io::Error::other(errors.join("; then ")))
        })
    }
}
