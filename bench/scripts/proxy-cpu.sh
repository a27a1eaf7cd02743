#!/usr/bin/env bash
# proxy-cpu.sh storm|rtt [ROUNDS] [N|RATE] [WSGATE]: the proxy's CPU per upgrade (storm) or per
# echoed message (rtt) from `perf stat` of the proxy's processes, wsgate and nginx with 2 workers
# interleaved (ROUNDS rounds, default 3), with context switches and syscalls per unit, so that a
# ratio can be read from the same minutes on a shared machine.
#
#   storm: N clients (default 4000, 500 in flight, 16 source addresses; bench/cmd/wsstorm) upgrade
#          at once; perf counts from just before the storm to its last 101 (not the echo check).
#   rtt:   1,000 tunnels, RATE 100-byte echoes/s (default 5000, open loop; bench/cmd/wsrtt) for
#          6 s; perf counts the 3 s in the middle.
#
# wsgate runs as wsbench runs it (-loops/-tunnel-loops = 2) with -access-log off, like nginx's
# access_log off in the same configuration (bench/internal/peers). Needs perf (linux-perf) and
# nginx; run as root with `nice -n -10` on a busy machine. Read the CPU figures as a ratio from
# the same round, not as absolutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-storm}
rounds=${2:-3}
arg=${3:-}
wsgate=${4:-bin/wsgate}
case $mode in
storm) n=${arg:-4000} ;;
rtt) rate=${arg:-5000} ;;
*) echo "usage: $0 storm|rtt [ROUNDS] [N|RATE] [WSGATE]" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
pids=()
stopall() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap 'stopall; rm -rf "$tmp"' EXIT
go build -o "$tmp/backend" ./bench/backend
go build -o "$tmp/wsstorm" ./bench/cmd/wsstorm
go build -o "$tmp/wsrtt" ./bench/cmd/wsrtt
go build -o "$tmp/nginxconf" ./bench/cmd/nginxconf
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ulimit -n 20000
events=task-clock,context-switches,raw_syscalls:sys_enter

# start_peer NAME BACKEND_PORT PROXY_PORT: sets ppids to the comma list of the proxy's pids.
start_peer() {
  case $1 in
  wsgate)
    "$wsgate" -listen "127.0.0.1:$3" -backend "127.0.0.1:$2" -log-level warn -access-log off \
      -loops 2 -tunnel-loops 2 2>"$tmp/wsgate.log" &
    pids+=($!); ppids=$! ;;
  nginx-w2)
    mkdir -p "$tmp/ngx"
    "$tmp/nginxconf" "$tmp/ngx" "127.0.0.1:$3" "127.0.0.1:$2" 2 >"$tmp/ngx/nginx.conf"
    nginx -c "$tmp/ngx/nginx.conf" -p "$tmp/ngx" -e "$tmp/ngx/error.log" -g 'daemon off;' &
    pids+=($!); local m=$!
    for _ in $(seq 1 100); do [ -n "$(pgrep -P "$m" | head -1)" ] && break; sleep 0.05; done
    ppids=$(echo "$m" $(pgrep -P "$m") | tr ' ' ',') ;;
  esac
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && break; sleep 0.05; done
}

# per UNITS FILE: perf stat's counts divided by UNITS (task-clock in us).
per() {
  awk -v u="$1" '/task-clock/ {gsub(",","",$1); printf "cpu %.1f us", $1*1000/u}
    /context-switches/ {gsub(",","",$1); printf ", %.2f context switches", $1/u}
    /sys_enter/ {gsub(",","",$1); printf ", %.2f syscalls", $1/u} END {print ""}' "$2"
}

for r in $(seq 1 "$rounds"); do
  for peer in wsgate nginx-w2; do
    bport=$(port); pport=$(port)
    "$tmp/backend" -listen "127.0.0.1:$bport" & pids+=($!)
    start_peer $peer "$bport" "$pport"
    if [ "$mode" = storm ]; then
      "$tmp/wsstorm" -addr "127.0.0.1:$pport" -n 200 -par 50 >/dev/null # warm-up
      sleep 0.5
      perf stat -e $events -p "$ppids" -o "$tmp/stat.txt" & sp=$!
      sleep 0.3
      : >"$tmp/storm.out"
      "$tmp/wsstorm" -addr "127.0.0.1:$pport" -n "$n" -par 500 >"$tmp/storm.out" & wp=$!
      for _ in $(seq 1 1500); do [ -s "$tmp/storm.out" ] && break; sleep 0.02; done
      kill -INT $sp; wait $sp 2>/dev/null || true
      wait $wp || true
      printf "round %d %-8s %s\n    per upgrade: %s" "$r" $peer "$(head -1 "$tmp/storm.out")" "$(per "$n" "$tmp/stat.txt")"
      echo
    else
      "$tmp/wsrtt" -addr "127.0.0.1:$pport" -rate "$rate" -d 6s >"$tmp/rtt.out" & wp=$!
      sleep 2.5
      perf stat -e $events -p "$ppids" -o "$tmp/stat.txt" -- sleep 3
      wait $wp || true
      printf "round %d %-8s %s\n    per echo: %s" "$r" $peer "$(head -1 "$tmp/rtt.out")" "$(per $((rate * 3)) "$tmp/stat.txt")"
      echo
    fi
    stopall
  done
done
