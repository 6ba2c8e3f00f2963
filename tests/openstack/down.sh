#!/usr/bin/env bash
# Stops what tests/openstack/up.sh started and removes its state.
set -uo pipefail
S="${1:-${TMPDIR:-/tmp}/apimon-openstack}"
[ -d "$S/pids" ] || exit 0
for pidfile in "$S"/pids/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  # Each service runs in its own process tree (uwsgi workers, rabbit's beam).
  pkill -TERM -P "$pid" 2>/dev/null
  kill -TERM "$pid" 2>/dev/null
done
sleep 2
for pidfile in "$S"/pids/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile"); pkill -KILL -P "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null
done
# Only what up.sh started, by PID: its Erlang port mapper is among them.
[ -f "$S/run/shm-datadir" ] && rm -rf "$(cat "$S/run/shm-datadir")"
rm -rf "$S"
exit 0
