#!/usr/bin/env bash
# fieldsync: builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan, in build-fuzz/)
# and runs each for a while on a copy of its seed corpus; see docs/fuzzing.md.
#
#   toolchain/fuzz.sh [SECONDS] [TARGET...]
#
#   SECONDS  per target (default 60); the targets run two at a time (FSA_FUZZ_JOBS, default the
#            number of cores, at most 2 unless set)
#   TARGET   fuzz_codec_answers fuzz_codec_push fuzz_server_request fuzz_merge_patch
#            fuzz_model_create fuzz_args fuzz_config
#            (default: all)
#
# Nothing is written into the repository: new corpus entries go to a scratch directory that is
# removed at the end; a crash or invariant violation is kept in $FSA_FUZZ_OUT (default
# build-fuzz/fuzz-out/) with libFuzzer's log. Prints the executions of each target; exits 1 when a
# target crashed, 2 on a usage error.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

all=(fuzz_codec_answers fuzz_codec_push fuzz_server_request fuzz_merge_patch fuzz_model_create fuzz_args
  fuzz_config)
case "${1:-}" in
  -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
secs=${1:-60}
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "fuzz.sh: SECONDS must be a positive whole number, not '$secs'" >&2
  exit 2
fi
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  if [ ! -d "tests/fuzz/corpus/$t" ]; then
    echo "fuzz.sh: unknown target '$t' (${all[*]})" >&2
    exit 2
  fi
done

cc=${CC:-clang}
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "fuzz.sh: $cc not found: install the Debian packages 'clang' and 'libclang-rt-14-dev'" \
       "(or run toolchain/install-deps.sh)" >&2
  exit 1
fi
cores=$(nproc 2>/dev/null || echo 2)
jobs=${FSA_FUZZ_JOBS:-$((cores < 2 ? cores : 2))}

dir=build-fuzz
CC=$cc cmake -S . -B "$dir" -DFSA_FUZZ=ON -DFSA_SANITIZE=ON >/dev/null
cmake --build "$dir" --target fsa_fuzz -j "$cores"

out=${FSA_FUZZ_OUT:-$dir/fuzz-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Runs one target; its summary line goes to $scratch/<target>.result.
run_one() {
  local t=$1 bin dict=() corpus="$scratch/$t.corpus" log="$out/$t.log"
  bin=$(pwd)/$dir/tests/fuzz/$t
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/"$t"/* "$corpus"/
  [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=$(pwd)/tests/fuzz/$t.dict")
  local rc=0
  # -rss_limit_mb: ASan's quarantine alone holds 256 MB; a real leak still ends the run.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$bin" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=3072 -timeout=25 \
    -artifact_prefix="$out/$t-" "${dict[@]}" "$corpus" >"$log" 2>&1 || rc=$?
  local execs cov
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -E '^#[0-9]+.*(DONE|INITED|pulse|NEW|REDUCE)' "$log" | tail -1 |
        sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, ft \2, corpus \3/p' ||
        true)
  if [ $rc -eq 0 ]; then
    printf '%-22s ok      %10s executions in %ss (%s)\n' "$t" "${execs:-?}" "$secs" "$cov" \
      >"$scratch/$t.result"
  else
    printf '%-22s FAILED  %10s executions; exit %d; see %s and %s-*\n' "$t" "${execs:-?}" \
      "$rc" "$log" "$out/$t" >"$scratch/$t.result"
  fi
}

echo "fuzz.sh: ${#targets[@]} targets, ${secs}s each, $jobs at a time (logs in $out)"
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

status=0
for t in "${targets[@]}"; do
  if [ -f "$scratch/$t.result" ]; then
    cat "$scratch/$t.result"
    grep -q ' ok ' "$scratch/$t.result" || status=1
  else
    printf '%-22s FAILED  (did not run; see %s)\n' "$t" "$out/$t.log"
    status=1
  fi
done
if [ $status -ne 0 ]; then
  echo "fuzz.sh: a target crashed or broke an invariant: the input is saved next to its log;" \
       "replay it with $dir/tests/fuzz/<target> <file>" >&2
fi
exit $status
