#!/usr/bin/env bash
# storm-syscalls.sh [N] [WSGATE]: the proxy's syscalls per upgrade during a reconnect storm.
# Starts the benchmark backend and wsgate (bin/wsgate, or WSGATE) on free loopback ports, attaches
# strace -c -f to wsgate, runs bench/cmd/wsstorm with N upgrades (default 3000; 500 in flight;
# 16 source addresses), and prints strace's table with a calls-per-upgrade column. strace slows
# the proxy several times over: read the counts, not the times. Needs strace (apt-get install strace).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-3000}
wsgate=${2:-bin/wsgate}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
go build -o "$tmp/backend" ./bench/backend
go build -o "$tmp/wsstorm" ./bench/cmd/wsstorm
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bport=$(port); pport=$(port)
"$tmp/backend" -listen "127.0.0.1:$bport" & pids+=($!)
ulimit -n 20000
"$wsgate" -listen "127.0.0.1:$pport" -backend "127.0.0.1:$bport" -log-level warn & wpid=$!; pids+=($wpid)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$pport) 2>/dev/null && break; sleep 0.05; done
"$tmp/wsstorm" -addr "127.0.0.1:$pport" -n 200 -par 50 >/dev/null # warm-up: first connections, pools
sleep 1
strace -c -f -p "$wpid" -o "$tmp/strace.txt" & spid=$!
sleep 1
# strace stops as soon as the storm's last 101 arrived (wsstorm's first line), before the echo
# check and the closes, so the counts are the upgrades' alone.
"$tmp/wsstorm" -addr "127.0.0.1:$pport" -n "$n" -par 500 -hold 3s | while read -r line; do
  echo "$line"
  if kill -0 "$spid" 2>/dev/null; then kill -INT "$spid"; fi
done
wait "$spid" 2>/dev/null || true
awk -v n="$n" 'NR<=2 {print; next} /^------/ {print; next} {c=$4; printf "%s   %7.2f per upgrade\n", $0, c/n}' "$tmp/strace.txt"
