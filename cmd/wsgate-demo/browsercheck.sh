#!/usr/bin/env bash
# browsercheck: load the demo's live-tail page in real headless Chromium, as a new user would after
# `make run`, and assert that log lines arrived over the WebSocket, that the echo came back, and
# that the status says live. Exit 0 only when every check passes; everything started is stopped.
#
#   bash cmd/wsgate-demo/browsercheck.sh            run.sh (= make run) on LISTEN/DEMO/LOKI, page via
#                                                   wsgate's / route, tail via its /loki/ route
#   bash cmd/wsgate-demo/browsercheck.sh --direct   only wsgate-demo on DEMO, page straight from it
#   URL=http://127.0.0.1:8080/ bash cmd/wsgate-demo/browsercheck.sh
#                                                   check an already running setup; starts nothing
#                                                   (EXPECT_PROXY=0 when URL is the backend itself)
#   TLS=1 bash cmd/wsgate-demo/browsercheck.sh      run.sh with TLS=1: the page over https, the tail over
#                                                   wss; Chromium trusts exactly the generated certificate
#                                                   (--ignore-certificate-errors-spki-list, nothing else)
#
# Environment: BIN (bin), LISTEN (127.0.0.1:18080), DEMO (127.0.0.1:13000), LOKI (127.0.0.1:13100),
# CHROMIUM (first of
# chromium, chromium-browser, google-chrome), OUT (a new temp dir: page.html, demo.png, run.log),
# HOLD_MS (3000: real time the page keeps a request open so lines stream in under virtual time),
# MIN_LINES (4).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${BIN:-bin}
LISTEN=${LISTEN:-127.0.0.1:18080}
DEMO=${DEMO:-127.0.0.1:13000}
LOKI=${LOKI:-127.0.0.1:13100}
HOLD_MS=${HOLD_MS:-3000}
MIN_LINES=${MIN_LINES:-4}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/wsgate-browsercheck.XXXXXX")}
mkdir -p "$OUT"

TLS=${TLS:-0}
scheme=http
chromium_tls=()
mode=proxy
case ${1:-} in
--direct) mode=direct ;;
"") ;;
*) echo "usage: $0 [--direct]" >&2; exit 2 ;;
esac
if [[ -n ${URL:-} ]]; then
	mode=external
fi

say() { printf 'browsercheck: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

chromium=${CHROMIUM:-}
if [[ -z $chromium ]]; then
	for c in chromium chromium-browser google-chrome; do
		if command -v "$c" >/dev/null; then chromium=$c; break; fi
	done
fi
[[ -n $chromium ]] || die "no Chromium found; install it (apt-get install -y chromium) or set CHROMIUM"

accepting() { # accepting HOST:PORT
	# shellcheck disable=SC2016 # $0/$1 expand in the inner shell, on purpose
	timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${1%:*}" "${1##*:}" 2>/dev/null
}

started_pid=""
started_name=""
stop_started() {
	local pid=$started_pid i
	[[ -n $pid ]] || return 0
	started_pid=""
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$started_name (pid $pid) still running 10s after SIGTERM; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	return 0
}
trap stop_started EXIT
trap 'stop_started; exit 130' INT TERM

# wait_for NAME ADDR: bounded wait (20s) until ADDR accepts while the started process lives.
wait_for() {
	local name=$1 addr=$2 i
	for ((i = 0; i < 200; i++)); do
		if ! kill -0 "$started_pid" 2>/dev/null; then
			say "error: $name exited before $addr accepted connections; its output:"
			sed 's/^/    /' "$OUT/run.log" >&2
			exit 1
		fi
		if [[ $name == run.sh ]]; then
			# run.sh prints the banner only once both processes accept connections.
			grep -q "in a browser" "$OUT/run.log" && return 0
		elif accepting "$addr"; then
			return 0
		fi
		sleep 0.1
	done
	say "error: $name: $addr not ready within 20s; its output:"
	sed 's/^/    /' "$OUT/run.log" >&2
	exit 1
}

case $mode in
proxy)
	[[ -x $BIN/wsgate && -x $BIN/wsgate-demo ]] || die "$BIN/wsgate and $BIN/wsgate-demo are needed; run 'make build' (or use --direct)"
	if [[ $TLS == 1 ]]; then
		# A CA and certificate of this check's own; Chromium pins exactly that certificate.
		export TLS_DIR="$OUT/tls"
		spki=$("$BIN/wsgate-demo" -gen-tls "$TLS_DIR" -tls-names "localhost,127.0.0.1,::1,${LISTEN%:*}") || die "wsgate-demo -gen-tls failed"
		chromium_tls=(--ignore-certificate-errors-spki-list="${spki#spki=}")
		scheme=https
	fi
	TLS=$TLS bash "$here/run.sh" "$BIN" "$LISTEN" "$DEMO" "$LOKI" >"$OUT/run.log" 2>&1 &
	started_pid=$! started_name=run.sh
	wait_for run.sh "$LISTEN"
	base="$scheme://$LISTEN/"
	expect_proxy=1
	;;
direct)
	[[ -x $BIN/wsgate-demo ]] || die "$BIN/wsgate-demo is needed; run 'make build' or 'go build -o $BIN/ ./cmd/wsgate-demo'"
	accepting "$DEMO" && die "port busy: something already accepts connections on $DEMO; set DEMO=host:port"
	"$BIN/wsgate-demo" -listen "$DEMO" >"$OUT/run.log" 2>&1 &
	started_pid=$! started_name=wsgate-demo
	wait_for wsgate-demo "$DEMO"
	base="http://$DEMO/"
	expect_proxy=0
	;;
external)
	base=$URL
	scheme=${URL%%://*}
	read -r -a chromium_tls <<<"${CHROMIUM_FLAGS:-}"
	expect_proxy=${EXPECT_PROXY:-1}
	: >"$OUT/run.log"
	;;
esac

# Assertions anchor on rendered elements: the inline script's source is part of the DOM too.
# The page's own address as the browser sees it (host:port of base), for the Host assertions.
page_host=${base#*://}
page_host=${page_host%%/*}
token="browsercheck-$$-$RANDOM"
sep='?'
[[ $base == *\?* ]] && sep='&'
page_url="$base${sep}echo=$token&hold=$HOLD_MS"
budget=$((HOLD_MS + 2000))

run_chromium() { # run_chromium OUTPUT-FLAG...: one headless page load, bounded in time.
	local profile rc
	profile=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-chromium.XXXXXX")
	timeout -k 5 90 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync \
		--user-data-dir="$profile" --window-size=1280,800 --virtual-time-budget="$budget" \
		--enable-logging=stderr --log-level=0 "${chromium_tls[@]}" \
		"$@" "$page_url" 2>>"$OUT/chromium.log"
	rc=$?
	rm -rf "$profile"
	return $rc
}

say "loading $page_url in $chromium ($mode mode)"
run_chromium --dump-dom >"$OUT/page.html" || die "chromium --dump-dom failed (exit $?); see $OUT/chromium.log"
run_chromium --screenshot="$OUT/demo.png" >/dev/null || die "chromium --screenshot failed (exit $?); see $OUT/chromium.log"

fails=0
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if "$@"; then
		say "ok    $what"
	else
		say "FAIL  $what"
		fails=$((fails + 1))
	fi
}
dom="$OUT/page.html"
has() { grep -qF -- "$1" "$dom"; }

count=$(grep -o '<b id="count">[0-9]*</b>' "$dom" | grep -o '[0-9][0-9]*' | head -n 1)
count=${count:-0}
seqs=$(grep -o ' seq=[0-9][0-9]*' "$dom" | sort -u | wc -l)

check "status indicator says live" has 'id="status" data-state="live">live<'
check "line counter is at least $MIN_LINES (it is $count)" test "$count" -ge "$MIN_LINES"
check "at least 3 distinct synthetic lines rendered over time (saw $seqs)" test "$seqs" -ge 3
check "tail hello line: backend saw Host $page_host on the upgrade" has "msg=\"tail opened\" query=\"{job=\\\"demo\\\"}\" host=\"$page_host\""
check "tail hello line: Origin matched ($scheme://$page_host)" has "origin=\"$scheme://$page_host\""
check "echo of $token came back through the socket" has "class=\"line level-info echo\""
check "echo line carries the sent text" has "text=\"$token\""
if [[ $mode == proxy ]]; then
	check "page and /api/* from the Grafana-like backend ($DEMO, route /)" has "<b id=\"pageserver\">grafana-like demo on $DEMO</b>"
	check "tail from the Loki-like backend ($LOKI, route /loki/)" has "<b id=\"tailserver\">loki-like demo on $LOKI</b>"
fi
if ((expect_proxy)); then
	check "WebSocket upgrade went through a proxy (X-Forwarded-For set)" grep -qE 'x_forwarded_for="[0-9a-f.:]+"' "$dom"
	check "/api/headers through the proxy: X-Forwarded-For and Host $page_host" has '<div id="proxied" class="dim">Through a proxy: X-Forwarded-For '
	check "/api/headers shows Host preserved as $page_host" grep -qE "<div id=\"proxied\" class=\"dim\">Through a proxy: [^<]*, Host $page_host preserved.</div>" "$dom"
else
	check "WebSocket upgrade reached the backend directly (no X-Forwarded-For)" has 'x_forwarded_for=""'
	check "/api/headers reports a direct connection" has '<div id="proxied" class="dim">No X-Forwarded-For: this page talks to the backend directly.</div>'
fi
no_console_errors() { ! grep -E 'CONSOLE.*"Uncaught' "$OUT/chromium.log" >&2; }
check "no uncaught JavaScript errors on the console" no_console_errors
check "screenshot written ($OUT/demo.png)" test -s "$OUT/demo.png"

if ((fails)); then
	status=$(grep -o 'id="status" data-state="[a-z]*">[^<]*' "$dom" | sed 's/.*">//')
	say "page status: ${status:-<no status element in the DOM>}"
	say "$fails check(s) failed; DOM: $dom, screenshot: $OUT/demo.png, server output: $OUT/run.log"
	if [[ -s $OUT/run.log ]]; then
		tail -n 30 "$OUT/run.log" | sed 's/^/    /' >&2
	fi
	exit 1
fi
say "PASS: $count lines live in Chromium via $base ($mode mode); DOM $dom, screenshot $OUT/demo.png"
