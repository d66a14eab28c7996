#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ with cargo-afl and runs each under AFL++, one after another;
# fails if any finds a crash or a hang, printing the input that reproduces it. See docs/TESTING.md.
#   scripts/fuzz.sh                                # every target, 15 s each (what CI runs)
#   scripts/fuzz.sh --seconds 3600                 # the long run
#   scripts/fuzz.sh --seconds 60 sandbox_paths     # some targets only
# Options: --target-dir DIR (the instrumented build; default $CARGO_TARGET_DIR/afl or target/afl),
#          --out DIR (AFL's queue, crashes and hangs per target; default <target-dir>/findings).
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(init_protocol sandbox_paths batch_items proto_convert permission_rules)
# Five targets at 15 s keep CI's fuzzing step near two minutes (it was four at 20 s).
seconds=15
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/afl"
out=""
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --target-dir) target_dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "--seconds needs a positive whole number" >&2; exit 2; }
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "unknown target $t (known: ${all_targets[*]})" >&2; exit 2; }
done
out="${out:-$target_dir/findings}"

scripts/install-deps.sh --fuzz

echo "== building the fuzz targets (cargo afl build, $target_dir)"
# An explicit --target keeps cargo-afl's flags (instrumentation, -O3, one codegen unit) off the
# build scripts and proc macros, which run on the host and need none of it.
host="$(rustc -vV | sed -n 's/^host: //p')"
CARGO_TARGET_DIR="$target_dir" cargo afl build --release --locked --target "$host" -p corral-fuzz --features afl --bins

# Non-interactive, as root, on a shared machine: no UI, no CPU pinning, no core-dump or
# CPU-governor checks (a crash is still detected from the signal).
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_FAST_CAL=1 AFL_NO_CRASH_README=1
# The sandbox_paths target makes a scratch tree per input here (in memory when /dev/shm is
# there: several times faster than a disk); removed at the end.
scratch_parent="${TMPDIR:-/tmp}"
[[ -d /dev/shm && -w /dev/shm ]] && scratch_parent=/dev/shm
scratch="$(mktemp -d "$scratch_parent/corral-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

afl_stat() { sed -n "s/^$1 *: *//p" "$2"; }

failed=()
for t in "${targets[@]}"; do
  bin="$target_dir/$host/release/fuzz-${t//_/-}"
  findings="$out/$t"
  rm -rf "$findings"
  mkdir -p "$findings"
  echo "== fuzzing $t for ${seconds}s (findings in $findings)"
  if ! TMPDIR="$scratch" cargo afl fuzz -i "fuzz/corpus/$t" -o "$findings" -V "$seconds" -t 3000 -m none -- "$bin" \
      >"$findings/afl.log" 2>&1; then
    tail -n 30 "$findings/afl.log" >&2
    echo "afl-fuzz failed on $t (log: $findings/afl.log)" >&2
    failed+=("$t")
    continue
  fi
  stats="$findings/default/fuzzer_stats"
  printf '   %s execs, %s execs/s, %s paths in the corpus (%s new), edge coverage %s\n' \
    "$(afl_stat execs_done "$stats")" "$(afl_stat execs_per_sec "$stats")" "$(afl_stat corpus_count "$stats")" \
    "$(afl_stat corpus_found "$stats")" "$(afl_stat bitmap_cvg "$stats")"
  found="$(find "$findings/default/crashes" "$findings/default/hangs" -type f 2>/dev/null | sort)"
  if [[ -n "$found" ]]; then
    echo "$t: AFL found inputs that crash or hang it:" >&2
    while read -r f; do echo "   $f   (reproduce: $bin < '$f')" >&2; done <<<"$found"
    failed+=("$t")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing failed: ${failed[*]}" >&2
  echo "keep each reproducer in fuzz/regressions/<target>/ and fix the bug (docs/TESTING.md)" >&2
  exit 1
fi
echo "fuzzing passed: ${targets[*]} (${seconds}s each)"
