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

/// Runs commands for real.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, argv: &[String]) -> Result<String, RunError> {
        let command = argv.join(" ");
        tracing::debug!(%command, "running");
        let (program, args) =
            argv.split_first().ok_or_else(|| RunError { command: String::new(), stderr: "empty command".into() })?;
        let out = std::process::Command::new(program)
            .args(args)
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
