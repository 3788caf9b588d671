#!/bin/sh
# tests/agent/lib/readme_example.sh CC README INCLUDE_DIR LIBRARY_DIR [SYSROOT TRIPLET]
# The C example of the README's library section compiles with warnings as errors against the
# public header and links against libfieldsync.so: the README shows code that works. A cross
# build passes its sysroot and triplet (the libraries libfieldsync.so needs are found there).
# CC may carry flags ("clang -fsanitize=address,undefined").
set -eu
cc=$1 readme=$2 inc=$3 libdir=$4 sysroot=${5:-} triplet=${6:-}
cross=""
if [ -n "$sysroot" ]; then
    cross="--sysroot=$sysroot -Wl,-rpath-link,$sysroot/usr/lib/$triplet:$sysroot/lib/$triplet"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '/^## The library/ {in_section = 1} in_section && /^```c$/ {code = 1; next}
     code && /^```$/ {exit} code {print}' "$readme" > "$tmp/example.c"
if [ ! -s "$tmp/example.c" ]; then
    echo "FAIL: no C example under '## The library' in $readme"
    echo "0 passed, 1 failed"
    exit 1
fi
# shellcheck disable=SC2086 # $cc and $cross are lists of words
if $cc $cross -std=c11 -Wall -Wextra -Werror -I"$inc" "$tmp/example.c" -L"$libdir" -lfieldsync \
       -o "$tmp/example"; then
    echo "ok: the README's example ($(wc -l < "$tmp/example.c") lines) compiles and links"
    echo "1 passed, 0 failed"
else
    echo "FAIL: the README's example does not compile or link"
    echo "0 passed, 1 failed"
    exit 1
fi
