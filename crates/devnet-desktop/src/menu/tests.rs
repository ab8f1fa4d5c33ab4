use super::*;
use crate::samples::snapshot;
use crate::state::TrayState;

/// The whole menu for every state, as the user sees it.
#[test]
fn the_menu_for_every_state() {
    let want: &[(TrayState, &str)] = &[
        (
            TrayState::Off,
            "devnet is off
---
Connect to lab
> Clusters
  [ ] lab (current)
  [ ] staging-eu
---
Open devnet
Run doctor
Copy status
[ ] Start at login
---
Quit
",
        ),
        (
            TrayState::Connecting,
            "devnet: connecting to lab (waiting for the relay pod to be ready)
---
(Connecting to lab…)
> Clusters
  [ ] lab (current)
  [ ] staging-eu
---
Open devnet
Run doctor
Copy status
[ ] Start at login
---
Disconnect and quit
",
        ),
        (
            TrayState::Direct,
            "devnet: lab direct
> lab: direct
  10.244.0.0/16 pods: direct via 192.168.10.1 (eth0), 0.42 ms
  10.96.0.0/12 services: direct via 192.168.10.1 (eth0), 0.42 ms
  DNS: systemd-resolved: link devnet0, routing domains ~cluster.local ~svc
  ---
  Disconnect lab
---
Disconnect
> Clusters
  [x] lab (current)
  [ ] staging-eu
---
Open devnet
Run doctor
Copy status
[x] Start at login
---
Disconnect and quit
",
        ),
        (
            TrayState::Tunnel,
            "devnet: lab tunnel, relay direct 10.60.20.11:31443 (node port)
> lab: tunnel
  10.244.0.0/16 pods: tunnel
  10.96.0.0/12 services: tunnel
  relay: direct 10.60.20.11:31443 (node port)
  DNS: systemd-resolved: link devnet0, routing domains ~cluster.local ~svc
  ---
  Disconnect lab
---
Disconnect
> Clusters
  [x] lab (current)
  [ ] staging-eu
---
Open devnet
Run doctor
Copy status
[ ] Start at login
---
Disconnect and quit
",
        ),
        (
            TrayState::Split,
            "devnet: lab split, relay direct 10.60.20.11:31443 (node port)
> lab: split
  10.244.0.0/16 pods: direct via 192.168.10.1 (eth0), 0.42 ms
  10.96.0.0/12 services: tunnel
  relay: direct 10.60.20.11:31443 (node port)
  DNS: systemd-resolved: link devnet0, routing domains ~cluster.local ~svc
  ---
  Disconnect lab
---
Disconnect
> Clusters
  [x] lab (current)
  [ ] staging-eu
---
Open devnet
Run doctor
Copy status
[ ] Start at login
---
Disconnect and quit
",
        ),
        (
            TrayState::Degraded,
            "devnet: lab degraded, relay lost (the relay closed the connection (relay pod restarted)); reconnecting
> lab: degraded
  10.244.0.0/16 pods: direct via 192.168.10.1 (eth0), 0.42 ms
  10.96.0.0/12 services: tunnel
  relay: direct 10.60.20.11:31443 (node port)
  DNS: systemd-resolved: link devnet0, routing domains ~cluster.local ~svc
  ---
  Disconnect lab
---
Disconnect
> Clusters
  [x] lab (current)
  [ ] staging-eu
---
Open devnet
Run doctor
Copy status
[ ] Start at login
---
Disconnect and quit
",
        ),
        (
            TrayState::Error,
            "devnet: could not connect to staging-eu
the relay pod devnet/devnet-relay-6c9f4 is not ready: ImagePullBackOff: Back-off pulling image \"ghcr.io/devnet-dev/devnet-relay:0.1.0\"
---
Connect to lab
> Clusters
  [ ] lab (current)
  [ ] staging-eu
---
Open devnet
Run doctor
Copy status
[ ] Start at login
---
Quit
",
        ),
    ];
    assert_eq!(want.len(), TrayState::ALL.len(), "every state has its menu");
    for (state, menu) in want {
        assert_eq!(build(&snapshot(*state)).outline(), *menu, "the menu for {state:?}");
    }
}

#[test]
fn every_action_survives_its_native_id() {
    for (_, snap) in crate::samples::all() {
        for action in build(&snap).actions() {
            assert_eq!(Action::from_id(&action.id()), Some(action.clone()), "{action:?}");
        }
    }
    assert_eq!(Action::from_id("not json"), None);
}

#[test]
fn clicking_a_status_line_copies_exactly_it() {
    let snap = snapshot(TrayState::Split);
    let menu = build(&snap);
    let Entry::Item(first) = &menu.entries[0] else { panic!("the first line is the status") };
    assert_eq!(first.action, Some(Action::Copy { text: snap.headline.clone() }));
    assert!(menu.actions().contains(&Action::Copy { text: snap.sessions[0].paths[0].summary.clone() }));
}

#[test]
fn a_session_someone_else_started_cannot_be_ended_here() {
    let mut snap = snapshot(TrayState::Tunnel);
    snap.sessions[0].mine = false;
    let menu = build(&snap);
    assert!(!menu.actions().iter().any(|a| matches!(a, Action::Disconnect { .. })), "{menu:?}");
    let outline = menu.outline();
    assert!(!outline.contains("Disconnect lab"), "{outline}");
    assert!(outline.contains("  [x] (lab (current))\n"), "{outline}");
    assert!(outline.contains("\nQuit\n"), "quitting ends nothing of ours: {outline}");
}

#[test]
fn a_long_context_list_is_cut_and_points_to_the_window() {
    let mut snap = snapshot(TrayState::Off);
    snap.contexts = (0..40)
        .map(|i| crate::view::ContextEntry { name: format!("c{i}"), server: None, current: i == 0, connected: false })
        .collect();
    let outline = build(&snap).outline();
    assert!(outline.contains("  [ ] c14\n") && !outline.contains("c15"), "{outline}");
    assert!(outline.contains("25 more in the window…"), "{outline}");
}
