//! Replays every committed fuzz corpus input and every fixed crash
//! reproducer through the target bodies, on stable Rust, as part of
//! `cargo test --workspace`: `fuzz/corpus/<target>/*` and
//! `fuzz/regressions/<target>/*`. A panic in any of them fails the test
//! and names the file.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use devnet_fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs each file through its target; returns the files that panicked.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut failed = Vec::new();
    for (name, body) in TARGETS {
        for file in inputs(&fuzz_dir().join(kind).join(name)) {
            let data = std::fs::read(&file).expect("readable corpus file");
            count += 1;
            if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    (count, failed)
}

#[test]
fn every_target_has_a_committed_corpus() {
    for (name, _) in TARGETS {
        let n = inputs(&fuzz_dir().join("corpus").join(name)).len();
        assert!(n > 0, "fuzz/corpus/{name}/ is empty: run fuzz/run.sh to build it, then commit it");
        assert!(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")).is_file(), "no cargo-fuzz target {name}");
    }
}

#[test]
fn the_committed_corpus_replays_without_a_failure() {
    let (count, failed) = replay("corpus");
    assert!(count > 0, "no corpus found under {}", fuzz_dir().display());
    assert!(failed.is_empty(), "{} of {count} corpus inputs failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn every_fixed_crash_stays_fixed() {
    let (count, failed) = replay("regressions");
    assert!(failed.is_empty(), "{} of {count} crash reproducers fail again:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn the_seed_inputs_pass() {
    for (name, input) in devnet_fuzz_targets::seeds::seeds() {
        let body = TARGETS.iter().find(|(n, _)| *n == name).map(|(_, b)| b).expect("a seed for a known target");
        body(&input);
    }
}
