#!/usr/bin/env bash
# fieldsync: refuses unsafe libc calls in the project's C sources (as curl's checksrc does):
# strcpy, strcat, sprintf, vsprintf, strtok, atoi, atol, atoll, gets. Use snprintf, memcpy with a
# checked length, strtok_r-free parsing, strtol/strtoll with end and range checks instead.
# Prints each use as FILE:LINE and exits 1 when there is one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pattern='(^|[^A-Za-z0-9_])(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|atoll|gets)[[:space:]]*\('
hits=$(git ls-files '*.c' '*.h' | xargs grep -nE "$pattern" || true)
if [ -n "$hits" ]; then
  echo "banned.sh: unsafe libc calls (see toolchain/banned.sh for the replacements):" >&2
  echo "$hits" >&2
  exit 1
fi
echo "banned.sh: no unsafe libc calls in $(git ls-files '*.c' '*.h' | wc -l) files"
