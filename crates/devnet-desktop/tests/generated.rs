//! The files generated from this crate's types and pictures, checked in so
//! the window builds without Rust: the TypeScript declarations, the sample
//! snapshots the window's browser tests are served, and the icons. This
//! test fails when one is stale; `DEVNET_REGENERATE=1 cargo test -p
//! devnet-desktop --test generated` rewrites them.

use std::path::{Path, PathBuf};

use devnet_desktop::icon::{Theme, png, render};
use devnet_desktop::state::TrayState;
use devnet_desktop::view;
use ts_rs::TS;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn declarations() -> String {
    let decls = [
        // The window's snapshot and what it holds.
        view::Snapshot::decl(),
        TrayState::decl(),
        view::DaemonView::decl(),
        view::SessionView::decl(),
        view::PathView::decl(),
        view::ContextEntry::decl(),
        view::ConnectProgress::decl(),
        view::ProgressStep::decl(),
        view::Phase::decl(),
        view::EventLine::decl(),
        view::DoctorView::decl(),
        // The shared model (devnet-model, devnet-path).
        devnet_model::doctor::DoctorReport::decl(),
        devnet_model::status::Status::decl(),
        devnet_model::status::LinkState::decl(),
        devnet_model::status::Discovered::decl(),
        devnet_path::Verdict::decl(),
        devnet_path::Path::decl(),
        devnet_path::Observation::decl(),
        devnet_path::RouteUsed::decl(),
        devnet_path::ProbeOutcome::decl(),
        devnet_path::GatewayTrial::decl(),
        devnet_path::Hop::decl(),
        devnet_path::HopAnswer::decl(),
        devnet_path::Proof::decl(),
        devnet_path::ProofOutcome::decl(),
        devnet_path::doctor::Finding::decl(),
        devnet_path::doctor::Severity::decl(),
    ];
    let mut out = String::from(
        "// Generated from devnet's Rust types by crates/devnet-desktop/tests/generated.rs: do not edit.\n\n",
    );
    for d in decls {
        out += "export ";
        out += &d;
        out += "\n\n";
    }
    out
}

fn snapshots() -> String {
    let map: serde_json::Map<String, serde_json::Value> = devnet_desktop::samples::all()
        .into_iter()
        .map(|(state, snap)| (state.word().to_owned(), serde_json::to_value(snap).expect("snapshot as JSON")))
        .collect();
    serde_json::to_string_pretty(&map).expect("JSON") + "\n"
}

fn files() -> Vec<(PathBuf, Vec<u8>)> {
    let root = repo();
    let mut files = vec![
        (root.join("ui/src/generated/devnet.ts"), declarations().into_bytes()),
        (root.join("ui/tests/fixtures/snapshots.json"), snapshots().into_bytes()),
    ];
    for state in TrayState::ALL {
        for theme in Theme::ALL {
            let name = format!("ui/public/icons/{}-{}.png", state.word(), theme.word());
            files.push((root.join(name), png(&render(state, theme, 32), 32, 32)));
        }
    }
    // The app's own icon (window, bundle): the connected glyph.
    for size in [32u32, 128, 256] {
        let name = if size == 256 { "icon.png".to_owned() } else { format!("{size}x{size}.png") };
        files.push((
            root.join("src-tauri/icons").join(name),
            png(&render(TrayState::Direct, Theme::Light, size), size, size),
        ));
    }
    // The launcher's icon in the hicolor theme, at the sizes desktops ask
    // for (the Linux packages install this tree under /usr/share/icons).
    for size in [16u32, 22, 24, 32, 48, 64, 128, 256] {
        let name = format!("installers/linux/icons/hicolor/{size}x{size}/apps/devnet.png");
        files.push((root.join(name), png(&render(TrayState::Direct, Theme::Light, size), size, size)));
    }
    files
}

#[test]
fn generated_files_are_current() {
    let regenerate = std::env::var_os("DEVNET_REGENERATE").is_some();
    let mut stale = Vec::new();
    for (path, want) in files() {
        let have = std::fs::read(&path).unwrap_or_default();
        if have == want {
            continue;
        }
        if regenerate {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &want).expect("write");
        } else {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run `DEVNET_REGENERATE=1 cargo test -p devnet-desktop --test generated`): {stale:?}"
    );
}
