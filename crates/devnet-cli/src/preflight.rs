//! `devnet preflight`: checks the way to a debugger before an IDE attaches
//! (`devnet-preflight` does the work). Human text goes to stderr; `--json`
//! prints the report on stdout, and `--json --progress` one event per line
//! before it. The exit code is the failure class (docs/preflight.md).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use devnet_model::preflight::{Failure, Progress, Protocol, Report, Step};
use devnet_preflight::{Options, Target};

use crate::kube::KubeArgs;

#[derive(clap::Args, Debug)]
pub struct PreflightArgs {
    /// What the debugger will attach to: svc/NAME[.NS]:PORT, pod/NAME[.NS]:PORT,
    /// deploy/NAME[.NS]:PORT, HOST:PORT, IP:PORT or [IPv6]:PORT.
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    #[command(flatten)]
    kube: KubeArgs,
    /// The namespace of targets that name none (default: the context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// The debugger to expect (default: from the pod's spec, else the port).
    #[arg(long, value_enum, default_value_t = Proto::Auto)]
    proto: Proto,
    /// `deep` also probes debuggers that serve one client (Delve without
    /// --accept-multiclient, debugpy), which uses up their connection.
    #[arg(long, value_enum, default_value_t = Depth::Safe)]
    probe: Depth,
    /// Start a session (`devnet connect`, in the background) when none covers the target.
    #[arg(long)]
    connect: bool,
    /// The whole run's time limit: 20s, 1500ms, 1m.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// With --json: an event per line as each step starts and ends, the report last.
    #[arg(long, requires = "json")]
    progress: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Auto,
    Jdwp,
    Dlv,
    Debugpy,
    Node,
    Tcp,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    Safe,
    Deep,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: write 20s, 1500ms or 1m");
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(bad()),
    };
    if d.is_zero() { Err(bad()) } else { Ok(d) }
}

fn step_name(s: Step) -> &'static str {
    match s {
        Step::Session => "session",
        Step::Resolve => "resolve",
        Step::Path => "path",
        Step::Pod => "pod",
        Step::Connect => "connect",
        Step::Probe => "probe",
    }
}

/// Runs the preflight and returns its exit code.
pub async fn run(args: PreflightArgs, socket: PathBuf) -> u8 {
    let targets: Result<Vec<Target>, _> = args.targets.iter().map(|t| Target::parse(t)).collect();
    let targets = match targets {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Failure::Usage.exit_code() as u8;
        }
    };
    let opts = Options {
        targets,
        // An IDE runs this without a terminal: an exec plugin must not wait
        // for a password nobody can type.
        cluster: devnet_kube::ClusterOptions { non_interactive: true, ..args.kube.options() },
        namespace: args.namespace,
        protocol: match args.proto {
            Proto::Auto => None,
            Proto::Jdwp => Some(Protocol::Jdwp),
            Proto::Dlv => Some(Protocol::Delve),
            Proto::Debugpy => Some(Protocol::Debugpy),
            Proto::Node => Some(Protocol::NodeInspector),
            Proto::Tcp => Some(Protocol::Tcp),
        },
        deep: args.probe == Depth::Deep,
        connect: args.connect,
        timeout: args.timeout,
        socket,
        devnet: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("devnet")),
    };
    let (json, progress) = (args.json, args.progress);
    let mut emit = |event: Progress| {
        if progress {
            print_json(&event);
        }
        match event {
            Progress::Finished { target, step, ok, message } => {
                eprintln!(
                    "devnet preflight: {target}: {} {}: {message}",
                    if ok { "ok  " } else { "FAIL" },
                    step_name(step)
                );
            }
            Progress::Warning { target, message } => eprintln!("devnet preflight: {target}: warning: {message}"),
            Progress::Started { .. } | Progress::Report(_) => {}
        }
    };
    let report = devnet_preflight::run(&opts, &mut emit).await;
    print_human(&report);
    if progress {
        print_json(&Progress::Report(report.clone()));
    } else if json {
        print_json(&report);
    }
    u8::try_from(report.exit_code).unwrap_or(1)
}

fn print_human(report: &Report) {
    for t in &report.targets {
        if t.ok {
            eprintln!("ready: {}: {}", t.target, t.message);
        } else {
            eprintln!("error: {}: {}", t.target, t.message);
            if let Some(fix) = &t.fix {
                eprintln!("fix: {fix}");
            }
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    if let Ok(line) = serde_json::to_string(value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "0s", "5h", "x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
