#!/usr/bin/env bash
# fieldsync: checks the layering that the README's Layout and DESIGN.md promise; exits 1 on a breach.
#
#   toolchain/layers.sh [--root DIR]
#
#  - Dependencies point down only: agent -> sync -> storage -> port. A file of one layer includes
#    no header of a higher layer. agent/include/fieldsync (the public header, "fieldsync/...")
#    belongs to agent/; sync/server/ (the reference server) is an application of its own, and
#    nothing outside it includes its headers. A quoted include that names no layer is a breach.
#  - Each third-party library is used only by the module that owns it: its header included, or
#    one of its identifiers in the code (comments do not count), anywhere else is a breach.
#  - Only port/ talks to the OS: the OS calls that have a port call (threads, process id and
#    signals, syslog, sockets and poll, files, clocks) are treated as libraries owned by port/,
#    each use elsewhere a breach unless listed below with its reason (a call through a member,
#    port->open(...), is the port's and does not count).
#  - tests/ is exempt from all three: tests sit above every layer, and they look at what a module
#    hides (the journal's SQLite file, raw HTTP, JSON bodies) to check it from outside.
# Each exception stands below with its reason. DIR (default: this tree) holds agent/ port/
# storage/ sync/; tests/toolchain/test_layers.sh runs this on a copy with planted breaches.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --root)
      [ $# -ge 2 ] || { echo "layers.sh: --root needs a directory" >&2; exit 2; }
      root=$2; shift ;;
    *) echo "layers.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
cd "$root"
command -v perl >/dev/null || { echo "layers.sh: perl is needed" >&2; exit 2; }

# Libraries: name|header pattern (ERE, on the include line)|identifier pattern (ERE, on code).
libraries=(
  'sqlite3|<sqlite3\.h>|\bsqlite3(_[A-Za-z0-9_]+)?\b|\bSQLITE_[A-Z0-9_]+\b'
  'libpq|<libpq-fe\.h>|\bPQ[a-z][A-Za-z]*\(|\bPGconn\b|\bPGresult\b'
  'curl|<curl/|\bcurl_[a-z_]+\b|\bCURL[A-Z_]*\b'
  'cJSON|<cjson/|\bcJSON(_[A-Za-z0-9_]+)?\b'
  'mbedTLS|<mbedtls/|\bmbedtls_[a-z0-9_]+\b|\bMBEDTLS_[A-Z0-9_]+\b'
  'microhttpd|<microhttpd\.h>|\bMHD_[A-Za-z_]+\b'
  'zlib|<zlib\.h>|\bz_stream\b|\b(deflate|inflate)(Init2?|End)?\('
  # The OS, by what the port offers instead (port.h's table, files.h, daemon.h, once.h).
  'OS threads (port.h, once.h)|<pthread\.h>|\bpthread_[a-z_]+\b'
  'OS process and signals (port.h process_id, daemon.h)|<signal\.h>|(?<![.>])\b(getpid|_exit|sigwait|sigaction|pthread_sigmask|signal|sigprocmask)\s*\('
  'OS syslog (daemon.h)|<syslog\.h>|\b(syslog|vsyslog|openlog|closelog)\s*\('
  'OS sockets and poll (daemon.h, notify.h)|<sys/socket\.h>|(?<![.>])\b(socket|bind|listen|accept4?|connect|setsockopt|getsockname|poll)\s*\('
  'OS files (files.h, port.h file locks)|<sys/stat\.h>|(?<![.>])\b(open|openat|stat|lstat|fstat|chmod|fchmod|fopen|fcntl|pread|pwrite|ftruncate|rename|unlink)\s*\('
  'OS clocks (port.h mono_now, wall_now)|<no header: time.h has pure parts>|\bclock_gettime\s*\('
)

# Owners: library|path pattern (ERE, on the path from the root).
owners=(
  'sqlite3|^storage/'                     # the journal and the lock manager: "storage owns every byte on disk"
  'sqlite3|^sync/server/store_sqlite\.c$' # the reference server's own store (DESIGN.md)
  'libpq|^sync/server/store_pg\.c$'       # the reference server's store on PostgreSQL
  'curl|^sync/transport\.c$'              # the transport
  'cJSON|^sync/codec\.c$'                 # the codec: the wire format
  'cJSON|^sync/codec_json\.h$'            # the codec's bounded parse, for sync/'s other JSON decoder
  'cJSON|^sync/devices\.c$'               # the server's devices file (JSON), parsed through it
  'cJSON|^storage/model\.c$'              # the model: entity fields and merge patches are JSON
  'mbedTLS|^sync/signer\.c$'              # the signer
  'microhttpd|^sync/server/server\.c$'    # the reference server's HTTP front
  'zlib|^sync/gzip\.c$'                   # gzip of the wire (the transport's and the server's bodies)
  'OS threads (port.h, once.h)|^port/'
  'OS process and signals (port.h process_id, daemon.h)|^port/'
  'OS syslog (daemon.h)|^port/'
  'OS sockets and poll (daemon.h, notify.h)|^port/'
  'OS files (files.h, port.h file locks)|^port/'
  'OS clocks (port.h mono_now, wall_now)|^port/'
)

# Exceptions: library|path pattern|reason. Each is a file outside the owner that uses the library.
exceptions=(
  'cJSON|^storage/libs\.c$|hands the project allocator to cJSON (cJSON_InitHooks) beside SQLite'
  'curl|^agent/sim/admin\.c$|the simulator talks to the server admin API, which the device transport does not speak'
  'cJSON|^agent/sim/checks\.c$|the simulator invariant checkers read the admin API JSON (a tool beside the agent)'
  'cJSON|^agent/sim/fleet\.c$|the simulator reads the JSON lists libfieldsync and the admin API hand out (a tool beside the agent)'
  'cJSON|^agent/sim/scenarios\.c$|the simulator reads the entity views and lists libfieldsync hands out as JSON, for its invariants (a tool beside the agent)'
  'OS sockets and poll (daemon.h, notify.h)|^sync/transport\.c$|<sys/socket.h> for AF_INET and AF_INET6, handed to inet_pton, which parses text and calls nothing'
  'OS sockets and poll (daemon.h, notify.h)|^agent/example/|guard-console is an app: it polls the library'"'"'s notify fd in its main loop, as any app of libfieldsync does'
)
# fieldsync-sim uses POSIX itself, as any application of the library does (README, Layout): it
# forks and watches server and device processes and writes its reports. fieldsync-server goes
# through the port for its files, listening sockets and signals (files.h, daemon.h).
os_groups=('OS threads (port.h, once.h)' 'OS process and signals (port.h process_id, daemon.h)'
  'OS syslog (daemon.h)' 'OS sockets and poll (daemon.h, notify.h)'
  'OS files (files.h, port.h file locks)' 'OS clocks (port.h mono_now, wall_now)')
for g in "${os_groups[@]}"; do
  exceptions+=("$g|^agent/sim/|fieldsync-sim, a program: processes, files and clocks of its own")
done

files=$(find agent port storage sync -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort)
[ -n "$files" ] || { echo "layers.sh: no sources under $root" >&2; exit 2; }
n=$(echo "$files" | wc -l)

# One perl process reads every file: the tables go in as lines of LIB|PATTERN|... on stdin.
mapfile -t breaches < <({
  printf 'L|%s\n' "${libraries[@]}"
  printf 'O|%s\n' "${owners[@]}" "${exceptions[@]}"
  printf 'F|%s\n' $files
} | perl -e '
  use strict; use warnings;
  my (@libs, @allow, @files);
  while (<STDIN>) {
    chomp;
    my ($kind, $rest) = split /\|/, $_, 2;
    if ($kind eq "L") { my ($lib, $hdr, $ids) = split /\|/, $rest, 3; push @libs, [$lib, qr/^\s*#\s*include\s*$hdr/, qr/$ids/]; }
    elsif ($kind eq "O") { my ($lib, $pat) = split /\|/, $rest, 3; push @allow, [$lib, qr/$pat/]; }
    else { push @files, $rest; }
  }
  my %rank = (port => 0, storage => 1, sync => 2, agent => 3, fieldsync => 3);
  for my $f (@files) {
    open my $fh, "<", $f or die "layers.sh: $f: $!\n";
    my $text = do { local $/; <$fh> };
    close $fh;
    # Comments blanked, lines kept, so that line numbers stay right.
    (my $code = $text) =~ s{/\*.*?\*/}{ (my $c = $&) =~ tr/\n//cd; $c }gse;
    $code =~ s{//[^\n]*}{}g;
    my ($top) = $f =~ m{^([^/]+)/};
    my $mine = $rank{$top};
    # The libraries this file may not use.
    my @banned = grep { my $lib = $_->[0]; !grep { $_->[0] eq $lib && $f =~ $_->[1] } @allow } @libs;
    my @lines = split /\n/, $code, -1;
    for my $i (0 .. $#lines) {
      my $l = $lines[$i];
      my $at = "$f:" . ($i + 1);
      if ($l =~ /^\s*#\s*include\s*([<"])([^>"]*)[>"]/) {
        my ($q, $inc) = ($1, $2);
        my ($itop) = $inc =~ m{^([^/]+)/};
        if (!defined $itop || !exists $rank{$itop}) {
          print "$at: includes \"$inc\", which names no layer (write layer/...)\n" if $q eq "\"";
        } elsif ($rank{$itop} > $mine) {
          print "$at: $top/ includes $inc, a header of the higher layer $itop/\n";
        } elsif ($itop eq "fieldsync" && $top ne "agent") {
          print "$at: $top/ includes the public header $inc (only agent/ and tests may)\n";
        } elsif ($inc =~ m{^sync/server/} && $f !~ m{^sync/server/}) {
          print "$at: includes $inc: the reference server keeps its headers to itself\n";
        }
      }
      # String and character literals blanked for the identifiers: "listen (" in a help text is
      # no call.
      (my $bare = $l) =~ s/\x27(?:[^\x27\\\n]|\\.)*\x27/0/g;
      $bare =~ s/"(?:[^"\\\n]|\\.)*"/""/g;
      for my $lb (@banned) {
        my ($lib, $hdr, $ids) = @$lb;
        if ($l =~ $hdr || ($l !~ /^\s*#\s*include/ && $bare =~ $ids)) {
          (my $shown = $l) =~ s/^\s+//;
          print "$at: uses $lib outside the module that owns it: $shown\n";
        }
      }
    }
  }
')

if [ ${#breaches[@]} -gt 0 ]; then
  echo "layers.sh: the layering is broken (toolchain/layers.sh says what is allowed and why):" >&2
  printf '%s\n' "${breaches[@]}" >&2
  exit 1
fi
echo "layers.sh: $n files keep to the layers (agent -> sync -> storage -> port) and library owners" \
  "(${#exceptions[@]} listed exceptions)"
