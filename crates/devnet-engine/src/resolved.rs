//! The systemd-resolved backend's executor: sends the calls planned by
//! [`devnet_dns::resolved`] over the system bus, sends them again whenever
//! resolved (re)starts, and reverts the link on disconnect.
//!
//! The calls go through [`Bus`], so tests record them instead; the real one
//! is [`SystemBus`] (zbus). Nothing of this survives the engine: the link is
//! devnet's TUN device, and resolved forgets a link's settings when the link
//! goes away, which is also what makes a crash leave nothing behind.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use devnet_dns::resolved::{BUS_NAME, Call, INTERFACE, OBJECT_PATH};
use tracing::{info, warn};

/// A D-Bus call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("systemd-resolved refused `{call}`: {error}")]
pub struct BusError {
    pub call: String,
    pub error: String,
    /// resolved does not know the method (an older version).
    pub unknown_method: bool,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends resolved's manager calls.
pub trait Bus: Send + Sync {
    fn call<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, Result<(), BusError>>;
}

/// The system bus.
#[derive(Debug, Clone)]
pub struct SystemBus {
    conn: zbus::Connection,
}

impl SystemBus {
    pub async fn connect() -> zbus::Result<Self> {
        Ok(Self { conn: zbus::Connection::system().await? })
    }

    /// Whether systemd-resolved is on the bus now.
    pub async fn resolved_running(&self) -> bool {
        let Ok(dbus) = zbus::fdo::DBusProxy::new(&self.conn).await else { return false };
        match zbus::names::BusName::try_from(BUS_NAME) {
            Ok(name) => dbus.name_has_owner(name).await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// The DNS servers resolved uses for everything but `skip_ifindex`
    /// (global and per-link), without its own stub: where names in our
    /// routing domains that are not the cluster's still go.
    pub async fn servers(&self, skip_ifindex: i32) -> Vec<IpAddr> {
        let proxy = match zbus::Proxy::new(&self.conn, BUS_NAME, OBJECT_PATH, INTERFACE).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read systemd-resolved's DNS servers");
                return Vec::new();
            }
        };
        let servers: Vec<(i32, i32, Vec<u8>)> = proxy.get_property("DNS").await.unwrap_or_default();
        servers
            .into_iter()
            .filter(|(ifindex, _, _)| *ifindex != skip_ifindex)
            .filter_map(|(_, family, bytes)| address(family, &bytes))
            .filter(|ip| !ip.is_loopback())
            .collect()
    }

    /// A stream that yields each time resolved gets a new owner (a start or
    /// a restart).
    async fn restarts(&self) -> zbus::Result<zbus::fdo::NameOwnerChangedStream> {
        let dbus = zbus::fdo::DBusProxy::new(&self.conn).await?;
        dbus.receive_name_owner_changed_with_args(&[(0, BUS_NAME)]).await
    }
}

fn address(family: i32, bytes: &[u8]) -> Option<IpAddr> {
    match (family, bytes.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        (libc::AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn family_bytes(ip: &IpAddr) -> (i32, Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => (libc::AF_INET, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6, v6.octets().to_vec()),
    }
}

impl Bus for SystemBus {
    fn call<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let method = call.method();
            let sent = match call {
                Call::SetLinkDns { ifindex, servers } => {
                    let servers: Vec<(i32, Vec<u8>)> = servers.iter().map(family_bytes).collect();
                    self.send(method, &(*ifindex, servers)).await
                }
                Call::SetLinkDomains { ifindex, domains } => self.send(method, &(*ifindex, domains.clone())).await,
                Call::SetLinkDefaultRoute { ifindex, enable } => self.send(method, &(*ifindex, *enable)).await,
                Call::SetLinkLlmnr { ifindex, mode }
                | Call::SetLinkMulticastDns { ifindex, mode }
                | Call::SetLinkDnssec { ifindex, mode }
                | Call::SetLinkDnsOverTls { ifindex, mode } => self.send(method, &(*ifindex, *mode)).await,
                Call::RevertLink { ifindex } => self.send(method, &(*ifindex,)).await,
            };
            sent.map_err(|e| BusError {
                call: call.to_string(),
                unknown_method: matches!(&e, zbus::Error::MethodError(name, _, _)
                    if name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod"),
                error: e.to_string(),
            })
        })
    }
}

impl SystemBus {
    async fn send<B>(&self, method: &str, body: &B) -> zbus::Result<()>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn.call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), method, body).await.map(drop)
    }
}

/// Sends `calls` in order. A method this resolved does not have is skipped
/// with a warning when it is only a refinement (default route, DNS over
/// TLS: both added after the per-link DNS itself); anything else fails.
pub async fn apply(bus: &dyn Bus, calls: &[Call]) -> Result<(), BusError> {
    for call in calls {
        match bus.call(call).await {
            Ok(()) => {}
            Err(e)
                if e.unknown_method
                    && matches!(call, Call::SetLinkDefaultRoute { .. } | Call::SetLinkDnsOverTls { .. }) =>
            {
                warn!(call = %call, "this systemd-resolved is too old for the call; skipping it");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The link configured in resolved for this session.
pub(crate) struct Session {
    bus: Arc<dyn Bus>,
    ifindex: i32,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    /// Configures the link and keeps it configured across resolved restarts.
    pub(crate) async fn start(bus: Arc<SystemBus>, ifindex: i32, calls: Vec<Call>) -> Result<Self, BusError> {
        // Subscribe first, so a restart between the calls and the
        // subscription is not missed.
        let restarts = bus.restarts().await;
        apply(bus.as_ref(), &calls).await?;
        let watcher = match restarts {
            Ok(mut stream) => {
                let bus = bus.clone();
                Some(tokio::spawn(async move {
                    use futures_util::StreamExt as _;
                    while let Some(signal) = stream.next().await {
                        let Ok(args) = signal.args() else { continue };
                        if args.new_owner().is_none() {
                            warn!("systemd-resolved stopped; cluster names need it back");
                            continue;
                        }
                        info!("systemd-resolved (re)started; configuring devnet's link again");
                        if let Err(e) = apply(bus.as_ref(), &calls).await {
                            warn!(error = %e, "could not configure systemd-resolved again");
                        }
                    }
                }))
            }
            Err(e) => {
                warn!(error = %e, "cannot watch systemd-resolved restarts");
                None
            }
        };
        Ok(Self { bus, ifindex, watcher })
    }

    /// Stops watching and reverts the link's settings in resolved.
    pub(crate) async fn stop(mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Err(e) = self.bus.call(&Call::RevertLink { ifindex: self.ifindex }).await {
            // The link goes away next anyway, and resolved forgets it then.
            warn!(error = %e, "reverting devnet's link in systemd-resolved");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records calls; answers "unknown method" for those named.
    #[derive(Default)]
    struct RecordingBus {
        calls: Mutex<Vec<String>>,
        unknown: Vec<&'static str>,
    }

    impl Bus for RecordingBus {
        fn call<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, Result<(), BusError>> {
            Box::pin(async move {
                self.calls.lock().expect("lock").push(call.to_string());
                if self.unknown.contains(&call.method()) {
                    return Err(BusError { call: call.to_string(), error: "unknown".into(), unknown_method: true });
                }
                Ok(())
            })
        }
    }

    fn calls() -> Vec<Call> {
        let policy = devnet_dns::NamePolicy::new("cluster.local", &["demo".into()], None).expect("policy");
        devnet_dns::resolved::link_calls(9, "169.254.53.53".parse().expect("ip"), &policy)
    }

    #[tokio::test]
    async fn an_old_resolved_without_default_route_still_gets_the_link_dns() {
        let bus = RecordingBus { unknown: vec!["SetLinkDefaultRoute", "SetLinkDNSOverTLS"], ..Default::default() };
        apply(&bus, &calls()).await.expect("refinements are optional");
        assert_eq!(bus.calls.lock().expect("lock").len(), 7, "every call was tried");
        // The DNS server itself is not optional.
        let bus = RecordingBus { unknown: vec!["SetLinkDNS"], ..Default::default() };
        let err = apply(&bus, &calls()).await.expect_err("no per-link DNS");
        assert!(err.to_string().contains("SetLinkDNS 9 [169.254.53.53]"), "{err}");
        assert_eq!(bus.calls.lock().expect("lock").len(), 1, "stops at the first real failure");
    }
}
