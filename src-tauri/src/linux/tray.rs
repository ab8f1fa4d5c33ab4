//! The StatusNotifierItem: icon pixmaps at the sizes panels ask for, the
//! tooltip, and the menu drawn from `devnet-desktop`'s model.

use anyhow::{Context, Result};
use devnet_desktop::icon::{self, Theme};
use devnet_desktop::menu::{Action, Entry, Menu};
use devnet_desktop::state::TrayState;
use ksni::TrayMethods;
use ksni::menu::{CheckmarkItem, StandardItem, SubMenu};
use tokio::sync::mpsc;

struct Item {
    state: TrayState,
    theme: Theme,
    tooltip: String,
    menu: Menu,
    actions: mpsc::UnboundedSender<Action>,
}

/// The panel's theme: `$DEVNET_TRAY_THEME` (light or dark), else dark,
/// which most panels are (StatusNotifierItem does not say).
fn theme() -> Theme {
    match std::env::var("DEVNET_TRAY_THEME").as_deref() {
        Ok("light") => Theme::Light,
        _ => Theme::Dark,
    }
}

fn items(entries: &[Entry]) -> Vec<ksni::MenuItem<Item>> {
    entries
        .iter()
        .map(|e| match e {
            Entry::Separator => ksni::MenuItem::Separator,
            Entry::Submenu { title, entries } => {
                SubMenu { label: escape(title), submenu: items(entries), ..Default::default() }.into()
            }
            Entry::Item(i) => {
                let action = i.action.clone();
                let enabled = action.is_some();
                let activate = Box::new(move |t: &mut Item| {
                    if let Some(a) = &action {
                        let _ = t.actions.send(a.clone());
                    }
                });
                match i.checked {
                    Some(checked) => {
                        CheckmarkItem { label: escape(&i.title), enabled, checked, activate, ..Default::default() }
                            .into()
                    }
                    None => StandardItem { label: escape(&i.title), enabled, activate, ..Default::default() }.into(),
                }
            }
        })
        .collect()
}

/// DBusMenu reads `_` as a mnemonic: double it to show it.
fn escape(label: &str) -> String {
    label.replace('_', "__")
}

impl ksni::Tray for Item {
    fn id(&self) -> String {
        "devnet".into()
    }

    fn title(&self) -> String {
        format!("devnet: {}", self.state.word())
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        [16u32, 22, 24, 32, 48]
            .iter()
            .map(|&size| ksni::Icon {
                width: size as i32,
                height: size as i32,
                data: icon::to_argb32_be(&icon::render(self.state, self.theme, size)),
            })
            .collect()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        let mut lines = self.tooltip.lines();
        ksni::ToolTip {
            title: lines.next().unwrap_or_default().to_owned(),
            description: lines.collect::<Vec<_>>().join("\n"),
            ..Default::default()
        }
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        items(&self.menu.entries)
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        let _ = self.actions.send(Action::OpenWindow);
    }
}

/// The tray item, running on the session bus.
pub struct Tray(ksni::Handle<Item>);

impl Tray {
    pub async fn start(_app: &tauri::AppHandle, actions: mpsc::UnboundedSender<Action>) -> Result<Tray> {
        let item =
            Item { state: TrayState::Off, theme: theme(), tooltip: "devnet".into(), menu: Menu::default(), actions };
        // Exported even before a panel's watcher appears: it registers when one does.
        let handle = item
            .assume_sni_available(true)
            .spawn()
            .await
            .context("starting the tray icon on the D-Bus session bus (is DBUS_SESSION_BUS_ADDRESS set?)")?;
        Ok(Tray(handle))
    }

    pub fn show(&self, menu: &Menu, tooltip: &str, state: TrayState) {
        let (handle, menu, tooltip) = (self.0.clone(), menu.clone(), tooltip.to_owned());
        tauri::async_runtime::spawn(async move {
            handle
                .update(move |t| {
                    t.menu = menu;
                    t.tooltip = tooltip;
                    t.state = state;
                })
                .await;
        });
    }
}
