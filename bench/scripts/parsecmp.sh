#!/usr/bin/env bash
# parsecmp.sh: httpparse against net/http on the same bytes, side by side with benchstat.
# Each Benchmark<Case> has a twin BenchmarkNetHTTP<Case>; this renames the pairs into one
# benchmark with an impl= key so benchstat prints both columns and the ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench/out/httpparse.txt}
mkdir -p "$(dirname "$out")"
go test -run='^$' -bench='^Benchmark(NetHTTP)?(BrowserGET|WebSocketUpgrade|Response200)$' \
  -benchmem -count="${COUNT:-6}" ./httpparse | tee "$out"
cmp="${out%.txt}-cmp.txt"
grep -E '^(goos|goarch|pkg|cpu):' "$out" > "$cmp"
grep -E '^Benchmark(NetHTTP)?(BrowserGET|WebSocketUpgrade|Response200)-' "$out" |
  sed -E 's/^BenchmarkNetHTTP([A-Za-z0-9]+)-([0-9]+)/Benchmark\1\/impl=net-http-\2/; t; s/^Benchmark([A-Za-z0-9]+)-([0-9]+)/Benchmark\1\/impl=httpparse-\2/' >> "$cmp"
go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da -col /impl "$cmp"
