//! The `devnet` binary's own surface, without a lab: completions, and the
//! errors a user sees when devnetd is not there.

use std::process::Command;

fn devnet(args: &[&str], socket: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_devnet"))
        .args(args)
        .env("DEVNET_SOCKET", socket)
        .env("DEVNET_STATE_DIR", "/nonexistent/devnet-state")
        .output()
        .expect("run devnet")
}

#[test]
fn completions_for_every_shell_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = devnet(&["completion", shell], "/nonexistent/devnetd.sock");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        for word in ["connect", "status", "disconnect", "foreground", "session"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}

#[test]
fn status_without_devnetd_says_how_to_start_it_in_one_line() {
    let out = devnet(&["status"], "/nonexistent/devnetd.sock");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("devnetd is not running") && err.contains("systemctl start devnetd"), "{err}");
}
