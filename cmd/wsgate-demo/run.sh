#!/usr/bin/env bash
# make run: two demo backends, a Grafana-like one on $DEMO and a Loki-like one on $LOKI, with wsgate
# in front of both on $LISTEN and two routes (/ -> DEMO, /loki/ -> LOKI), all on loopback, in the
# foreground until Ctrl-C.
#
#   bash cmd/wsgate-demo/run.sh [BIN [LISTEN [DEMO [LOKI]]]]
#       (defaults: bin 127.0.0.1:8080 127.0.0.1:3000 127.0.0.1:3100)
#
# Environment: WSGATE_FLAGS / DEMO_FLAGS add flags to wsgate / to both demo processes (e.g.
# DEMO_FLAGS="-interval 100ms"); START_TIMEOUT (seconds, default 10) bounds the wait for each to
# accept connections.
# TLS=1 (make run TLS=1): wsgate serves https/wss with a local CA and certificate made by
# wsgate-demo -gen-tls in TLS_DIR (default ~/.cache/wsgate-demo-tls, kept across runs so a browser
# told to trust its ca.pem once keeps trusting it).
set -uo pipefail

BIN=${1:-bin}
LISTEN=${2:-127.0.0.1:8080}
DEMO=${3:-127.0.0.1:3000}
LOKI=${4:-127.0.0.1:3100}
START_TIMEOUT=${START_TIMEOUT:-10}
TLS=${TLS:-0}
TLS_DIR=${TLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wsgate-demo-tls}
read -r -a wsgate_flags <<<"${WSGATE_FLAGS:-}"
read -r -a demo_flags <<<"${DEMO_FLAGS:-}"

say() { printf 'run: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# dial_addr turns a listen address into one a client can connect to: ":8080" and "0.0.0.0:8080"
# are reached on 127.0.0.1, "[::]:8080" on ::1.
dial_addr() {
	local addr=$1 host port
	port=${addr##*:}
	host=${addr%:*}
	host=${host#[}
	host=${host%]}
	case $host in
	"" | 0.0.0.0) host=127.0.0.1 ;;
	::) host=::1 ;;
	esac
	printf '%s %s\n' "$host" "$port"
}

# accepting ADDR: true when something accepts TCP connections on ADDR (bounded to 1s).
accepting() {
	local host port
	read -r host port < <(dial_addr "$1")
	# shellcheck disable=SC2016 # $0/$1 expand in the inner shell, on purpose
	timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

url_host() {
	local host port
	read -r host port < <(dial_addr "$1")
	case $host in *:*) host="[$host]" ;; esac
	printf '%s:%s\n' "$host" "$port"
}

for b in wsgate wsgate-demo; do
	[[ -x $BIN/$b ]] || die "$BIN/$b is missing or not executable; run 'make build' first"
done
[[ $LISTEN != "$DEMO" && $LISTEN != "$LOKI" && $DEMO != "$LOKI" ]] || die "LISTEN, DEMO and LOKI must be three addresses ($LISTEN, $DEMO, $LOKI)"
# check_free NAME ADDR VAR: refuse to start when ADDR already accepts connections.
check_free() {
	local who=$1 addr=$2 var=$3
	if accepting "$addr"; then
		die "port busy: something already accepts connections on $addr (needed for $who); stop it or choose another address, e.g. make run $var=127.0.0.1:$((${addr##*:} + 1))"
	fi
}
check_free wsgate "$LISTEN" LISTEN
check_free wsgate-demo "$DEMO" DEMO
check_free "wsgate-demo -role loki" "$LOKI" LOKI

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-run.XXXXXX") || die "cannot create a log directory"
demo_pid=""
loki_pid=""
wsgate_pid=""
stopping=0

# shellcheck disable=SC2317 # reached through the traps
stop_pid() { # stop_pid NAME PID: SIGTERM, up to 5s grace, then SIGKILL.
	local name=$1 pid=$2 i
	[[ -n $pid ]] || return 0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$name (pid $pid) did not stop within 5s of SIGTERM; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	return 0
}

# shellcheck disable=SC2317 # reached through the traps
cleanup() {
	((stopping)) && return
	stopping=1
	stop_pid wsgate "$wsgate_pid"
	stop_pid wsgate-demo "$demo_pid"
	stop_pid "wsgate-demo -role loki" "$loki_pid"
}
trap 'cleanup; say "stopped wsgate and both wsgate-demo processes"; exit 0' INT TERM HUP
trap cleanup EXIT

# show_failure NAME PID LOG ADDR: explain why NAME is not serving, with its last log lines.
show_failure() {
	local name=$1 pid=$2 log=$3 addr=$4 code
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid" 2>/dev/null
		code=$?
		say "error: $name exited during start-up (exit code $code); it was to listen on $addr"
	else
		say "error: $name (pid $pid) did not accept connections on $addr within ${START_TIMEOUT}s"
	fi
	if grep -qi 'address already in use' "$log" 2>/dev/null; then
		say "port busy: $addr is already bound by another process"
	fi
	say "last lines of $log:"
	tail -n 20 "$log" | sed 's/^/    /' >&2
}

# wait_ready NAME PID LOG ADDR: bounded wait until ADDR accepts and the process is still alive.
wait_ready() {
	local name=$1 pid=$2 log=$3 addr=$4 deadline=$((SECONDS + START_TIMEOUT))
	while ((SECONDS < deadline)); do
		kill -0 "$pid" 2>/dev/null || break
		if accepting "$addr"; then
			# A process that lost the race for the port is still alive for a moment; make sure it
			# is our process that stays up.
			sleep 0.1
			kill -0 "$pid" 2>/dev/null && return 0
			break
		fi
		sleep 0.1
	done
	show_failure "$name" "$pid" "$log" "$addr"
	return 1
}

"$BIN/wsgate-demo" -role grafana -listen "$DEMO" "${demo_flags[@]}" >"$LOGDIR/demo.log" 2>&1 &
demo_pid=$!
wait_ready wsgate-demo "$demo_pid" "$LOGDIR/demo.log" "$DEMO" || exit 1

"$BIN/wsgate-demo" -role loki -listen "$LOKI" "${demo_flags[@]}" >"$LOGDIR/loki.log" 2>&1 &
loki_pid=$!
wait_ready "wsgate-demo -role loki" "$loki_pid" "$LOGDIR/loki.log" "$LOKI" || exit 1

scheme=http
wscheme=ws
curl_ca=""
if [[ $TLS == 1 ]]; then
	read -r lhost _ < <(dial_addr "$LISTEN")
	spki=$("$BIN/wsgate-demo" -gen-tls "$TLS_DIR" -tls-names "localhost,127.0.0.1,::1,$lhost") || die "cannot make the local CA and certificate in $TLS_DIR"
	spki=${spki#spki=}
	wsgate_flags+=(-tls-cert "$TLS_DIR/cert.pem" -tls-key "$TLS_DIR/key.pem")
	scheme=https wscheme=wss curl_ca="--cacert $TLS_DIR/ca.pem "
fi

# Two routes: Loki's API under /loki/ (Loki serves it under that prefix itself, so it is kept),
# everything else to Grafana. (docs/examples/grafana-loki.toml does the same from a file, with
# Loki's /ready probed.)
"$BIN/wsgate" -listen "$LISTEN" -route "/=$DEMO" -route "/loki/=$LOKI" \
	"${wsgate_flags[@]}" >"$LOGDIR/wsgate.log" 2>&1 &
wsgate_pid=$!
wait_ready wsgate "$wsgate_pid" "$LOGDIR/wsgate.log" "$LISTEN" || exit 1

front=$(url_host "$LISTEN")
cat >&2 <<EOF

================================================================================
  wsgate is up on $scheme://$front/ with two routes:
      /        ->  Grafana-like demo $DEMO   (the page, /api/*, Grafana Live)
      /loki/   ->  Loki-like demo    $LOKI   (/loki/api/v1/tail, /loki/api/v1/labels)

  open $scheme://$front/ in a browser

  The page (from the Grafana-like backend) opens a WebSocket through wsgate to
  $wscheme://$front/loki/api/v1/tail, which the /loki/ route sends to the Loki-like
  backend, and shows log lines as they stream. Requests through both routes:
    curl -s  ${curl_ca}$scheme://$front/api/headers         (Grafana-like: Host preserved, X-Forwarded-For added)
    curl -s  ${curl_ca}$scheme://$front/loki/api/v1/labels  (Loki-like, through the /loki/ route)
    curl -si ${curl_ca}$scheme://$front/api/redirect        (Location rewritten to $front)
    curl -s  ${curl_ca}$scheme://$front/api/big?bytes=1000000 | wc -c
  Each answer names its backend in X-Demo-Server (curl -si).
  To see why Host is preserved: WSGATE_FLAGS=-preserve-host=false make run
  (the Loki-like backend then refuses the page's WebSocket with 403, as Grafana does).

  pids: wsgate $wsgate_pid, grafana-like $demo_pid, loki-like $loki_pid    logs: $LOGDIR/
  Ctrl-C stops all three.
================================================================================

EOF
if [[ $TLS == 1 ]]; then
	cat >&2 <<EOF
  TLS: certificate $TLS_DIR/cert.pem (ECDSA P-256, for localhost, 127.0.0.1, ::1),
  signed by a local CA made for this demo: $TLS_DIR/ca.pem. To trust it:
    curl, openssl:  --cacert $TLS_DIR/ca.pem  /  -CAfile $TLS_DIR/ca.pem
    Chromium/Chrome, this certificate only (nothing else is trusted more):
        chromium --user-data-dir=/tmp/wsgate-demo-profile --ignore-certificate-errors-spki-list=$spki $scheme://$front/
    or import the CA for good: certutil -d sql:\$HOME/.pki/nssdb -A -t C,, -n wsgate-demo -i $TLS_DIR/ca.pem
    Firefox: Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import.
  Delete $TLS_DIR to make a new CA.
================================================================================

EOF
fi

# Follow the logs with a prefix; --pid ends the followers when this script is gone.
tail --pid=$$ -n +1 -F "$LOGDIR/wsgate.log" 2>/dev/null | sed -u 's/^/[wsgate]  /' >&2 &
tail --pid=$$ -n +1 -F "$LOGDIR/demo.log" 2>/dev/null | sed -u 's/^/[grafana] /' >&2 &
tail --pid=$$ -n +1 -F "$LOGDIR/loki.log" 2>/dev/null | sed -u 's/^/[loki]    /' >&2 &

# Foreground until Ctrl-C (the INT trap) or until one of the three dies on its own.
wait -n "$demo_pid" "$loki_pid" "$wsgate_pid"
code=$?
((stopping)) && exit 0
if ! kill -0 "$wsgate_pid" 2>/dev/null; then
	say "error: wsgate (pid $wsgate_pid) exited with code $code; stopping the demo backends"
	tail -n 20 "$LOGDIR/wsgate.log" | sed 's/^/    /' >&2
elif ! kill -0 "$demo_pid" 2>/dev/null; then
	say "error: wsgate-demo (pid $demo_pid) exited with code $code; stopping wsgate"
	tail -n 20 "$LOGDIR/demo.log" | sed 's/^/    /' >&2
else
	say "error: wsgate-demo -role loki (pid $loki_pid) exited with code $code; stopping wsgate"
	tail -n 20 "$LOGDIR/loki.log" | sed 's/^/    /' >&2
fi
exit 1
