#!/bin/sh
# tests/agent/lib/production.sh NM HOOKED_ARCHIVE LIBRARY...
# libfieldsync (.so and .a) holds the production port only: no sim port (fsa_sim_*) and no
# allocation fault hooks (fsa_alloc_fail_nth and the rest of port/alloc.h's test section).
# HOOKED_ARCHIVE is the tests' own port (libfsa_port.a, built with the hooks): the same patterns
# must match there, so that a pattern that has gone stale cannot pass unnoticed.
# Prints "N passed, N failed" and exits non-zero when a check fails.
set -u
nm=$1 hooked=$2
shift 2
pattern='^(fsa_sim_[a-z_0-9]+|fsa_alloc_fail_nth|fsa_alloc_count|fsa_alloc_fault_fired|fsa_alloc_on_fault)$'
pass=0 failed=0
names() { "$nm" --defined-only "$1" 2>/dev/null | awk 'NF >= 3 {print $3}' | sort -u; }

if names "$hooked" | grep -Eq '^fsa_alloc_fail_nth$'; then
    echo "ok: the pattern finds the hooks in the tests' port ($hooked)"
    pass=$((pass + 1))
else
    echo "FAIL: no fsa_alloc_fail_nth in $hooked: the pattern or the build changed"
    failed=$((failed + 1))
fi
for lib in "$@"; do
    all=$(names "$lib")
    if ! printf '%s\n' "$all" | grep -qx 'fsa_malloc'; then
        echo "FAIL: cannot read the symbols of $lib (no fsa_malloc)"
        failed=$((failed + 1))
        continue
    fi
    bad=$(printf '%s\n' "$all" | grep -E "$pattern" | tr '\n' ' ')
    if [ -n "$bad" ]; then
        echo "FAIL: $lib holds test-only code: $bad"
        failed=$((failed + 1))
    else
        echo "ok: $lib has no sim port and no fault hooks"
        pass=$((pass + 1))
    fi
done
echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
