#!/usr/bin/env bash
# fieldsync: builds the programs and runs a fleet of simulated devices against the reference
# server, checking that nothing was lost (the README's main job).
#
#   toolchain/fleet.sh [fieldsync-sim arguments...]     default: --scenario all
#
# Run toolchain/install-deps.sh first. See docs/sim.md for the simulator's options.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
  -h | --help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
jobs=$(nproc 2>/dev/null || echo 2)
echo "building fieldsync, fieldsync-server and fieldsync-sim in build/ ..." >&2
cmake -S . -B build >/dev/null
cmake --build build -j "$jobs" --target fieldsync fieldsync-server fieldsync-sim >/dev/null
if [ $# -eq 0 ]; then
  set -- --scenario all
fi
exec build/agent/fieldsync-sim "$@"
