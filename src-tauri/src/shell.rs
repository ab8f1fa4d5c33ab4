//! The Tauri application: single instance, the tray, the window on
//! demand, the commands the window calls, and the tray's clicks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use devnet_desktop::menu::{self, Action};
use devnet_desktop::notify::Notification;
use devnet_desktop::view::{self, Snapshot};
use tauri::{AppHandle, Emitter, Manager, RunEvent, State, WebviewUrl, WebviewWindowBuilder};
use tauri_plugin_clipboard_manager::ClipboardExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::core::{Core, Sink};
use crate::platform;

/// The window's label.
const WINDOW: &str = "main";

/// Where snapshots go: the window (an event) and the tray; notifications
/// to the desktop's notification service.
struct Shell {
    app: AppHandle,
    tray: platform::Tray,
    /// The last menu and tooltip sent to the tray: a push that changes
    /// neither is not sent (devnetd pushes on every re-check).
    last: Mutex<Option<(menu::Menu, String, devnet_desktop::state::TrayState)>>,
}

impl Sink for Shell {
    fn snapshot(&self, snapshot: &Snapshot) {
        if self.app.get_webview_window(WINDOW).is_some() {
            let _ = self.app.emit_to(WINDOW, "snapshot", snapshot);
        }
        let menu = menu::build(snapshot);
        let tooltip = view::tooltip(&snapshot.headline, &snapshot.sessions);
        let next = (menu, tooltip, snapshot.state);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() == Some(&next) {
            return;
        }
        self.tray.show(&next.0, &next.1, next.2);
        *last = Some(next);
    }

    fn notify(&self, notification: Notification) {
        platform::notify(notification);
    }
}

/// Opens the window, or brings it forward.
fn open_window(app: &AppHandle) {
    if let Some(w) = app.get_webview_window(WINDOW) {
        let _ = w.show();
        let _ = w.set_focus();
        return;
    }
    let built = WebviewWindowBuilder::new(app, WINDOW, WebviewUrl::App("index.html".into()))
        .title("devnet")
        .inner_size(760.0, 700.0)
        .min_inner_size(520.0, 420.0)
        .build();
    if let Err(e) = built {
        warn!(error = %e, "could not open the window");
    }
}

fn copy(app: &AppHandle, text: String) -> Result<(), String> {
    app.clipboard().write_text(text).map_err(|e| e.to_string())
}

async fn quit(app: AppHandle, core: Arc<Core>) {
    core.disconnect_all().await;
    app.exit(0);
}

/// Does what a tray item says.
fn act(app: &AppHandle, core: &Arc<Core>, action: Action) {
    info!(?action, "tray");
    let result: Result<(), String> = match action {
        Action::Copy { text } => copy(app, text),
        Action::CopyStatus => copy(app, view::status_text(&core.snapshot().sessions)),
        Action::Connect { context } => core.connect(context).map_err(|e| e.to_string()),
        Action::Disconnect { session } => {
            let core = core.clone();
            tauri::async_runtime::spawn(async move {
                if let Err(e) = core.disconnect(session).await {
                    warn!(error = %e, "disconnect");
                }
            });
            Ok(())
        }
        Action::OpenWindow => {
            open_window(app);
            Ok(())
        }
        Action::RunDoctor { context } => {
            core.run_doctor(context);
            open_window(app);
            Ok(())
        }
        Action::ToggleAutostart => {
            let enabled = !core.snapshot().autostart;
            platform::set_autostart(enabled).map(|()| core.set_autostart_flag(enabled)).map_err(|e| format!("{e:#}"))
        }
        Action::Quit => {
            tauri::async_runtime::spawn(quit(app.clone(), core.clone()));
            Ok(())
        }
    };
    if let Err(e) = result {
        warn!(error = %e, "tray action failed");
    }
}

#[tauri::command]
async fn snapshot(core: State<'_, Arc<Core>>) -> Result<Snapshot, String> {
    Ok(core.snapshot())
}

#[tauri::command]
async fn connect(core: State<'_, Arc<Core>>, context: String) -> Result<(), String> {
    core.connect(context).map_err(|e| e.to_string())
}

#[tauri::command]
async fn disconnect(core: State<'_, Arc<Core>>, session: String) -> Result<(), String> {
    core.disconnect(session).await.map_err(|e| format!("{e:#}"))
}

#[tauri::command]
async fn run_doctor(core: State<'_, Arc<Core>>, context: String) -> Result<(), String> {
    core.run_doctor(context);
    Ok(())
}

#[tauri::command]
async fn copy_text(app: AppHandle, text: String) -> Result<(), String> {
    copy(&app, text)
}

#[tauri::command]
async fn copy_status(app: AppHandle, core: State<'_, Arc<Core>>) -> Result<(), String> {
    copy(&app, view::status_text(&core.snapshot().sessions))
}

#[tauri::command]
async fn set_autostart(core: State<'_, Arc<Core>>, enabled: bool) -> Result<(), String> {
    platform::set_autostart(enabled).map_err(|e| format!("{e:#}"))?;
    core.set_autostart_flag(enabled);
    Ok(())
}

/// What the command line says.
#[derive(Debug, Default)]
struct Args {
    /// Open the window at start (the autostart entry does not).
    window: bool,
    kubeconfig: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut out = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--window" => out.window = true,
            "--kubeconfig" => out.kubeconfig = it.next().map(PathBuf::from),
            "--help" | "-h" => {
                println!(
                    "devnet-tray [--window] [--kubeconfig PATH]\n\nThe devnet tray app. It talks to the devnet service (devnetd) at $DEVNET_SOCKET or {}.",
                    devnet_ipc::DEFAULT_SOCKET
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other}: try --help"),
        }
    }
    if out.kubeconfig.is_none() {
        out.kubeconfig = std::env::var_os("KUBECONFIG").map(PathBuf::from).filter(|p| !p.as_os_str().is_empty());
    }
    Ok(out)
}

pub fn run() -> Result<()> {
    let args = args()?;
    let app = tauri::Builder::default()
        // First, so a second start hands over before anything else runs.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| open_window(app)))
        .plugin(tauri_plugin_clipboard_manager::init())
        .invoke_handler(tauri::generate_handler![
            snapshot,
            connect,
            disconnect,
            run_doctor,
            copy_text,
            copy_status,
            set_autostart
        ])
        .setup(move |app| {
            let handle = app.handle().clone();
            let (actions_tx, mut actions) = mpsc::unbounded_channel::<Action>();
            let core = tauri::async_runtime::block_on(async {
                let tray = platform::Tray::start(&handle, actions_tx).await?;
                let shell = Shell { app: handle.clone(), tray, last: Mutex::new(None) };
                anyhow::Ok(Core::new(
                    devnet_ipc::socket_path(),
                    args.kubeconfig.clone(),
                    platform::autostart_enabled(),
                    Box::new(shell),
                ))
            })?;
            app.manage(core.clone());
            let h = handle.clone();
            tauri::async_runtime::spawn(async move {
                while let Some(action) = actions.recv().await {
                    act(&h, &core, action);
                }
            });
            if args.window {
                open_window(&handle);
            }
            Ok(())
        })
        .build(tauri::generate_context!())?;
    app.run(|_app, event| {
        // A tray app outlives its window: closing it is not quitting.
        if let RunEvent::ExitRequested { api, code: None, .. } = event {
            api.prevent_exit();
        }
    });
    Ok(())
}
