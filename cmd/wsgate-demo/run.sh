#!/usr/bin/env bash
# make run: the demo backend on $DEMO with wsgate in front of it on $LISTEN, both on loopback, in the
# foreground until Ctrl-C.
#
#   bash cmd/wsgate-demo/run.sh [BIN [LISTEN [DEMO]]]     (defaults: bin 127.0.0.1:8080 127.0.0.1:3000)
#
# Environment: WSGATE_FLAGS / DEMO_FLAGS add flags to either process (e.g. DEMO_FLAGS="-interval 100ms");
# START_TIMEOUT (seconds, default 10) bounds the wait for both to accept connections.
# TLS=1 (make run TLS=1): wsgate serves https/wss with a local CA and certificate made by
# wsgate-demo -gen-tls in TLS_DIR (default ~/.cache/wsgate-demo-tls, kept across runs so a browser
# told to trust its ca.pem once keeps trusting it).
set -uo pipefail

BIN=${1:-bin}
LISTEN=${2:-127.0.0.1:8080}
DEMO=${3:-127.0.0.1:3000}
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
[[ $LISTEN != "$DEMO" ]] || die "LISTEN and DEMO are the same address ($LISTEN)"
# check_free NAME ADDR VAR: refuse to start when ADDR already accepts connections.
check_free() {
	local who=$1 addr=$2 var=$3
	if accepting "$addr"; then
		die "port busy: something already accepts connections on $addr (needed for $who); stop it or choose another address, e.g. make run $var=127.0.0.1:$((${addr##*:} + 1))"
	fi
}
check_free wsgate "$LISTEN" LISTEN
check_free wsgate-demo "$DEMO" DEMO

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-run.XXXXXX") || die "cannot create a log directory"
demo_pid=""
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
}
trap 'cleanup; say "stopped wsgate and wsgate-demo"; exit 0' INT TERM HUP
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

"$BIN/wsgate-demo" -listen "$DEMO" "${demo_flags[@]}" >"$LOGDIR/demo.log" 2>&1 &
demo_pid=$!
wait_ready wsgate-demo "$demo_pid" "$LOGDIR/demo.log" "$DEMO" || exit 1

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

"$BIN/wsgate" -listen "$LISTEN" -backend "$DEMO" "${wsgate_flags[@]}" >"$LOGDIR/wsgate.log" 2>&1 &
wsgate_pid=$!
wait_ready wsgate "$wsgate_pid" "$LOGDIR/wsgate.log" "$LISTEN" || exit 1

front=$(url_host "$LISTEN")
cat >&2 <<EOF

================================================================================
  wsgate is up: $scheme://$front/  ->  demo backend $DEMO

  open $scheme://$front/ in a browser

  The page opens a WebSocket through wsgate to $wscheme://$front/loki/api/v1/tail
  and shows log lines as they stream. Requests through the proxy:
    curl -s  ${curl_ca}$scheme://$front/api/headers      (Host preserved, X-Forwarded-For added)
    curl -si ${curl_ca}$scheme://$front/api/redirect     (Location rewritten to $front)
    curl -s  ${curl_ca}$scheme://$front/api/big?bytes=1000000 | wc -c
  To see why Host is preserved: WSGATE_FLAGS=-preserve-host=false make run
  (the backend then refuses the page's WebSocket with 403, as Grafana does).

  pids: wsgate $wsgate_pid, wsgate-demo $demo_pid    logs: $LOGDIR/
  Ctrl-C stops both.
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

# Follow both logs with a prefix; --pid ends the followers when this script is gone.
tail --pid=$$ -n +1 -F "$LOGDIR/wsgate.log" 2>/dev/null | sed -u 's/^/[wsgate] /' >&2 &
tail --pid=$$ -n +1 -F "$LOGDIR/demo.log" 2>/dev/null | sed -u 's/^/[demo]   /' >&2 &

# Foreground until Ctrl-C (the INT trap) or until one of the two dies on its own.
wait -n "$demo_pid" "$wsgate_pid"
code=$?
((stopping)) && exit 0
if ! kill -0 "$wsgate_pid" 2>/dev/null; then
	say "error: wsgate (pid $wsgate_pid) exited with code $code; stopping the demo backend"
	tail -n 20 "$LOGDIR/wsgate.log" | sed 's/^/    /' >&2
else
	say "error: wsgate-demo (pid $demo_pid) exited with code $code; stopping wsgate"
	tail -n 20 "$LOGDIR/demo.log" | sed 's/^/    /' >&2
fi
exit 1
