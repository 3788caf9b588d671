#!/bin/sh
# tests/agent/lib/exports.sh NM LIBRARY HEADER
# libfieldsync (.so, or .a) exports exactly the functions its public header declares: every
# defined dynamic symbol (of the .so; every defined global symbol of the .a) starts with
# fieldsync_, and every FIELDSYNC_API function of the header is there.
# Prints "N passed, N failed" (two checks) and exits non-zero when one fails.
set -u
nm=$1 lib=$2 header=$3
pass=0 failed=0
case $lib in
*.a) scope=-g ;;
*) scope=-D ;;
esac
exported=$("$nm" "$scope" --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {sub(/@.*/, "", $3); print $3}' | sort -u)
declared=$(tr '\n' ' ' < "$header" | grep -o 'FIELDSYNC_API[^;]*' |
           grep -o 'fieldsync_[a-z_0-9]*(' | tr -d '(' | sort -u)
if [ -z "$exported" ] || [ -z "$declared" ]; then
    echo "exports: cannot read the symbols of $lib or the declarations of $header" >&2
    exit 1
fi
foreign=$(printf '%s\n' "$exported" | grep -v '^fieldsync_' || true)
if [ -n "$foreign" ]; then
    echo "FAIL: $lib exports names outside the API:" $foreign
    failed=$((failed + 1))
else
    echo "ok: every exported name starts with fieldsync_ ($(printf '%s\n' "$exported" | wc -l) names)"
    pass=$((pass + 1))
fi
missing=$(printf '%s\n' "$declared" | while read -r f; do
    printf '%s\n' "$exported" | grep -qx "$f" || printf '%s ' "$f"; done)
extra=$(printf '%s\n' "$exported" | while read -r f; do
    printf '%s\n' "$declared" | grep -qx "$f" || printf '%s ' "$f"; done)
if [ -n "$missing$extra" ]; then
    echo "FAIL: declared but not exported: ${missing:-none}; exported but not declared: ${extra:-none}"
    failed=$((failed + 1))
else
    echo "ok: the $(printf '%s\n' "$declared" | wc -l) functions of the header are exported, no others"
    pass=$((pass + 1))
fi
echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
