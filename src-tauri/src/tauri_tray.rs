//! macOS and Windows: the tray through Tauri's own tray icon (the
//! platform's native status item / notification-area icon), drawn from the
//! same menu model and icons as Linux's. Not compiled on the Linux CI
//! machines: it is kept to the same signatures as `linux::tray`, and all
//! its decisions are `devnet-desktop`'s, tested there.

use anyhow::Result;
use devnet_desktop::icon::{self, Theme};
use devnet_desktop::menu::{Action, Entry, Menu};
use devnet_desktop::state::TrayState;
use tauri::menu::{CheckMenuItem, IsMenuItem, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Wry};
use tokio::sync::mpsc;

pub struct Tray {
    app: AppHandle,
    icon: TrayIcon,
}

fn build(app: &AppHandle, entries: &[Entry]) -> tauri::Result<Vec<Box<dyn IsMenuItem<Wry>>>> {
    let mut out: Vec<Box<dyn IsMenuItem<Wry>>> = Vec::new();
    for e in entries {
        match e {
            Entry::Separator => out.push(Box::new(PredefinedMenuItem::separator(app)?)),
            Entry::Submenu { title, entries } => {
                let items = build(app, entries)?;
                let refs: Vec<&dyn IsMenuItem<Wry>> = items.iter().map(|b| b.as_ref()).collect();
                out.push(Box::new(Submenu::with_items(app, title, true, &refs)?));
            }
            Entry::Item(i) => {
                let id = i.action.as_ref().map(Action::id).unwrap_or_default();
                let enabled = i.action.is_some();
                match i.checked {
                    Some(c) => out.push(Box::new(CheckMenuItem::with_id(app, id, &i.title, enabled, c, None::<&str>)?)),
                    None => out.push(Box::new(MenuItem::with_id(app, id, &i.title, enabled, None::<&str>)?)),
                }
            }
        }
    }
    Ok(out)
}

impl Tray {
    pub async fn start(app: &AppHandle, actions: mpsc::UnboundedSender<Action>) -> Result<Tray> {
        let icon = TrayIconBuilder::with_id("devnet")
            .icon(tauri::image::Image::new_owned(icon::render(TrayState::Off, Theme::Dark, 32), 32, 32))
            .on_menu_event(move |_app, event| {
                if let Some(a) = Action::from_id(event.id().as_ref()) {
                    let _ = actions.send(a);
                }
            })
            .build(app)?;
        Ok(Tray { app: app.clone(), icon })
    }

    pub fn show(&self, menu: &Menu, tooltip: &str, state: TrayState) {
        let (app, icon, menu, tooltip) = (self.app.clone(), self.icon.clone(), menu.clone(), tooltip.to_owned());
        // Menus and icons change on the main thread only.
        let _ = self.app.run_on_main_thread(move || {
            if let Ok(items) = build(&app, &menu.entries) {
                let refs: Vec<&dyn IsMenuItem<Wry>> = items.iter().map(|b| b.as_ref()).collect();
                if let Ok(m) = tauri::menu::Menu::with_items(&app, &refs) {
                    let _ = icon.set_menu(Some(m));
                }
            }
            let _ = icon.set_icon(Some(tauri::image::Image::new_owned(icon::render(state, Theme::Dark, 32), 32, 32)));
            let _ = icon.set_tooltip(Some(tooltip));
        });
    }
}
