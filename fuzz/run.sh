#!/usr/bin/env bash
# Coverage-guided fuzzing of every devnet target for a bounded time each:
#   fuzz/run.sh SECONDS_PER_TARGET [TARGET...]
# Builds the targets with cargo-fuzz (libFuzzer), then runs each one, seeded
# with the committed corpus (fuzz/corpus/<target>) and the fixed crash
# reproducers (fuzz/regressions/<target>). New inputs go to fuzz/work/, never
# into the committed corpus. A crash, a failed assertion, a timeout or an
# out-of-memory fails the run: its input is in fuzz/artifacts/<target>/.
#
# Needs cargo-fuzz (installed from crates.io into /var/cache/devnet-lab
# when missing) and a nightly toolchain: the rustup nightly when one is
# installed, else the stable toolchain with RUSTC_BOOTSTRAP=1.
#
# Environment: FUZZ_TARGET_DIR (build cache, default fuzz/target),
# FUZZ_SANITIZER (none, address, ...; default none: the code is safe Rust,
# and overflow checks come from debug assertions), FUZZ_JOBS (parallel
# fuzzing processes per target, default 1), FUZZ_NICE (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:?usage: fuzz/run.sh SECONDS_PER_TARGET [TARGET...]}
shift
[[ $secs =~ ^[0-9]+$ ]] || { echo "SECONDS_PER_TARGET must be a whole number of seconds, not '$secs'" >&2; exit 2; }
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^devnet-fuzz$')
fi

cf_root=/var/cache/devnet-lab/cargo-fuzz
cargo_fuzz=$(command -v cargo-fuzz || true)
if [[ -z $cargo_fuzz ]]; then
  cargo_fuzz=$cf_root/bin/cargo-fuzz
  if [[ ! -x $cargo_fuzz ]]; then
    echo "installing cargo-fuzz into $cf_root (once)"
    mkdir -p "$cf_root"
    CARGO_TARGET_DIR=$cf_root-target cargo install cargo-fuzz --version 0.13.2 --locked --root "$cf_root" >/dev/null
  fi
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  # cargo-fuzz passes -Z flags; stable accepts them when told it is bootstrapping.
  export RUSTC_BOOTSTRAP=1
fi

export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
sanitizer=${FUZZ_SANITIZER:-none}
nice_level=${FUZZ_NICE:-10}
build=(cargo "${toolchain[@]}" fuzz build --fuzz-dir fuzz -O --debug-assertions --sanitizer "$sanitizer")
# Every target at once (one compile of the dependencies), so the runs below
# only check that the build is fresh.
PATH=$(dirname "$cargo_fuzz"):$PATH nice -n "$nice_level" "${build[@]}" >/dev/null

jobs=()
if (( ${FUZZ_JOBS:-1} > 1 )); then
  jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
fi
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t" "fuzz/regressions/$t" "fuzz/corpus/$t"
  echo "fuzz: $t for ${secs}s"
  set +e
  PATH=$(dirname "$cargo_fuzz"):$PATH nice -n "$nice_level" \
    cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz -O --debug-assertions --sanitizer "$sanitizer" \
      "$t" "fuzz/work/$t" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      "${jobs[@]}" \
      -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 2>"fuzz/work/$t.log"
  rc=$?
  set -e
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|INFO: seed corpus)' "fuzz/work/$t.log" || true
  if ((rc != 0)); then
    echo "fuzz: $t FAILED (exit $rc); the input is in fuzz/artifacts/$t/, the log in fuzz/work/$t.log:" >&2
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "fuzz/work/$t.log" >&2 || tail -20 "fuzz/work/$t.log" >&2
    failed=$((failed + 1))
  fi
done
echo "fuzz: $((${#targets[@]} - failed)) passed, $failed failed"
((failed == 0))
