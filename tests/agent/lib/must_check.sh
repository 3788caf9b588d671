#!/bin/sh
# tests/agent/lib/must_check.sh CC INCLUDE_DIR
# The public header keeps its promise on ignored results (fieldsync.h, "Conventions"): every
# function returning a fieldsync_status_t carries FIELDSYNC_MUST_CHECK but the six the header
# names, and the attribute works: a call that ignores the result of each marked function does not
# compile with -Werror=unused-result, and the same call with its result used does.
# Prints "N passed, N failed" and exits non-zero when a check fails.
set -u
cc=$1 inc=$2
header=$inc/fieldsync/fieldsync.h
exempt="fieldsync_close fieldsync_dispatch fieldsync_lock_release fieldsync_remove_listener
fieldsync_stop fieldsync_sync_now"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0 failed=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }

# One declaration a line: "MC|-- NAME NARGS" for each FIELDSYNC_API function returning a status.
tr '\n' ' ' < "$header" | grep -o 'FIELDSYNC_API fieldsync_status_t[^;]*;' | while read -r d; do
    name=$(printf '%s\n' "$d" | grep -o 'fieldsync_[a-z_0-9]*(' | head -n 1 | tr -d '(')
    args=$(printf '%s\n' "$d" | sed 's/^[^(]*(//; s/).*$//')
    case $args in
    void | '') n=0 ;;
    *) n=$(($(printf '%s' "$args" | tr -cd ',' | wc -c) + 1)) ;;
    esac
    case $d in *FIELDSYNC_MUST_CHECK*) m=MC ;; *) m=-- ;; esac
    echo "$m $name $n"
done > "$tmp/decls"
if [ ! -s "$tmp/decls" ]; then
    echo "must_check: no declarations read from $header" >&2
    exit 1
fi

unmarked=$(awk '$1 == "--" {print $2}' "$tmp/decls" | sort | tr '\n' ' ')
want=$(printf '%s\n' $exempt | sort | tr '\n' ' ')
if [ "$unmarked" = "$want" ]; then
    ok "$(grep -c '^MC' "$tmp/decls") status functions carry FIELDSYNC_MUST_CHECK; the unmarked are the header's six"
else
    bad "unmarked status functions: $unmarked(the header names: $want)"
fi

# Arguments of zeros: a null pointer constant or a zero for every parameter the header has.
# Compiled to an object, not -fsyntax-only: gcc warns of an ignored result only as it generates code.
flags="-std=c11 -ffreestanding -c -o /dev/null -Werror=unused-result -I$inc"
marked=0 refused=0 accepted=0
while read -r m name n; do
    [ "$m" = MC ] || continue
    marked=$((marked + 1))
    zeros=$(awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) printf "%s0", i ? ", " : "" }')
    printf '#include <fieldsync/fieldsync.h>\nvoid f(void);\nvoid f(void) { %s(%s); }\n' \
        "$name" "$zeros" > "$tmp/ignored.c"
    printf '#include <fieldsync/fieldsync.h>\nint f(void);\nint f(void) { return %s(%s) != 0; }\n' \
        "$name" "$zeros" > "$tmp/used.c"
    if $cc $flags "$tmp/ignored.c" > "$tmp/log" 2>&1; then
        bad "$name: a call ignoring its result compiles"
    elif grep -q "$name" "$tmp/log"; then
        refused=$((refused + 1))
    else
        bad "$name: the ignoring call failed for another reason: $(head -n 3 "$tmp/log")"
    fi
    if $cc $flags "$tmp/used.c" > "$tmp/log" 2>&1; then
        accepted=$((accepted + 1))
    else
        bad "$name: a call using its result does not compile: $(head -n 3 "$tmp/log")"
    fi
done < "$tmp/decls"
if [ "$marked" -gt 0 ] && [ "$refused" -eq "$marked" ] && [ "$accepted" -eq "$marked" ]; then
    ok "each of the $marked: ignoring its result fails to compile, using it compiles"
else
    bad "of $marked marked functions, $refused refused an ignored result and $accepted compiled when used"
fi
echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
