#!/usr/bin/env bash
# fieldsync: line and branch coverage of the whole test suite, with thresholds that fail the run.
#
#   toolchain/coverage.sh [--report-only]
#
# Configures build-cov/ (gcc --coverage, -O0, -DFSA_COVERAGE=ON), builds, clears old counters,
# runs the whole ctest suite (the integration tests' fieldsync-server and fieldsync children count
# too), then reports with gcovr (tests/ and tests/bench excluded):
#   - a per-directory table of lines and branches in the log;
#   - build-cov/coverage/index.html (per file, annotated source), summary.json, files.txt.
# Exits 1 when a test fails or a directory is below its row in toolchain/coverage-thresholds.
# --report-only skips configure, build and tests and reports the counters already in build-cov/.
# Needs gcovr (toolchain/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

report_only=0
case "${1:-}" in
  "") ;;
  --report-only) report_only=1 ;;
  -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "coverage.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

dir=build-cov
out=$dir/coverage
thresholds=toolchain/coverage-thresholds
jobs=$(nproc 2>/dev/null || echo 2)
for tool in gcovr gcov python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "coverage.sh: '$tool' not found; run toolchain/install-deps.sh" >&2
    exit 1
  fi
done

tests_rc=0
if [ $report_only -eq 0 ]; then
  # No benchmarks: ctest never runs them, so they would only be compiled (the other builds do).
  cmake -S . -B "$dir" -DFSA_COVERAGE=ON -DCMAKE_BUILD_TYPE=Debug -DFSA_BUILD_BENCH=OFF >/dev/null
  cmake --build "$dir" -j "$jobs"
  # Counters accumulate across runs; a stale .gcda would count lines this run never reached.
  find "$dir" -name '*.gcda' -delete
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" || tests_rc=$?
fi

rm -rf "$out"
mkdir -p "$out"
# The failing side of assert() is never meant to run; counting it would make 100% unreachable.
# The port is compiled twice (port/CMakeLists.txt: the library's copy without the fault hooks);
# the same functions at other lines would stop gcovr 5's merge, and the hooked copy, which the
# tests run, measures that code.
gcovr --root . --object-directory "$dir" --exclude 'tests/' \
  --exclude-directories '.*fsa_port_release\.dir.*' \
  --exclude-unreachable-branches --exclude-branches-by-pattern '^\s*assert\(' -j "$jobs" \
  --html-details "$out/index.html" --html-title 'fieldsync coverage' \
  --json-summary "$out/summary.json" --json-summary-pretty --txt "$out/files.txt"

# Per-directory totals and the threshold check.
check_rc=0
python3 - "$out/summary.json" "$thresholds" <<'EOF' || check_rc=$?
import json, os, sys

summary, thresholds = sys.argv[1], sys.argv[2]
dirs = {}
for f in json.load(open(summary))["files"]:
    d = dirs.setdefault(os.path.dirname(f["filename"]) or ".", [0, 0, 0, 0])
    d[0] += f["line_covered"]; d[1] += f["line_total"]
    d[2] += f["branch_covered"]; d[3] += f["branch_total"]

def pct(n, d):
    return 100.0 * n / d if d else 100.0

want = {}
for line in open(thresholds):
    words = line.split("#", 1)[0].split()
    if not words:
        continue
    if len(words) != 3:
        sys.exit(f"coverage.sh: {thresholds}: bad row: {line.strip()}")
    want[words[0].rstrip("/")] = (float(words[1]), float(words[2]))

print(f"\n{'directory':<14} {'lines':>15} {'%':>6}  {'branches':>13} {'%':>6}  threshold (lines/branches)")
tot = [0, 0, 0, 0]
failed = []
for name in sorted(dirs):
    lc, lt, bc, bt = dirs[name]
    tot = [a + b for a, b in zip(tot, dirs[name])]
    lp, bp = pct(lc, lt), pct(bc, bt)
    mark = ""
    if name in want:
        wl, wb = want[name]
        mark = f"{wl:g}/{wb:g}"
        if lp < wl:
            failed.append(f"{name}: lines {lp:.1f}% < {wl:g}%")
        if bp < wb:
            failed.append(f"{name}: branches {bp:.1f}% < {wb:g}%")
        if lp < wl or bp < wb:
            mark += "  BELOW"
    print(f"{name:<14} {lc:>7}/{lt:<7} {lp:>5.1f}%  {bc:>6}/{bt:<6} {bp:>5.1f}%  {mark}")
print(f"{'total':<14} {tot[0]:>7}/{tot[1]:<7} {pct(tot[0], tot[1]):>5.1f}%  "
      f"{tot[2]:>6}/{tot[3]:<6} {pct(tot[2], tot[3]):>5.1f}%")
for name in want:
    if name not in dirs:
        failed.append(f"{name}: in {thresholds} but no file of it was measured")
if failed:
    print("\ncoverage.sh: below the thresholds in " + thresholds + ":", file=sys.stderr)
    for f in failed:
        print("  " + f, file=sys.stderr)
    sys.exit(1)
print(f"\ncoverage.sh: every directory in {thresholds} meets its thresholds")
EOF
echo "coverage.sh: report in $out/index.html (per file: $out/files.txt)"
if [ $tests_rc -ne 0 ]; then
  echo "coverage.sh: the test suite failed (ctest exit $tests_rc)" >&2
  exit 1
fi
exit $check_rc
