//! The tray menu as data: built from the snapshot, asserted whole in tests
//! for every state, and drawn by whichever tray backend the OS has. Each
//! item's [`Action`] is its native id (JSON), so a click parses back to a
//! typed action; an item without one is drawn disabled.

use serde::{Deserialize, Serialize};

use crate::view::Snapshot;

/// What a menu item does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case")]
pub enum Action {
    /// Put this text on the clipboard (status and evidence lines).
    Copy {
        text: String,
    },
    Connect {
        context: String,
    },
    Disconnect {
        session: String,
    },
    OpenWindow,
    RunDoctor {
        context: String,
    },
    /// Copy every session's full status.
    CopyStatus,
    ToggleAutostart,
    /// Quit (ending this user's sessions first: they live in this process).
    Quit,
}

impl Action {
    /// The native menu id.
    pub fn id(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The action a native id stands for.
    pub fn from_id(id: &str) -> Option<Action> {
        serde_json::from_str(id).ok()
    }
}

/// One line of the menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Entry {
    Item(Item),
    Separator,
    Submenu { title: String, entries: Vec<Entry> },
}

/// A clickable (or, without an action, disabled) line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub title: String,
    pub action: Option<Action>,
    /// `Some` for a check item.
    pub checked: Option<bool>,
}

/// The whole menu.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Menu {
    pub entries: Vec<Entry>,
}

fn item(title: impl Into<String>, action: Action) -> Entry {
    Entry::Item(Item { title: title.into(), action: Some(action), checked: None })
}

fn disabled(title: impl Into<String>) -> Entry {
    Entry::Item(Item { title: title.into(), action: None, checked: None })
}

fn check(title: impl Into<String>, action: Action, checked: bool) -> Entry {
    Entry::Item(Item { title: title.into(), action: Some(action), checked: Some(checked) })
}

fn copyable(text: String) -> Entry {
    item(text.clone(), Action::Copy { text })
}

/// Long lists make a tray menu unusable: contexts beyond this are left to the window.
pub const MAX_CONTEXTS: usize = 15;

/// The menu for a snapshot.
pub fn build(s: &Snapshot) -> Menu {
    let mut entries = vec![copyable(s.headline.clone())];
    if let Some(p) = s.progress.as_ref().filter(|p| p.failure.is_some() && p.done) {
        entries.push(copyable(p.failure.clone().unwrap_or_default()));
    }
    for session in &s.sessions {
        let mut lines: Vec<Entry> = session.paths.iter().map(|p| copyable(p.summary.clone())).collect();
        if let Some(t) = &session.status.transport {
            lines.push(copyable(format!("relay: {t}")));
        }
        if let Some(b) = &session.status.dns_backend {
            lines.push(copyable(format!("DNS: {b}")));
        }
        if session.mine {
            lines.push(Entry::Separator);
            lines.push(item(
                format!("Disconnect {}", session.name),
                Action::Disconnect { session: session.name.clone() },
            ));
        }
        entries.push(Entry::Submenu { title: format!("{}: {}", session.name, session.state.word()), entries: lines });
    }
    entries.push(Entry::Separator);
    let connecting = s.progress.as_ref().filter(|p| !p.done);
    let current = s.contexts.iter().find(|c| c.current);
    match (connecting, s.sessions.iter().filter(|x| x.mine).count(), current) {
        (Some(p), _, _) => entries.push(disabled(format!("Connecting to {}…", p.context))),
        (None, 0, Some(c)) => {
            entries.push(item(format!("Connect to {}", c.name), Action::Connect { context: c.name.clone() }))
        }
        (None, 0, None) => entries.push(disabled("Connect (no kubeconfig context)")),
        (None, 1, _) => {
            let own = s.sessions.iter().find(|x| x.mine).map(|x| x.name.clone()).unwrap_or_default();
            entries.push(item("Disconnect", Action::Disconnect { session: own }));
        }
        (None, _, _) => {}
    }
    if !s.contexts.is_empty() {
        let mut clusters: Vec<Entry> = s
            .contexts
            .iter()
            .take(MAX_CONTEXTS)
            .map(|c| {
                let title = if c.current { format!("{} (current)", c.name) } else { c.name.clone() };
                let mine = s.sessions.iter().any(|x| x.name == c.name && x.mine);
                match (c.connected, mine) {
                    (false, _) => check(title, Action::Connect { context: c.name.clone() }, false),
                    (true, true) => check(title, Action::Disconnect { session: c.name.clone() }, true),
                    // Another user's session: only they may end it.
                    (true, false) => Entry::Item(Item { title, action: None, checked: Some(true) }),
                }
            })
            .collect();
        if s.contexts.len() > MAX_CONTEXTS {
            clusters.push(item(format!("{} more in the window…", s.contexts.len() - MAX_CONTEXTS), Action::OpenWindow));
        }
        entries.push(Entry::Submenu { title: "Clusters".into(), entries: clusters });
    }
    entries.push(Entry::Separator);
    entries.push(item("Open devnet", Action::OpenWindow));
    let doctor_context = s.sessions.first().map(|x| x.name.clone()).or_else(|| current.map(|c| c.name.clone()));
    entries.push(match doctor_context {
        Some(context) => item("Run doctor", Action::RunDoctor { context }),
        None => disabled("Run doctor"),
    });
    entries.push(item("Copy status", Action::CopyStatus));
    entries.push(check("Start at login", Action::ToggleAutostart, s.autostart));
    entries.push(Entry::Separator);
    let owns = s.sessions.iter().any(|x| x.mine) || connecting.is_some();
    entries.push(item(if owns { "Disconnect and quit" } else { "Quit" }, Action::Quit));
    Menu { entries }
}

impl Menu {
    /// The menu as indented text, for tests and logs: `[x]` check items,
    /// `(…)` disabled ones, `>` submenus.
    pub fn outline(&self) -> String {
        fn walk(entries: &[Entry], depth: usize, out: &mut String) {
            for e in entries {
                let pad = "  ".repeat(depth);
                match e {
                    Entry::Separator => out.push_str(&format!("{pad}---\n")),
                    Entry::Submenu { title, entries } => {
                        out.push_str(&format!("{pad}> {title}\n"));
                        walk(entries, depth + 1, out);
                    }
                    Entry::Item(i) => {
                        let mark = match i.checked {
                            Some(true) => "[x] ",
                            Some(false) => "[ ] ",
                            None => "",
                        };
                        match i.action {
                            Some(_) => out.push_str(&format!("{pad}{mark}{}\n", i.title)),
                            None => out.push_str(&format!("{pad}{mark}({})\n", i.title)),
                        }
                    }
                }
            }
        }
        let mut out = String::new();
        walk(&self.entries, 0, &mut out);
        out
    }

    /// Every action in the menu, depth first.
    pub fn actions(&self) -> Vec<Action> {
        fn walk(entries: &[Entry], out: &mut Vec<Action>) {
            for e in entries {
                match e {
                    Entry::Item(Item { action: Some(a), .. }) => out.push(a.clone()),
                    Entry::Submenu { entries, .. } => walk(entries, out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.entries, &mut out);
        out
    }
}

#[cfg(test)]
mod tests;
