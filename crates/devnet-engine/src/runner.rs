//! Every OS command the engine runs goes through a [`Runner`], so tests can
//! record and assert the exact commands (golden tests) without root.

use std::sync::Mutex;

/// A command that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{command}` failed: {stderr}")]
pub struct RunError {
    pub command: String,
    pub stderr: String,
}

/// Runs an OS command and returns its standard output.
pub trait Runner: Send + Sync + std::fmt::Debug {
    fn run(&self, argv: &[String]) -> Result<String, RunError>;
}

/// Where the engine looks for `ip` and `sysctl`: the system's own
/// directories, never `PATH`, which whoever started a root process may have
/// pointed anywhere.
pub const TRUSTED_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Finds `program` in `dirs`: a regular file (through links) that only root
/// may change, so no one but root can have put it there.
pub fn trusted_program(program: &str, dirs: &[&str]) -> Result<std::path::PathBuf, RunError> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |stderr: String| RunError { command: program.to_owned(), stderr };
    if program.contains('/') {
        return Err(refuse(format!("{program:?} is a path; the engine runs only programs it finds in {dirs:?}")));
    }
    for dir in dirs {
        let path = std::path::Path::new(dir).join(program);
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if !meta.is_file() {
            continue;
        }
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(refuse(format!(
                "{} is not root's alone (owner uid {}, mode {:o}): refusing to run it as root; reinstall the package that owns it",
                path.display(),
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        return Ok(path);
    }
    Err(refuse(format!("{program} is not in {dirs:?}: install it (iproute2 for ip, procps for sysctl)")))
}

/// Runs commands for real: programs from [`TRUSTED_DIRS`], with an
/// environment of their own (the C locale, so their output parses).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, argv: &[String]) -> Result<String, RunError> {
        let command = argv.join(" ");
        tracing::debug!(%command, "running");
        let (program, args) =
            argv.split_first().ok_or_else(|| RunError { command: String::new(), stderr: "empty command".into() })?;
        let program = trusted_program(program, &TRUSTED_DIRS)?;
        let out = std::process::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", TRUSTED_DIRS.join(":"))
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| RunError { command: command.clone(), stderr: e.to_string() })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(RunError { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() })
        }
    }
}

/// Records commands and answers them from canned outputs (first prefix match).
#[derive(Debug, Default)]
pub struct RecordingRunner {
    pub commands: Mutex<Vec<String>>,
    pub outputs: Vec<(String, String)>,
}

impl RecordingRunner {
    /// A runner that answers commands starting with `prefix` with `output`.
    pub fn with_outputs(outputs: &[(&str, &str)]) -> Self {
        Self {
            commands: Mutex::default(),
            outputs: outputs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect(),
        }
    }

    /// The commands run so far, each joined by spaces.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.commands.lock().expect("lock"))
    }
}

impl Runner for RecordingRunner {
    fn run(&self, argv: &[String]) -> Result<String, RunError> {
        let command = argv.join(" ");
        self.commands.lock().expect("lock").push(command.clone());
        Ok(self
            .outputs
            .iter()
            .find(|(p, _)| command.starts_with(p.as_str()))
            .map(|(_, o)| o.clone())
            .unwrap_or_default())
    }
}

/// Builds an argv from string slices.
pub fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn programs_come_from_the_system_directories_only() {
        let ip = trusted_program("ip", &TRUSTED_DIRS).expect("ip is installed");
        assert!(TRUSTED_DIRS.iter().any(|d| ip.starts_with(d)), "{}", ip.display());
        let e = trusted_program("./ip", &TRUSTED_DIRS).expect_err("a path is refused");
        assert!(e.stderr.contains("is a path"), "{e}");
        let e = trusted_program("no-such-tool", &TRUSTED_DIRS).expect_err("missing");
        assert!(e.stderr.contains("is not in [\"/usr/sbin\""), "{e}");
    }

    #[test]
    fn a_program_others_may_change_is_refused() {
        let dir = std::env::temp_dir().join(format!("devnet-runner-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let fake = dir.join("ip");
        std::fs::write(&fake, "#!/bin/sh\necho pwned\n").expect("write");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let d = dir.display().to_string();
        let e = trusted_program("ip", &[d.as_str()]).expect_err("world-writable");
        assert!(e.stderr.contains("is not root's alone"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_system_runner_runs_the_real_ip() {
        let out = SystemRunner.run(&argv(&["ip", "-V"])).expect("ip -V");
        assert!(out.contains("ip utility"), "{out}");
    }
}
