#!/bin/sh
# docs/man/check-help.sh PROGRAM PAGE [commands]
# The man page PAGE documents what PROGRAM's --help lists: every option (--name) of its --help;
# with "commands", also every command of the help's list and every option of each command's own
# --help (which must succeed). $FSA_EMULATOR: the '|'-separated emulator of a cross build, if any.
# Prints one line per missing item and "N passed, N failed"; exits non-zero when one is missing.
set -u
if [ $# -lt 2 ]; then
    echo "usage: check-help.sh PROGRAM PAGE [commands]" >&2
    exit 2
fi
emu=$(printf '%s' "${FSA_EMULATOR:-}" | tr '|' ' ')
prog=$1 page=$2 mode=${3:-options}
pass=0 failed=0 commands=""
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
# shellcheck disable=SC2086 # the emulator's words are meant to split
run() { $emu "$prog" "$@"; }

# The page as one line of plain text (mandoc's bold and underline overstrikes removed).
text=$(mandoc -Tutf8 -Owidth=400 "$page" | sed 's/.\x08//g' | tr -s ' \t\n' '   ')
if [ -z "$text" ]; then
    echo "FAIL: cannot render $page" >&2
    exit 1
fi
help=$(run --help) || { echo "FAIL: $prog --help failed" >&2; exit 1; }

has_option() { printf '%s\n' "$text" | grep -Eq -- "(^|[^a-z-])$1([^a-z-]|\$)"; }
options_of() { printf '%s\n' "$1" | grep -o -- '--[a-z][a-z-]*' | sort -u; }

helps=$help
if [ "$mode" = commands ]; then
    # The commands: the leading lowercase words of each "  command ..." line of the help.
    commands=$(printf '%s\n' "$help" | grep '^  [a-z]' |
        awk '{ c = ""; for (i = 1; i <= NF && $i ~ /^[a-z|]+$/; i++) c = c (c == "" ? "" : " ") $i; print c }' |
        sort -u)
    [ -n "$commands" ] || { echo "FAIL: no commands in $prog --help" >&2; exit 1; }
    while IFS= read -r c; do
        if printf '%s\n' "$text" | grep -Fq -- "$c"; then ok; else bad "command '$c' is not in $page"; fi
        # shellcheck disable=SC2086 # a command's words are separate arguments
        words=$(printf '%s' "$c" | sed 's/|[a-z]*//g')
        # shellcheck disable=SC2086
        if h=$(run $words --help 2>&1); then
            ok
            helps="$helps
$h"
        else
            bad "'$(basename "$prog") $words --help' failed"
        fi
    done <<EOF_COMMANDS
$commands
EOF_COMMANDS
fi
opts=$(options_of "$helps")
[ -n "$opts" ] || { echo "FAIL: no options in $prog --help" >&2; exit 1; }
for o in $opts; do
    if has_option "$o"; then ok; else bad "option $o is not in $page"; fi
done
echo "$(basename "$page"): $(printf '%s\n' "$opts" | wc -l) options${commands:+, $(printf '%s\n' "$commands" | wc -l) commands} checked"
echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
