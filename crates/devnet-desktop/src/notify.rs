//! When to tell the user the path changed, sans-IO: the app feeds every
//! status push with the time; [`Notifier::poll`] says what to show, and
//! [`Notifier::next_wake`] when to ask again.
//!
//! A change is shown once it has held for [`Policy::settle`] (a flap that
//! comes back is never shown), at most once per [`Policy::min_gap`] per
//! session (changes in between are folded into one), and never for a push
//! that changes nothing: devnetd re-checks paths every few seconds, and the
//! same answer again is not news.

use std::collections::BTreeMap;
use std::time::Duration;

use devnet_path::Path;
use ipnet::IpNet;

use crate::state::{TrayState, is_routed};
use crate::view::SessionView;

/// The timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub settle: Duration,
    pub min_gap: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { settle: Duration::from_secs(3), min_gap: Duration::from_secs(30) }
    }
}

/// What a session looks like, for deciding whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    state: TrayState,
    paths: Vec<(IpNet, Option<String>, Path)>,
}

impl Shape {
    fn of(s: &SessionView) -> Shape {
        Shape {
            state: s.state,
            paths: s.paths.iter().map(|p| (p.verdict.cidr, p.role.clone(), p.verdict.path)).collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Track {
    /// What the user was last told (None: nothing yet).
    shown: Option<Shape>,
    /// The newest shape and since when it holds.
    current: Option<(Shape, Duration)>,
    last_sent: Option<Duration>,
}

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub session: String,
    pub title: String,
    pub body: String,
}

/// Decides notifications; holds no clock of its own.
#[derive(Debug, Default)]
pub struct Notifier {
    policy: Policy,
    sessions: BTreeMap<String, Track>,
}

impl Notifier {
    pub fn new(policy: Policy) -> Self {
        Notifier { policy, sessions: BTreeMap::new() }
    }

    /// Every session devnetd reports now (sessions that are gone are forgotten).
    pub fn observe(&mut self, now: Duration, sessions: &[SessionView]) {
        self.sessions.retain(|name, _| sessions.iter().any(|s| &s.name == name));
        for s in sessions {
            let shape = Shape::of(s);
            let track = self.sessions.entry(s.name.clone()).or_default();
            match &track.current {
                Some((same, _)) if *same == shape => {}
                _ => track.current = Some((shape, now)),
            }
        }
    }

    /// The notification due at `now`, if any (call until `None`).
    pub fn poll(&mut self, now: Duration) -> Option<Notification> {
        let policy = self.policy;
        for (name, track) in &mut self.sessions {
            let Some((shape, since)) = &track.current else { continue };
            if now < *since + policy.settle || track.shown.as_ref() == Some(shape) {
                continue;
            }
            // Connecting and off are not news: the window shows them, and
            // the settled answer that follows is what the user waits for.
            if !(shape.state.is_settled() || shape.state == TrayState::Degraded || shape.state == TrayState::Error) {
                continue;
            }
            if track.last_sent.is_some_and(|at| now < at + policy.min_gap) {
                continue;
            }
            let note = words(name, track.shown.as_ref(), shape);
            track.shown = Some(shape.clone());
            track.last_sent = Some(now);
            return Some(note);
        }
        None
    }

    /// When [`poll`](Self::poll) may next have something (None: only after the next push).
    pub fn next_wake(&self) -> Option<Duration> {
        self.sessions
            .values()
            .filter_map(|t| {
                let (shape, since) = t.current.as_ref()?;
                if t.shown.as_ref() == Some(shape) {
                    return None;
                }
                let settled = *since + self.policy.settle;
                Some(t.last_sent.map_or(settled, |at| settled.max(at + self.policy.min_gap)))
            })
            .min()
    }
}

fn group(shape: &Shape, routed: bool) -> String {
    // Each role once: a cluster has a pod block per node and family.
    let mut names: Vec<String> = Vec::new();
    for (cidr, role, path) in &shape.paths {
        let name = role.clone().unwrap_or_else(|| cidr.to_string());
        if is_routed(*path) == routed && *path != Path::Unreachable && !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(" and ")
}

fn words(session: &str, before: Option<&Shape>, now: &Shape) -> Notification {
    let routed = group(now, true);
    let tunnelled = group(now, false);
    let (title, body) = match (now.state, before.map(|b| b.state)) {
        (TrayState::Direct, Some(_)) => {
            (format!("{session}: direct"), format!("the office routes {routed} now: direct, no tunnel"))
        }
        (TrayState::Direct, None) => (format!("{session}: direct"), format!("connected; the office routes {routed}")),
        (TrayState::Tunnel, Some(TrayState::Degraded)) => {
            (format!("{session}: tunnel"), "the relay is back: traffic flows through the tunnel again".to_owned())
        }
        (TrayState::Tunnel, Some(_)) => {
            (format!("{session}: tunnel"), format!("the office no longer routes {tunnelled}: devnet tunnels them"))
        }
        (TrayState::Tunnel, None) => {
            (format!("{session}: tunnel"), format!("connected; {tunnelled} go through devnet's tunnel"))
        }
        (TrayState::Split, _) => {
            (format!("{session}: split"), format!("the office routes {routed}; devnet tunnels {tunnelled}"))
        }
        (TrayState::Degraded, _) => (
            format!("{session}: relay lost"),
            format!(
                "reconnecting to the relay; {} still work",
                if routed.is_empty() { "no CIDRs".to_owned() } else { routed }
            ),
        ),
        (TrayState::Error, _) => {
            (format!("{session}: no path"), "a CIDR has no path: open devnet to see which and why".to_owned())
        }
        (other, _) => (format!("{session}: {}", other.word()), String::new()),
    };
    Notification { session: session.to_owned(), title, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{status, verdict};
    use devnet_model::status::LinkState;

    fn lab(link: LinkState, pods: Path, services: Path) -> Vec<SessionView> {
        let mut s = status(link, vec![verdict("10.244.0.0/16", pods), verdict("10.96.0.0/12", services)]);
        // A second pod block (another node, or IPv6) says "pods" once, not twice.
        s.paths.push(verdict("10.245.0.0/16", pods));
        s.discovered.push(devnet_model::status::Discovered {
            what: "pod CIDR".into(),
            value: "10.245.0.0/16".into(),
            source: "node b".into(),
        });
        vec![SessionView::new("lab".into(), true, s)]
    }

    /// A stepped clock: push, then poll at each whole second up to `until`.
    fn run(n: &mut Notifier, from: u64, until: u64, sessions: &[SessionView]) -> Vec<(u64, Notification)> {
        n.observe(Duration::from_secs(from), sessions);
        let mut out = Vec::new();
        for t in from..=until {
            while let Some(x) = n.poll(Duration::from_secs(t)) {
                out.push((t, x));
            }
        }
        out
    }

    #[test]
    fn walking_into_the_office_is_told_once_after_it_settles() {
        use Path::*;
        let mut n = Notifier::new(Policy::default());
        let first = run(&mut n, 0, 10, &lab(LinkState::Connected, Tunnel, Tunnel));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, 3, "shown once it held for 3 s");
        assert_eq!(first[0].1.body, "connected; pods and services go through devnet's tunnel");
        // Re-checks every 5 s with the same answer: nothing.
        for t in (10..60).step_by(5) {
            assert!(run(&mut n, t, t + 4, &lab(LinkState::Connected, Tunnel, Tunnel)).is_empty(), "at {t}");
        }
        let walked_in = run(&mut n, 60, 70, &lab(LinkState::Direct, Direct, Direct));
        assert_eq!(walked_in.len(), 1);
        assert_eq!(walked_in[0].0, 63);
        assert_eq!(walked_in[0].1.title, "lab: direct");
        assert_eq!(walked_in[0].1.body, "the office routes pods and services now: direct, no tunnel");
    }

    #[test]
    fn a_flap_that_comes_back_within_the_settle_time_is_never_shown() {
        use Path::*;
        let mut n = Notifier::new(Policy::default());
        run(&mut n, 0, 10, &lab(LinkState::Connected, Tunnel, Tunnel));
        assert!(run(&mut n, 20, 21, &lab(LinkState::Reconnecting, Tunnel, Tunnel)).is_empty());
        assert!(run(&mut n, 22, 40, &lab(LinkState::Connected, Tunnel, Tunnel)).is_empty());
    }

    #[test]
    fn changes_within_the_gap_are_folded_into_one() {
        use Path::*;
        let mut n = Notifier::new(Policy::default());
        run(&mut n, 0, 4, &lab(LinkState::Connected, Tunnel, Tunnel));
        // 4 s later the office starts routing pods, then services too: one
        // notification when the 30 s since the last has passed, saying the latest.
        assert!(run(&mut n, 5, 12, &lab(LinkState::Connected, Direct, Tunnel)).is_empty());
        assert_eq!(n.next_wake(), Some(Duration::from_secs(33)));
        let got = run(&mut n, 13, 40, &lab(LinkState::Direct, Direct, Direct));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, 33);
        assert_eq!(got[0].1.title, "lab: direct");
        assert_eq!(n.next_wake(), None, "nothing left to tell");
    }

    #[test]
    fn a_lost_relay_names_what_still_works() {
        use Path::*;
        let mut n = Notifier::new(Policy::default());
        run(&mut n, 0, 4, &lab(LinkState::Connected, Direct, Tunnel));
        let lost = run(&mut n, 40, 50, &lab(LinkState::Reconnecting, Direct, Tunnel));
        assert_eq!(lost[0].1.body, "reconnecting to the relay; pods still work");
        let back = run(&mut n, 80, 90, &lab(LinkState::Connected, Direct, Tunnel));
        assert_eq!(back[0].1.body, "the office routes pods; devnet tunnels services");
    }

    #[test]
    fn connecting_is_not_news_and_gone_sessions_are_forgotten() {
        use Path::*;
        let mut n = Notifier::new(Policy::default());
        assert!(run(&mut n, 0, 10, &lab(LinkState::Connecting, Tunnel, Tunnel)).is_empty());
        run(&mut n, 11, 20, &[]);
        assert_eq!(n.next_wake(), None);
    }
}
