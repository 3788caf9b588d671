#!/usr/bin/env bash
# fieldsync: refuses unsafe libc calls in the project's C sources (as curl's checksrc does):
#  - strcpy, strcat, sprintf, vsprintf, strtok, atoi, atol, atoll, gets. Use snprintf, memcpy with
#    a checked length, explicit parsing, strtol/strtoll with end and range checks instead.
#  - raw malloc, calloc, realloc, free, strdup, strndup outside port/alloc.c: use fsa_malloc and
#    the rest of port/alloc.h, so that allocation-failure tests reach every allocation.
# Prints each use as FILE:LINE and exits 1 when there is one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 0
fi
unsafe='(^|[^A-Za-z0-9_])(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|atoll|gets)[[:space:]]*\('
raw_alloc='(^|[^A-Za-z0-9_.>])(malloc|calloc|realloc|free|strdup|strndup)[[:space:]]*\('
files=$(git ls-files '*.c' '*.h')
status=0
hits=$(echo "$files" | xargs grep -nE "$unsafe" || true)
if [ -n "$hits" ]; then
  echo "banned.sh: unsafe libc calls (see toolchain/banned.sh for the replacements):" >&2
  echo "$hits" >&2
  status=1
fi
hits=$(echo "$files" | grep -v '^port/alloc\.c$' | xargs grep -nE "$raw_alloc" || true)
if [ -n "$hits" ]; then
  echo "banned.sh: raw allocation outside port/alloc.c (use port/alloc.h):" >&2
  echo "$hits" >&2
  status=1
fi
[ $status -eq 0 ] && echo "banned.sh: no unsafe libc calls or raw allocations in $(echo "$files" | wc -l) files"
exit $status
