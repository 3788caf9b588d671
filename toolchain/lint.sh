#!/usr/bin/env bash
# fieldsync: static analysis of the tree; exits 1 when any check fails.
#
#   toolchain/lint.sh [-j N] [banned] [layers] [format] [cppcheck] [tidy]
#
#   banned    toolchain/banned.sh: no unsafe libc calls, no raw allocation
#   layers    toolchain/layers.sh: includes point down the layers; libraries only in their owners
#   format    clang-format --dry-run --Werror over every tracked .c and .h (.clang-format)
#   cppcheck  cppcheck over the compile database: warning, style, performance and portability
#             (toolchain/cppcheck.cfg, toolchain/cppcheck-suppressions.txt, inline suppressions)
#   tidy      clang-tidy over every .c in the compile database (.clang-tidy, tests/.clang-tidy)
#
# With no check named it runs all five, each one even when an earlier one failed. The compile
# database is configured (not built) in build-lint/, as a Debug build so that the analyzers see
# the asserts. -j N runs N clang-tidy processes (default: the number of cores).
# It installs nothing: toolchain/install-deps.sh brings cppcheck, clang-tidy and clang-format.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

jobs=$(nproc 2>/dev/null || echo 2)
checks=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -j | --jobs)
      [ $# -ge 2 ] && [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "lint.sh: $1 needs a number" >&2; exit 2; }
      jobs=$2; shift ;;
    banned | layers | format | cppcheck | tidy) checks+=("$1") ;;
    *) echo "lint.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#checks[@]} -gt 0 ] || checks=(banned layers format cppcheck tidy)

bdir=$root/build-lint
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

need() {
  local t
  for t in "$@"; do
    if ! command -v "$t" >/dev/null; then
      echo "lint.sh: '$t' is not installed: run toolchain/install-deps.sh" >&2
      return 1
    fi
  done
}

# The compile database, configured once for cppcheck and clang-tidy.
have_db=
compile_db() {
  [ -z "$have_db" ] || return 0
  need cmake || return 1
  if ! cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
    >"$work/cmake.log" 2>&1; then
    cat "$work/cmake.log" >&2
    echo "lint.sh: cannot configure $bdir" >&2
    return 1
  fi
  have_db=1
}

check_banned() {
  toolchain/banned.sh
}

check_layers() {
  toolchain/layers.sh
}

check_format() {
  need clang-format || return 1
  clang-format --version
  local n
  n=$(git ls-files '*.c' '*.h' | wc -l)
  git ls-files -z '*.c' '*.h' | xargs -0 clang-format --dry-run --Werror || {
    echo "lint.sh: not formatted as .clang-format says: run clang-format -i on the files above" >&2
    return 1
  }
  echo "format: $n files as .clang-format says"
}

check_cppcheck() {
  need cppcheck || return 1
  compile_db || return 1
  cppcheck --version
  # Third-party headers are left out by the suppressions file (*:/usr/*).
  cppcheck --project="$bdir/compile_commands.json" --std=c11 -q -j "$jobs" \
    --enable=warning,style,performance,portability --inline-suppr --error-exitcode=1 \
    --library=posix --library=libcurl --library=sqlite3 --library=zlib \
    --library="$root/toolchain/cppcheck.cfg" \
    --suppressions-list="$root/toolchain/cppcheck-suppressions.txt" \
    --template='{file}:{line}:{column}: {severity}: {message} [{id}]' 2>&1 | sed "s|^$root/||" || {
    echo "lint.sh: cppcheck found the above; fix it, or suppress it where it is with" \
      "'// cppcheck-suppress <id> ; <reason>'" >&2
    return 1
  }
  echo "cppcheck: clean"
}

# One clang-tidy run; its output is kept only when it failed.
tidy_one() {
  local log
  log="$2/$(printf '%s' "$1" | tr '/' '_').log"
  if clang-tidy -p "$3" --quiet "$1" >"$log" 2>&1; then
    rm -f "$log"
  fi
}
export -f tidy_one

check_tidy() {
  need clang-tidy || return 1
  compile_db || return 1
  clang-tidy --version | grep -i version
  local files n
  # Largest first: the longest files (~15 s each) start at once instead of last, when one core
  # would wait for the other to finish them.
  files=$(sed -n 's/^ *"file": "\(.*\)",\{0,1\}$/\1/p' "$bdir/compile_commands.json" | sort -u |
    xargs stat -c '%s %n' | sort -k1,1nr -k2 | cut -d' ' -f2-)
  n=$(echo "$files" | wc -l)
  mkdir -p "$work/tidy"
  echo "$files" | xargs -P "$jobs" -I{} bash -c 'tidy_one "$1" "$2" "$3"' _ {} "$work/tidy" "$bdir"
  local logs
  logs=$(find "$work/tidy" -name '*.log' | sort)
  if [ -n "$logs" ]; then
    # "N warnings generated." counts what the checks that are off would have said: not ours.
    # shellcheck disable=SC2086
    grep -hvE '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' $logs | sed "s|$root/||g" >&2
    echo "lint.sh: clang-tidy failed on $(echo "$logs" | wc -l) of $n files; fix the finding, or" \
      "silence it where it is with NOLINT(<check>) and a reason" >&2
    return 1
  fi
  echo "clang-tidy: $n files clean"
}

status=0
summary=()
for c in "${checks[@]}"; do
  printf '\n--- lint: %s ---\n' "$c"
  t0=$(date +%s)
  if "check_$c"; then r=ok; else r=FAILED; status=1; fi
  summary+=("$(printf '%-9s %-6s %ss' "$c" "$r" $(($(date +%s) - t0)))")
done
printf '\n--- lint summary ---\n'
printf '%s\n' "${summary[@]}"
exit $status
