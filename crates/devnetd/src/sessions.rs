//! The sessions devnetd runs: one engine per cluster, each with its own TUN
//! device and journal (`<state-dir>/sessions/<device>/`), side by side when
//! they do not collide.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devnet_engine::config::Profile;
use devnet_engine::runner::SystemRunner;
use devnet_engine::status::Status;
use devnet_engine::transport::{Dial, DirectDial, Fallback};
use devnet_engine::{EngineControl, EngineHandle};
use devnet_ipc::message::{ConnectRequest, IpcError, ServerMsg, SessionStatus};
use devnet_model::Secret;
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::bridge::{BridgeDial, BridgeSlot};

/// At most this many sessions (and so TUN devices `devnet0`…).
const MAX_SESSIONS: usize = 8;

/// A running session.
#[derive(Debug)]
struct Session {
    owner_uid: u32,
    /// What it claims, for the collision check.
    claims: Claims,
    control: EngineControl,
    status: watch::Receiver<Status>,
    bridge: Arc<BridgeSlot>,
}

/// What a session takes for itself on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub cidrs: Vec<IpNet>,
    /// The cluster domain and namespaces: routing domains of the resolver.
    pub domains: Vec<String>,
    pub tun: String,
    /// Whether it points the system resolver at itself.
    pub dns: bool,
}

impl Claims {
    pub fn of(profile: &Profile) -> Self {
        let mut domains = vec![profile.cluster_domain.clone()];
        domains.extend(profile.namespaces.iter().cloned());
        Self { cidrs: profile.cidrs.clone(), domains, tun: profile.tun_name.clone(), dns: profile.dns_server.is_some() }
    }
}

/// Why `new` cannot run beside `old`, if it cannot. `old_backend` is how
/// the running session points the resolver (from its status).
pub fn collision(new: &Claims, old: &Claims, old_backend: Option<&str>) -> Option<String> {
    for n in &new.cidrs {
        if let Some(o) = old.cidrs.iter().find(|o| o.contains(&n.network()) || n.contains(&o.network())) {
            return Some(format!("CIDR {n} (overlaps {o})"));
        }
    }
    if let Some(d) = new.domains.iter().find(|d| old.domains.contains(d)) {
        return Some(format!("DNS domain {d}"));
    }
    if new.dns && old.dns && old_backend.is_some_and(|b| b.starts_with("resolv.conf")) {
        return Some("the system resolver (resolv.conf points at one session's DNS only; with systemd-resolved sessions share it)".into());
    }
    None
}

/// Every session, and where their state lives.
#[derive(Debug)]
pub struct Sessions {
    state_dir: PathBuf,
    resolv_conf: PathBuf,
    running: Mutex<BTreeMap<String, Session>>,
    /// Bumped on every change of any session: subscribers wake on it.
    changed: watch::Sender<u64>,
}

impl Sessions {
    pub fn new(state_dir: PathBuf, resolv_conf: PathBuf) -> Self {
        Self { state_dir, resolv_conf, running: Mutex::new(BTreeMap::new()), changed: watch::channel(0).0 }
    }

    /// Where each session's journal lives.
    pub fn sessions_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("sessions")
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Every session's status.
    pub fn snapshot(&self) -> Vec<SessionStatus> {
        self.running
            .lock()
            .expect("lock")
            .iter()
            .map(|(name, s)| SessionStatus {
                name: name.clone(),
                owner_uid: s.owner_uid,
                status: s.status.borrow().clone(),
            })
            .collect()
    }

    /// The bridge slot of `session` if `uid` owns it.
    pub fn bridge(&self, session: &str, uid: u32) -> Option<Arc<BridgeSlot>> {
        let running = self.running.lock().expect("lock");
        running.get(session).filter(|s| s.owner_uid == uid).map(|s| s.bridge.clone())
    }

    /// Validates `req` and starts its engine. `owner` is the caller's
    /// connection (for bridge requests and the session's end).
    pub async fn start(
        self: &Arc<Self>,
        uid: u32,
        req: ConnectRequest,
        owner: mpsc::Sender<ServerMsg>,
    ) -> Result<(), IpcError> {
        let profile = self.profile_for(&req)?;
        let claims = Claims::of(&profile);
        let name = req.session.clone();
        let bridge = Arc::new(BridgeSlot::new(name.clone(), uid, owner.clone()));
        let mut transports: Vec<Box<dyn Dial>> = Vec::new();
        let direct = if req.direct.is_empty() { vec![profile.relay] } else { req.direct.clone() };
        transports.push(Box::new(DirectDial { addrs: direct, timeout: Duration::from_millis(800), bypass: true }));
        if req.bridge {
            transports.push(Box::new(BridgeDial(bridge.clone())));
        }
        info!(session = %name, uid, tun = %profile.tun_name, cidrs = ?profile.cidrs, "starting a session");
        let engine = devnet_engine::start_with(
            profile,
            Arc::new(SystemRunner),
            Arc::new(Fallback(transports)),
            req.discovered.clone(),
        )
        .await
        .map_err(|e| IpcError::Engine { message: format!("{e:#}") })?;
        let session = Session { owner_uid: uid, claims, control: engine.control(), status: engine.status(), bridge };
        {
            let mut running = self.running.lock().expect("lock");
            // Checked again: another start may have won the race for the name.
            if running.contains_key(&name) {
                let control = session.control.clone();
                tokio::spawn(async move { control.disconnect().await });
                return Err(IpcError::Exists { session: name });
            }
            running.insert(name.clone(), session);
        }
        self.bump();
        tokio::spawn(self.clone().watch_engine(name, engine, owner));
        Ok(())
    }

    /// Forwards the engine's status changes to subscribers and forgets the
    /// session once its engine stopped.
    async fn watch_engine(self: Arc<Self>, name: String, engine: EngineHandle, owner: mpsc::Sender<ServerMsg>) {
        let mut status = engine.status();
        while status.changed().await.is_ok() {
            self.bump();
        }
        let error = engine.wait().await.err().map(|e| format!("{e:#}"));
        if let Some(e) = &error {
            warn!(session = %name, error = %e, "session ended with an error");
        } else {
            info!(session = %name, "session ended; its network changes are undone");
        }
        self.running.lock().expect("lock").remove(&name);
        let _ = owner.send(ServerMsg::Ended { session: name, error }).await;
        self.bump();
    }

    /// The profile for a request: its contents validated, with the paths
    /// and the device devnetd chooses. Refuses paths a client named and
    /// collisions with running sessions.
    fn profile_for(&self, req: &ConnectRequest) -> Result<Profile, IpcError> {
        let named = req.profile.named_paths();
        if !named.is_empty() {
            return Err(IpcError::NamedPaths { fields: named.into_iter().map(str::to_owned).collect() });
        }
        if req.session.is_empty()
            || req.session.len() > 253
            || !req.session.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:/".contains(c))
        {
            return Err(IpcError::BadRequest {
                message: format!("session name {:?} must be 1-253 letters, digits or -_.@:/", req.session),
            });
        }
        let running = self.running.lock().expect("lock");
        if running.contains_key(&req.session) {
            return Err(IpcError::Exists { session: req.session.clone() });
        }
        if running.len() >= MAX_SESSIONS {
            return Err(IpcError::BadRequest { message: format!("at most {MAX_SESSIONS} sessions run at once") });
        }
        let slot =
            (0..MAX_SESSIONS).find(|i| running.values().all(|s| s.claims.tun != format!("devnet{i}"))).unwrap_or(0);
        let tun = format!("devnet{slot}");
        let mut file = req.profile.clone();
        file.token = Some(req.token.clone());
        file.relay_ca_pem = Some(req.relay_ca_pem.clone());
        file.state_dir = Some(Self::sessions_dir(&self.state_dir).join(&tun));
        file.resolv_conf = Some(self.resolv_conf.clone());
        file.tun_name = Some(tun);
        // Each session's stub gets an address of its own on its own link
        // (systemd-resolved asks each link's server on that link).
        if file.dns_link_address.is_none() {
            file.dns_link_address = Some(format!("169.254.53.{}", 53 + slot));
        }
        let profile = file.validate().map_err(|e| IpcError::Config { message: e.to_string() })?;
        let claims = Claims::of(&profile);
        for (name, s) in running.iter() {
            let backend = s.status.borrow().dns_backend.clone();
            if let Some(what) = collision(&claims, &s.claims, backend.as_deref()) {
                return Err(IpcError::Collision { session: name.clone(), what });
            }
        }
        Ok(profile)
    }

    /// Ends `session` (the only one when `None`) for `uid`.
    pub async fn end(&self, uid: u32, session: Option<String>) -> Result<String, IpcError> {
        let (name, control) = {
            let running = self.running.lock().expect("lock");
            let names: Vec<String> = running.keys().cloned().collect();
            let name = match session {
                Some(n) => n,
                None if names.len() == 1 => names[0].clone(),
                None if names.is_empty() => {
                    return Err(IpcError::NoSession { session: "(any)".into(), running: names });
                }
                None => return Err(IpcError::WhichSession { running: names }),
            };
            let Some(s) = running.get(&name) else {
                return Err(IpcError::NoSession { session: name, running: names });
            };
            if uid != 0 && uid != s.owner_uid {
                return Err(IpcError::NotOwner { session: name, owner: s.owner_uid });
            }
            (name, s.control.clone())
        };
        control.disconnect().await;
        Ok(name)
    }

    /// Hands `session`'s engine a new client credential (its owner's
    /// renewal, after enrolling again): every later (re)connect presents
    /// it. Only the owner or root, as for [`Self::end`]; the secret is never
    /// logged.
    pub async fn renew_credential(&self, uid: u32, session: &str, credential: Secret) -> Result<(), IpcError> {
        let control = {
            let running = self.running.lock().expect("lock");
            let Some(s) = running.get(session) else {
                return Err(IpcError::NoSession {
                    session: session.to_owned(),
                    running: running.keys().cloned().collect(),
                });
            };
            if uid != 0 && uid != s.owner_uid {
                warn!(session, uid, owner = s.owner_uid, "refused a credential renewal from another user");
                return Err(IpcError::NotOwnerOfCredential { session: session.to_owned(), owner: s.owner_uid });
            }
            s.control.clone()
        };
        control.renew_credential(credential).await.map_err(|message| IpcError::Config { message })?;
        info!(session, uid, "client credential renewed");
        Ok(())
    }

    /// Ends every session and waits until each undid its changes.
    pub async fn end_all(&self) {
        let controls: Vec<EngineControl> =
            self.running.lock().expect("lock").values().map(|s| s.control.clone()).collect();
        for c in &controls {
            c.disconnect().await;
        }
        let mut changed = self.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.running.lock().expect("lock").is_empty() {
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                warn!("sessions did not stop within 10 s; the journal undoes the rest at the next start");
                return;
            }
        }
    }

    /// The owner's connection closed: its sessions keep running, without
    /// bridges until it reconnects.
    pub fn owner_gone(&self, owner: &mpsc::Sender<ServerMsg>) {
        for s in self.running.lock().expect("lock").values() {
            s.bridge.owner_gone_if(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(cidrs: &[&str], domains: &[&str], dns: bool) -> Claims {
        Claims {
            cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            tun: "devnet0".into(),
            dns,
        }
    }

    #[test]
    fn sessions_collide_on_cidrs_domains_and_a_single_resolver() {
        let a = claims(&["10.244.0.0/16", "10.96.0.0/16"], &["cluster.local", "team-a"], true);
        let cases = [
            (claims(&["10.245.0.0/16"], &["c2.local"], false), None, None),
            (
                claims(&["10.244.3.0/24"], &["c2.local"], false),
                None,
                Some("CIDR 10.244.3.0/24 (overlaps 10.244.0.0/16)"),
            ),
            (claims(&["10.0.0.0/8"], &["c2.local"], false), None, Some("CIDR 10.0.0.0/8 (overlaps 10.244.0.0/16)")),
            (claims(&["10.245.0.0/16"], &["cluster.local"], false), None, Some("DNS domain cluster.local")),
            (claims(&["10.245.0.0/16"], &["c2.local", "team-a"], false), None, Some("DNS domain team-a")),
            (
                claims(&["10.245.0.0/16"], &["c2.local"], true),
                Some("resolv.conf: /etc/resolv.conf"),
                Some("the system resolver"),
            ),
            (claims(&["10.245.0.0/16"], &["c2.local"], true), Some("systemd-resolved: link devnet0"), None),
        ];
        for (new, backend, want) in cases {
            let got = collision(&new, &a, backend);
            match want {
                None => assert_eq!(got, None, "{new:?}"),
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.starts_with(w)), "{got:?} should start with {w:?}"),
            }
        }
    }
}
