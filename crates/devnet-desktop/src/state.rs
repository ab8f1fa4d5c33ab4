//! The one word the icon shows: off, connecting, direct, tunnel, split,
//! degraded or error, for a session and for the whole app.

use devnet_model::status::{LinkState, Status};
use devnet_path::{Path, Verdict};
use serde::{Deserialize, Serialize};

/// What the tray icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum TrayState {
    /// No session.
    Off,
    /// Discovery, the relay's install, or the first dial.
    Connecting,
    /// Every CIDR routed by the office (directly or through a forwarding node).
    Direct,
    /// Every CIDR through devnet's tunnel to the relay.
    Tunnel,
    /// Some CIDRs direct, some tunnelled.
    Split,
    /// The relay was lost; reconnecting. Direct CIDRs still work.
    Degraded,
    /// A CIDR has no path at all, a connect failed, or devnetd is unreachable.
    Error,
}

impl TrayState {
    pub const ALL: [TrayState; 7] = [
        TrayState::Off,
        TrayState::Connecting,
        TrayState::Direct,
        TrayState::Tunnel,
        TrayState::Split,
        TrayState::Degraded,
        TrayState::Error,
    ];

    /// The word, as the menu and the window print it.
    pub fn word(self) -> &'static str {
        match self {
            TrayState::Off => "off",
            TrayState::Connecting => "connecting",
            TrayState::Direct => "direct",
            TrayState::Tunnel => "tunnel",
            TrayState::Split => "split",
            TrayState::Degraded => "degraded",
            TrayState::Error => "error",
        }
    }

    /// How much attention the state asks for, when several sessions run:
    /// the icon shows the one that asks most.
    fn urgency(self) -> u8 {
        match self {
            TrayState::Off => 0,
            TrayState::Direct => 1,
            TrayState::Tunnel => 2,
            TrayState::Split => 3,
            TrayState::Connecting => 4,
            TrayState::Degraded => 5,
            TrayState::Error => 6,
        }
    }

    /// Whether this state answers "how do packets go" (rather than "not yet").
    pub fn is_settled(self) -> bool {
        matches!(self, TrayState::Direct | TrayState::Tunnel | TrayState::Split)
    }
}

/// Whether a path is the office's own (no devnet tunnel in the way).
pub fn is_routed(path: Path) -> bool {
    matches!(path, Path::Direct | Path::Gateway)
}

/// The state of one session, from its status.
pub fn of_session(status: &Status) -> TrayState {
    match status.state {
        LinkState::Stopped => TrayState::Off,
        LinkState::Connecting => TrayState::Connecting,
        LinkState::Reconnecting => TrayState::Degraded,
        LinkState::Connected | LinkState::Direct => of_paths(&status.paths, status.state),
    }
}

fn of_paths(paths: &[Verdict], link: LinkState) -> TrayState {
    if paths.iter().any(|v| v.path == Path::Unreachable) {
        return TrayState::Error;
    }
    let routed = paths.iter().filter(|v| is_routed(v.path)).count();
    match (routed, paths.len()) {
        // No verdicts yet: the link itself says which way.
        (_, 0) if link == LinkState::Direct => TrayState::Direct,
        (_, 0) => TrayState::Tunnel,
        (0, _) => TrayState::Tunnel,
        (r, n) if r == n => TrayState::Direct,
        _ => TrayState::Split,
    }
}

/// The app's state: the sessions', and what the app itself is doing.
pub fn overall(sessions: impl IntoIterator<Item = TrayState>, app: AppActivity) -> TrayState {
    let mut states: Vec<TrayState> = sessions.into_iter().collect();
    match app {
        AppActivity::Idle => {}
        AppActivity::Connecting => states.push(TrayState::Connecting),
        AppActivity::Failed => states.push(TrayState::Error),
    }
    // A direct session beside a tunnelled one: some traffic each way.
    if states.contains(&TrayState::Direct) && states.contains(&TrayState::Tunnel) {
        states.push(TrayState::Split);
    }
    states.into_iter().max_by_key(|s| s.urgency()).unwrap_or(TrayState::Off)
}

/// What the app itself is doing besides the sessions devnetd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppActivity {
    Idle,
    /// Preparing a connect (discovery, relay install, waiting for the pod).
    Connecting,
    /// The last connect failed, or devnetd cannot be reached.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{status, verdict};

    #[test]
    fn a_session_state_for_each_link_state_and_mix_of_paths() {
        use LinkState as L;
        use Path as P;
        let table: &[(LinkState, &[Path], TrayState)] = &[
            (L::Stopped, &[], TrayState::Off),
            (L::Connecting, &[P::Tunnel, P::Tunnel], TrayState::Connecting),
            (L::Connected, &[P::Tunnel, P::Tunnel], TrayState::Tunnel),
            (L::Connected, &[], TrayState::Tunnel),
            (L::Direct, &[], TrayState::Direct),
            (L::Direct, &[P::Direct, P::Gateway], TrayState::Direct),
            (L::Connected, &[P::Direct, P::Tunnel], TrayState::Split),
            (L::Reconnecting, &[P::Direct, P::Tunnel], TrayState::Degraded),
            (L::Connected, &[P::Unreachable, P::Direct], TrayState::Error),
        ];
        for (link, paths, want) in table {
            let verdicts = paths.iter().enumerate().map(|(i, p)| verdict(&format!("10.{i}.0.0/16"), *p)).collect();
            assert_eq!(of_session(&status(*link, verdicts)), *want, "{link:?} {paths:?}");
        }
    }

    #[test]
    fn the_app_shows_what_asks_most_attention() {
        use TrayState::*;
        assert_eq!(overall([], AppActivity::Idle), Off);
        assert_eq!(overall([Direct], AppActivity::Idle), Direct);
        assert_eq!(overall([Direct, Tunnel], AppActivity::Idle), Split);
        assert_eq!(overall([Direct, Degraded], AppActivity::Idle), Degraded);
        assert_eq!(overall([Tunnel], AppActivity::Connecting), Connecting);
        assert_eq!(overall([Tunnel], AppActivity::Failed), Error);
        assert_eq!(overall([Off, Off], AppActivity::Idle), Off);
    }
}
