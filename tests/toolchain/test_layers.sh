#!/usr/bin/env bash
# fieldsync: toolchain/layers.sh passes on a copy of the tree and fails on each planted breach.
#
#   tests/toolchain/test_layers.sh [SOURCE_ROOT]
#
# Each case copies agent/ port/ storage/ sync/ afresh, plants one line in one file, and expects
# the exit status (0 or 1) and, on a failure, the file named in the report. Ends with a closing
# line "N passed, N failed".
set -uo pipefail
src=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"}
script=$src/toolchain/layers.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# plant NAME EXPECTED_STATUS FILE LINE: runs layers.sh on a copy with LINE appended to FILE.
plant() {
  local name=$1 want=$2 file=$3 line=$4 copy=$work/$1 out got
  mkdir -p "$copy"
  cp -R "$src/agent" "$src/port" "$src/storage" "$src/sync" "$copy/"
  [ -z "$file" ] || printf '%s\n' "$line" >>"$copy/$file"
  out=$("$script" --root "$copy" 2>&1)
  got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL $name: layers.sh exited $got, expected $want"
    echo "$out" | sed 's/^/    /'
    failed=$((failed + 1))
  elif [ "$want" -ne 0 ] && ! grep -q "^$file:" <<<"$out"; then
    echo "FAIL $name: the report does not name $file"
    echo "$out" | sed 's/^/    /'
    failed=$((failed + 1))
  else
    echo "ok   $name"
    passed=$((passed + 1))
  fi
  rm -rf "$copy"
}

plant tree_as_it_is 0 "" ""
plant storage_includes_sync 1 storage/journal.c '#include "sync/engine.h"'
plant port_includes_storage 1 port/common.c '#include "storage/journal.h"'
plant sync_includes_public_header 1 sync/engine.c '#include "fieldsync/fieldsync.h"'
plant agent_includes_server_header 1 agent/run.c '#include "sync/server/store.h"'
plant include_without_layer 1 sync/codec.c '#include "codec.h"'
plant curl_outside_transport 1 sync/codec.c '#include <curl/curl.h>'
plant sqlite_call_without_include 1 sync/engine.c 'int fsa__planted(void) { return sqlite3_threadsafe(); }'
plant cjson_outside_codec 1 sync/signer.c 'typedef struct cJSON fsa__planted_t;'
plant mbedtls_outside_signer 1 sync/transport.c '#include <mbedtls/md.h>'
plant libpq_outside_store 1 sync/server/store_sqlite.c '#include <libpq-fe.h>'
plant sqlite_in_a_comment_is_no_use 0 sync/engine.c '/* as sqlite3_errmsg does */ // cJSON_Parse'
plant sqlite_in_storage_is_owned 0 storage/journal.c 'int fsa__planted(void);'
# Only port/ talks to the OS: each OS call that has a port call fails outside port/.
plant getpid_outside_port 1 storage/lock.c 'long fsa__planted(void) { return (long)getpid(); }'
plant stat_outside_port 1 storage/db.c 'int fsa__planted(const char *p) { struct stat sb; return stat(p, &sb); }'
plant chmod_outside_port 1 storage/db.c 'int fsa__planted(const char *p) { return chmod(p, 0600); }'
plant open_outside_port 1 storage/db.c 'int fsa__planted(const char *p) { return open(p, 0); }'
plant pthread_once_outside_port 1 storage/libs.c 'static pthread_once_t fsa__planted_once;'
plant pthread_create_in_daemon 1 agent/run.c 'int fsa__planted(void) { return pthread_create(0, 0, 0, 0); }'
plant syslog_in_daemon 1 agent/run.c 'void fsa__planted(void) { syslog(3, "%s", "x"); }'
plant syslog_header_in_daemon 1 agent/run.c '#include <syslog.h>'
plant socket_in_daemon 1 agent/run.c 'int fsa__planted(void) { return socket(2, 1, 0); }'
plant poll_in_library 1 agent/lib/worker.c 'int fsa__planted(void) { return poll(0, 0, 0); }'
plant sigwait_in_daemon 1 agent/run.c 'int fsa__planted(void *s, int *g) { return sigwait(s, g); }'
plant fopen_in_daemon 1 agent/run.c 'void *fsa__planted(void) { return fopen("m", "w"); }'
plant clock_gettime_in_sync 1 sync/engine.c 'int fsa__planted(void *t) { return clock_gettime(0, t); }'
plant port_member_call_is_no_use 0 storage/lock.c 'void fsa__planted(fsa_port_t *p, fsa_flock_t **f) { (void)p->flock_open(p->ctx, "x", f); }'
plant os_call_in_port_is_owned 0 port/common.c 'long fsa__planted(void) { return (long)getpid(); }'
plant os_call_in_a_comment_is_no_use 0 agent/run.c '/* no getpid() nor syslog() here */'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
