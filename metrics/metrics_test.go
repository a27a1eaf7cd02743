package metrics

import (
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape serves r's real handler and parses the text exposition with Prometheus' own parser.
func scrape(t testing.TB, r *Registry) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("scrape: content type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("scrape: parse: %v", err)
	}
	return fams
}

// labels is "k=v,k=v" for compact assertions.
func labelKey(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func find(t testing.TB, fams map[string]*dto.MetricFamily, name, labels string) *dto.Metric {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("family %s missing", name)
	}
	for _, m := range f.GetMetric() {
		if labelKey(m) == labels {
			return m
		}
	}
	var have []string
	for _, m := range f.GetMetric() {
		have = append(have, labelKey(m))
	}
	t.Fatalf("%s{%s} missing; have %v", name, labels, have)
	return nil
}

func value(t testing.TB, fams map[string]*dto.MetricFamily, name, labels string) float64 {
	t.Helper()
	m := find(t, fams, name, labels)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	t.Fatalf("%s{%s} is not a counter or gauge", name, labels)
	return 0
}

func wantValue(t *testing.T, fams map[string]*dto.MetricFamily, name, labels string, want float64) {
	t.Helper()
	if got := value(t, fams, name, labels); got != want {
		t.Errorf("%s{%s} = %v, want %v", name, labels, got, want)
	}
}

// TestShardsSumExactly drives known events into three "HTTP loop" shards and two "tunnel loop"
// shards from five goroutines (each the single writer of its shard) while another goroutine
// scrapes through the real handler, then asserts every series of the final scrape.
func TestShardsSumExactly(t *testing.T) {
	r := NewRegistry()
	root, loki := r.Route("/"), r.Route("/loki/")
	b1, b2 := r.Backend("127.0.0.1:3000"), r.Backend("127.0.0.1:3100")
	r.SetAccessLogDropped(func() uint64 { return 7 })
	const H, T, R = 3, 2, 400
	stop := make(chan struct{})
	scraped := make(chan int)
	go func() { // concurrent scrapes: the race detector checks reads against the owners' writes
		n := 0
		for {
			select {
			case <-stop:
				scraped <- n
				return
			default:
				scrape(t, r)
				n++
			}
		}
	}()
	var wg sync.WaitGroup
	for range H {
		s := r.NewShard()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range R {
				s.Accepted()
				s.Accepted()
				s.Request(root, 200, time.Millisecond)        // le 0.001
				s.Request(root, 404, 3*time.Millisecond)      // le 0.005
				s.Request(loki, 502, 2*time.Second)           // le 2.5
				s.Request(NoRoute, 400, 100*time.Microsecond) // le 0.0005
				s.UpstreamConnected(b1, 200*time.Microsecond) // le 0.00025
				s.UpstreamError(b2, UpstreamRefused)
				s.Upgrade(loki, UpgradeOK)
				s.Upgrade(loki, UpgradeBadAccept)
				s.TunnelOpened(loki) // one of the two connections becomes a tunnel
				if i%2 == 0 {
					s.Closed() // the other closes every second round
				}
				s.BodyOffloaded()
				s.Rejected(RejectMaxConns)
			}
		}()
	}
	for range T {
		s := r.NewShard()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range R {
				s.TunnelBytes(loki, Up, 10)
				s.TunnelBytes(loki, Down, 1000)
				s.Pipes(PipeBusy, 1)
				s.Pipes(PipeBusy, -1)
				s.Pipes(PipeIdle, 1)
				switch i % 4 {
				case 0, 1:
					s.TunnelClosed(loki, CloseClient, 30*time.Second)
				case 2:
					s.TunnelClosed(loki, CloseIdleTimeout, 2*time.Hour)
				}
			}
		}()
	}
	r.Reloaded(ReloadOK)
	r.Reloaded(ReloadOK)
	r.Reloaded(ReloadError)
	wg.Wait()
	close(stop)
	if n := <-scraped; n == 0 {
		t.Fatal("no scrape ran concurrently")
	}
	_ = b1

	f := scrape(t, r)
	wantValue(t, f, NameBuildInfo, "goversion="+runtime.Version()+",version="+BuildVersion(), 1)
	wantValue(t, f, NameConnsAccepted, "", 2*H*R)
	wantValue(t, f, NameConnsActive, "phase=http", H*R/2)
	wantValue(t, f, NameConnsActive, "phase=tunnel", H*R-T*R*3/4)
	wantValue(t, f, NameConnsRejected, "reason=max_conns", H*R)
	wantValue(t, f, NameConnsRejected, "reason=fd_budget", 0)
	wantValue(t, f, NameConnsRejected, "reason=draining", 0)
	wantValue(t, f, NameBodyOffloads, "", H*R)
	wantValue(t, f, NameSplicePipes, "state=busy", 0)
	wantValue(t, f, NameSplicePipes, "state=idle", T*R)
	wantValue(t, f, NameReloads, "result=ok", 2)
	wantValue(t, f, NameReloads, "result=error", 1)
	wantValue(t, f, NameAccessLogDropped, "", 7)

	for _, route := range []string{"none", "/", "/loki/"} {
		for _, code := range codeNames {
			want := 0.0
			switch route + " " + code {
			case "/ 2xx", "/ 4xx", "/loki/ 5xx", "none 4xx":
				want = H * R
			}
			wantValue(t, f, NameRequests, "code="+code+",route="+route, want)
		}
		for _, res := range upgradeNames {
			want := 0.0
			if route == "/loki/" && (res == "ok" || res == "bad_accept") {
				want = H * R
			}
			wantValue(t, f, NameUpgrades, "result="+res+",route="+route, want)
		}
		for _, reason := range closeNames {
			want := 0.0
			if route == "/loki/" && reason == "client" {
				want = T * R / 2
			} else if route == "/loki/" && reason == "idle_timeout" {
				want = T * R / 4
			}
			wantValue(t, f, NameTunnelCloses, "reason="+reason+",route="+route, want)
		}
		wantTunnels, wantUp, wantDown := 0.0, 0.0, 0.0
		if route == "/loki/" {
			wantTunnels, wantUp, wantDown = H*R-T*R*3/4, T*R*10, T*R*1000
		}
		wantValue(t, f, NameTunnelsActive, "route="+route, wantTunnels)
		wantValue(t, f, NameTunnelBytes, "direction=up,route="+route, wantUp)
		wantValue(t, f, NameTunnelBytes, "direction=down,route="+route, wantDown)
	}

	wantHist(t, f, NameRequestDuration, "route=/", 2*H*R, H*R*0.004, map[float64]uint64{
		0.0005: 0, 0.001: H * R, 0.0025: H * R, 0.005: 2 * H * R, 60: 2 * H * R})
	wantHist(t, f, NameRequestDuration, "route=/loki/", H*R, H*R*2, map[float64]uint64{
		1: 0, 2.5: H * R, 60: H * R})
	wantHist(t, f, NameRequestDuration, "route=none", H*R, H*R*0.0001, map[float64]uint64{
		0.0005: H * R})
	wantHist(t, f, NameConnectDuration, "backend=127.0.0.1:3000", H*R, H*R*0.0002, map[float64]uint64{
		0.0001: 0, 0.00025: H * R, 10: H * R})
	wantHist(t, f, NameConnectDuration, "backend=127.0.0.1:3100", 0, 0, map[float64]uint64{0.0001: 0, 10: 0})
	wantHist(t, f, NameTunnelDuration, "route=/loki/", T*R*3/4, T*R/2*30+T*R/4*7200, map[float64]uint64{
		15: 0, 60: T * R / 2, 3600: T * R / 2, 7200: T * R * 3 / 4, 86400: T * R * 3 / 4})
	for _, be := range []string{"127.0.0.1:3000", "127.0.0.1:3100"} {
		for _, reason := range upstreamNames {
			want := 0.0
			if be == "127.0.0.1:3100" && reason == "refused" {
				want = H * R
			}
			wantValue(t, f, NameUpstreamErrors, "backend="+be+",reason="+reason, want)
		}
	}
}

// wantHist checks a histogram's count, sum (to 1e-9 relative: the sum travels as float seconds)
// and the cumulative counts of the listed buckets.
func wantHist(t *testing.T, f map[string]*dto.MetricFamily, name, labels string, count uint64, sum float64, cum map[float64]uint64) {
	t.Helper()
	m := find(t, f, name, labels)
	h := m.GetHistogram()
	if h == nil {
		t.Fatalf("%s{%s} is not a histogram", name, labels)
	}
	if h.GetSampleCount() != count {
		t.Errorf("%s{%s} count = %d, want %d", name, labels, h.GetSampleCount(), count)
	}
	if math.Abs(h.GetSampleSum()-sum) > 1e-9*math.Max(1, sum) {
		t.Errorf("%s{%s} sum = %v, want %v", name, labels, h.GetSampleSum(), sum)
	}
	got := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		got[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	for le, want := range cum {
		if g, ok := got[le]; !ok || g != want {
			t.Errorf("%s{%s} bucket le=%v = %d (present %v), want %d", name, labels, le, g, ok, want)
		}
	}
}

// TestBucketBoundaries: `le` is inclusive, the next nanosecond goes to the next bucket, beyond
// the last bound is +Inf only, a negative duration counts as 0.
func TestBucketBoundaries(t *testing.T) {
	r := NewRegistry()
	s := r.NewShard()
	route := r.Route("/")
	var wantSum float64
	obs := func(d time.Duration) {
		s.Request(route, 200, d)
		if d > 0 {
			wantSum += d.Seconds()
		}
	}
	for _, ns := range requestBuckets.ns[:requestBuckets.n] {
		obs(time.Duration(ns))     // on the bound: this bucket
		obs(time.Duration(ns + 1)) // one past: the next one
	}
	obs(-time.Second) // clamps to 0: the first bucket
	obs(time.Hour)    // +Inf only
	obs(0)            // first bucket
	f := scrape(t, r)
	h := find(t, f, NameRequestDuration, "route=/").GetHistogram()
	n := requestBuckets.n
	if got, want := h.GetSampleCount(), uint64(2*n+3); got != want {
		t.Fatalf("count %d, want %d", got, want)
	}
	if math.Abs(h.GetSampleSum()-wantSum) > 1e-9 {
		t.Errorf("sum %v, want %v", h.GetSampleSum(), wantSum)
	}
	// The parser reports the +Inf bucket too.
	if len(h.GetBucket()) != n+1 || !math.IsInf(h.GetBucket()[n].GetUpperBound(), 1) || h.GetBucket()[n].GetCumulativeCount() != uint64(2*n+3) {
		t.Fatalf("buckets %v: want %d finite and +Inf holding all %d", h.GetBucket(), n, 2*n+3)
	}
	// Cumulative count at bound i: the -1s and 0 observations, bounds 0..i themselves and the
	// one-past observations of bounds 0..i-1.
	for i, b := range h.GetBucket()[:n] {
		want := uint64(2)     // -1s and 0
		want += uint64(i + 1) // bounds 0..i
		want += uint64(i)     // one-past of bounds 0..i-1
		if b.GetUpperBound() != requestBuckets.sec[i] {
			t.Errorf("bucket %d le=%v, want %v", i, b.GetUpperBound(), requestBuckets.sec[i])
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v cumulative %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	// The text exposition itself: le labels as Prometheus writes them, +Inf last.
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, line := range []string{
		`wsgate_http_request_duration_seconds_bucket{route="/",le="0.0005"} 3`,
		`wsgate_http_request_duration_seconds_bucket{route="/",le="60"} 33`,
		`wsgate_http_request_duration_seconds_bucket{route="/",le="+Inf"} 35`,
		`wsgate_http_request_duration_seconds_count{route="/"} 35`,
		`# TYPE wsgate_http_request_duration_seconds histogram`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("exposition lacks %q", line)
		}
	}
}

func TestBucketLayouts(t *testing.T) {
	for name, b := range map[string]*buckets{"request": requestBuckets, "connect": connectBuckets, "tunnel": tunnelBuckets} {
		for i := 1; i < b.n; i++ {
			if b.ns[i] <= b.ns[i-1] {
				t.Errorf("%s: bounds not ascending at %d", name, i)
			}
		}
	}
	if requestBuckets.sec[0] != 0.0005 || requestBuckets.sec[requestBuckets.n-1] != 60 {
		t.Errorf("request buckets span %v..%v, want 0.0005..60", requestBuckets.sec[0], requestBuckets.sec[requestBuckets.n-1])
	}
	for _, bad := range [][]time.Duration{nil, {2, 1}, make([]time.Duration, 17)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("newBuckets(%v) did not panic", bad)
				}
			}()
			newBuckets(bad...)
		}()
	}
}

// wantFamilies is every family the package registers, with its type and label names.
var wantFamilies = map[string]struct {
	typ    dto.MetricType
	labels string
}{
	NameBuildInfo:        {dto.MetricType_GAUGE, "goversion,version"},
	NameConnsActive:      {dto.MetricType_GAUGE, "phase"},
	NameConnsAccepted:    {dto.MetricType_COUNTER, ""},
	NameConnsRejected:    {dto.MetricType_COUNTER, "reason"},
	NameRequests:         {dto.MetricType_COUNTER, "code,route"},
	NameRequestDuration:  {dto.MetricType_HISTOGRAM, "route"},
	NameConnectDuration:  {dto.MetricType_HISTOGRAM, "backend"},
	NameUpstreamErrors:   {dto.MetricType_COUNTER, "backend,reason"},
	NameUpgrades:         {dto.MetricType_COUNTER, "result,route"},
	NameTunnelsActive:    {dto.MetricType_GAUGE, "route"},
	NameTunnelDuration:   {dto.MetricType_HISTOGRAM, "route"},
	NameTunnelBytes:      {dto.MetricType_COUNTER, "direction,route"},
	NameTunnelCloses:     {dto.MetricType_COUNTER, "reason,route"},
	NameSplicePipes:      {dto.MetricType_GAUGE, "state"},
	NameBodyOffloads:     {dto.MetricType_COUNTER, ""},
	NameReloads:          {dto.MetricType_COUNTER, "result"},
	NameAccessLogDropped: {dto.MetricType_COUNTER, ""},
	NameFDsUsed:          {dto.MetricType_GAUGE, ""},
	NameFDsLimit:         {dto.MetricType_GAUGE, ""},
	NameEngineRestarts:   {dto.MetricType_COUNTER, ""},
	NameQueuedBytes:      {dto.MetricType_GAUGE, ""},
	NameBackendIdle:      {dto.MetricType_GAUGE, ""},
	NameRetries:          {dto.MetricType_COUNTER, ""},
}

// TestLabelSets: every wsgate_ family has its type, exactly its label names, only the enum's
// values for enumerated labels, and nothing else named wsgate_ exists. The standard go_* and
// process_* families are there too.
func TestLabelSets(t *testing.T) {
	r := NewRegistry()
	r.Route("/")
	r.Backend("127.0.0.1:3000")
	r.NewShard()
	f := scrape(t, r)
	enum := map[string][]string{
		"phase": phaseNames[:], "reason": nil, "code": codeNames[:], "result": nil,
		"direction": directionNames[:], "state": pipeNames[:],
	}
	for name, fam := range f {
		if !strings.HasPrefix(name, "wsgate_") {
			continue
		}
		w, ok := wantFamilies[name]
		if !ok {
			t.Errorf("unexpected family %s", name)
			continue
		}
		if fam.GetType() != w.typ {
			t.Errorf("%s: type %v, want %v", name, fam.GetType(), w.typ)
		}
		if fam.GetHelp() == "" {
			t.Errorf("%s: no help", name)
		}
		for _, m := range fam.GetMetric() {
			var names []string
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
				if vals := enum[l.GetName()]; vals != nil && !contains(vals, l.GetValue()) {
					t.Errorf("%s: %s=%q is not in %v", name, l.GetName(), l.GetValue(), vals)
				}
			}
			sort.Strings(names)
			if got := strings.Join(names, ","); got != w.labels {
				t.Errorf("%s: labels %q, want %q", name, got, w.labels)
			}
		}
	}
	for name := range wantFamilies {
		if f[name] == nil {
			t.Errorf("family %s missing", name)
		}
	}
	// A route and a backend known before any event: every combination is there at 0.
	if n := len(f[NameRequests].GetMetric()); n != 2*5 {
		t.Errorf("%s has %d series, want 10 (2 routes x 5 classes)", NameRequests, n)
	}
	if n := len(f[NameUpstreamErrors].GetMetric()); n != int(numUpstreamReasons) {
		t.Errorf("%s has %d series, want %d", NameUpstreamErrors, n, numUpstreamReasons)
	}
	for _, std := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds",
		"go_info", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
		"process_start_time_seconds"} {
		if f[std] == nil {
			t.Errorf("standard family %s missing", std)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestRouteAddedWhileCounting: a reload registers routes and backends while the owners of
// existing shards count; old indices keep their counts, new ones count from then on, the same
// name keeps its index, and a shard made later has every route.
func TestRouteAddedWhileCounting(t *testing.T) {
	r := NewRegistry()
	a := r.Route("a.example/")
	ba := r.Backend("10.0.0.1:80")
	shards := []*Shard{r.NewShard(), r.NewShard()}
	const N = 2000
	var wg sync.WaitGroup
	for _, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range N {
				s.Request(a, 200, time.Millisecond)
				s.UpstreamError(ba, UpstreamReset)
			}
		}()
	}
	var added []int
	for i := range 50 {
		added = append(added, r.Route(fmt.Sprintf("/r%d/", i)))
		r.Backend(fmt.Sprintf("10.0.1.%d:80", i))
	}
	wg.Wait()
	if again := r.Route("a.example/"); again != a {
		t.Fatalf("same name, new index %d (was %d)", again, a)
	}
	if again := r.Backend("10.0.0.1:80"); again != ba {
		t.Fatalf("same backend, new index %d (was %d)", again, ba)
	}
	late := r.NewShard()
	for _, s := range append(shards, late) {
		s.Request(added[49], 500, time.Millisecond)
	}
	f := scrape(t, r)
	wantValue(t, f, NameRequests, "code=2xx,route=a.example/", 2*N)
	wantValue(t, f, NameUpstreamErrors, "backend=10.0.0.1:80,reason=reset", 2*N)
	wantValue(t, f, NameRequests, "code=5xx,route=/r49/", 3)
	wantValue(t, f, NameRequests, "code=5xx,route=/r0/", 0)
	if n := len(f[NameRequests].GetMetric()); n != 52*5 {
		t.Errorf("%d request series, want %d", n, 52*5)
	}
}

// TestIgnoresUnknownIndex: an index the registry never handed out (a bug in the caller) and an
// enum value out of range are dropped, not a panic on the event loop.
func TestIgnoresUnknownIndex(t *testing.T) {
	r := NewRegistry()
	s := r.NewShard()
	s.Request(5, 200, time.Millisecond)
	s.Request(-1, 200, time.Millisecond)
	s.TunnelBytes(9, Up, 10)
	s.UpstreamConnected(0, time.Millisecond) // no backend registered at all
	s.UpstreamError(3, UpstreamRefused)
	s.Upgrade(NoRoute, UpgradeResult(200))
	s.Rejected(RejectReason(99))
	s.Pipes(PipeState(7), 1)
	s.TunnelClosed(NoRoute, CloseReason(42), time.Second)
	f := scrape(t, r)
	for _, code := range codeNames {
		wantValue(t, f, NameRequests, "code="+code+",route=none", 0)
	}
	wantValue(t, f, NameTunnelBytes, "direction=up,route=none", 0)
	if len(f[NameUpstreamErrors].GetMetric()) != 0 {
		t.Errorf("upstream errors without backends: %v", f[NameUpstreamErrors])
	}
	// the close counted what it could: the gauge and duration, no reason
	wantValue(t, f, NameTunnelsActive, "route=none", -1)
	for _, reason := range closeNames {
		wantValue(t, f, NameTunnelCloses, "reason="+reason+",route=none", 0)
	}
	if got := CloseReason(42).String(); got != "invalid" {
		t.Errorf("CloseReason(42) = %q", got)
	}
}

// TestCodeClass maps statuses to classes; out-of-range statuses count as 5xx.
func TestCodeClass(t *testing.T) {
	for status, want := range map[int]string{100: "1xx", 101: "1xx", 200: "2xx", 299: "2xx", 304: "3xx",
		404: "4xx", 499: "4xx", 500: "5xx", 599: "5xx", 600: "5xx", 99: "5xx", 0: "5xx", -5: "5xx"} {
		if got := codeNames[codeClass(status)]; got != want {
			t.Errorf("codeClass(%d) = %s, want %s", status, got, want)
		}
	}
}

func TestEnumNames(t *testing.T) {
	want := map[string][]string{
		"close":    {"client", "backend", "reset", "idle_timeout", "fin_timeout", "drain", "error"},
		"upgrade":  {"ok", "refused", "bad_accept", "upstream_error"},
		"reject":   {"max_conns", "fd_budget", "draining"},
		"upstream": {"refused", "timeout", "unreachable", "reset", "response_timeout", "bad_response"},
	}
	got := map[string][]string{}
	for i := range numCloseReasons {
		got["close"] = append(got["close"], i.String())
	}
	for i := range numUpgradeResults {
		got["upgrade"] = append(got["upgrade"], i.String())
	}
	for i := range numRejectReasons {
		got["reject"] = append(got["reject"], i.String())
	}
	for i := range numUpstreamReasons {
		got["upstream"] = append(got["upstream"], i.String())
	}
	for k := range want {
		if strings.Join(got[k], ",") != strings.Join(want[k], ",") {
			t.Errorf("%s: %v, want %v", k, got[k], want[k])
		}
	}
	if Up.String() != "up" || Down.String() != "down" || PhaseTunnel.String() != "tunnel" || PipeBusy.String() != "busy" || ReloadError.String() != "error" {
		t.Error("direction/phase/pipe/reload names")
	}
}

func TestVersionFrom(t *testing.T) {
	set := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, tc := range []struct {
		bi   *debug.BuildInfo
		want string
	}{
		{nil, "(devel)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261101120000-abcdef123456"}}, "v0.0.0-20261101120000-abcdef123456"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "(devel)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: set("vcs.revision", "957c77c1f00dfeedbeef0000", "vcs.modified", "false")}, "957c77c1f00d"},
		{&debug.BuildInfo{Main: debug.Module{Version: ""}, Settings: set("vcs.revision", "957c77c1f00dfeedbeef0000", "vcs.modified", "true")}, "957c77c1f00d+dirty"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: set("vcs.revision", "957c77c1f00dfeedbeef0000")}, "v1.2.3"},
		{&debug.BuildInfo{Settings: set("vcs.revision", "abc")}, "abc"},
	} {
		if got := versionFrom(tc.bi); got != tc.want {
			t.Errorf("versionFrom(%+v) = %q, want %q", tc.bi, got, tc.want)
		}
	}
	bi, _ := debug.ReadBuildInfo()
	if BuildVersion() != versionFrom(bi) {
		t.Errorf("BuildVersion() = %q, versionFrom(ReadBuildInfo()) = %q", BuildVersion(), versionFrom(bi))
	}
}

// TestHandlerGzip: a scraper that asks for gzip gets it, and it decodes to the same families.
func TestHandlerGzip(t *testing.T) {
	r := NewRegistry()
	r.NewShard().Accepted()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, req)
	if rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", rec.Header().Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, f, NameConnsAccepted, "", 1)
	_ = http.StatusOK
}

// TestShardAllocs: no shard method allocates.
func TestShardAllocs(t *testing.T) {
	r := NewRegistry()
	route := r.Route("/")
	be := r.Backend("127.0.0.1:3000")
	s := r.NewShard()
	allocs := testing.AllocsPerRun(1000, func() {
		s.Accepted()
		s.Rejected(RejectFDBudget)
		s.Request(route, 200, time.Millisecond)
		s.Upgrade(route, UpgradeOK)
		s.TunnelOpened(route)
		s.TunnelBytes(route, Up, 1<<16)
		s.TunnelBytes(route, Down, 1<<16)
		s.TunnelClosed(route, CloseClient, time.Minute)
		s.UpstreamConnected(be, 300*time.Microsecond)
		s.UpstreamError(be, UpstreamTimeout)
		s.Pipes(PipeBusy, 1)
		s.BodyOffloaded()
		s.Closed()
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per event batch, want 0", allocs)
	}
}

// TestTunnelBytesMoveWhileOpen: bytes show in a scrape as the tunnel loop counts them, long
// before the tunnel closes.
func TestTunnelBytesMoveWhileOpen(t *testing.T) {
	r := NewRegistry()
	route := r.Route("/")
	httpLoop, tunnelLoop := r.NewShard(), r.NewShard()
	httpLoop.Accepted()
	httpLoop.Upgrade(route, UpgradeOK)
	httpLoop.TunnelOpened(route)
	var up, down float64
	for i := 1; i <= 3; i++ {
		tunnelLoop.TunnelBytes(route, Up, 1000)
		tunnelLoop.TunnelBytes(route, Down, 65536)
		up, down = up+1000, down+65536
		f := scrape(t, r)
		wantValue(t, f, NameTunnelBytes, "direction=up,route=/", up)
		wantValue(t, f, NameTunnelBytes, "direction=down,route=/", down)
		wantValue(t, f, NameTunnelsActive, "route=/", 1)
		wantValue(t, f, NameConnsActive, "phase=tunnel", 1)
		wantValue(t, f, NameConnsActive, "phase=http", 0)
		wantValue(t, f, NameTunnelCloses, "reason=client,route=/", 0)
	}
	tunnelLoop.TunnelClosed(route, CloseBackend, 90*time.Second)
	f := scrape(t, r)
	wantValue(t, f, NameTunnelsActive, "route=/", 0)
	wantValue(t, f, NameConnsActive, "phase=tunnel", 0)
	wantValue(t, f, NameTunnelCloses, "reason=backend,route=/", 1)
	wantHist(t, f, NameTunnelDuration, "route=/", 1, 90, map[float64]uint64{60: 0, 300: 1})
}

// TestNilIsOff: a nil registry hands out nil shards, and nothing panics.
func TestNilIsOff(t *testing.T) {
	var r *Registry
	s := r.NewShard()
	if s != nil || r.Route("/") != 0 || r.Backend("x:1") != 0 {
		t.Fatal("nil registry")
	}
	r.Reloaded(ReloadOK)
	r.SetAccessLogDropped(func() uint64 { return 1 })
	s.Accepted()
	s.Rejected(RejectMaxConns)
	s.Closed()
	s.Request(0, 200, time.Second)
	s.Upgrade(0, UpgradeOK)
	s.TunnelOpened(0)
	s.TunnelBytes(0, Up, 1)
	s.TunnelClosed(0, CloseClient, time.Second)
	s.UpstreamConnected(0, time.Second)
	s.UpstreamError(0, UpstreamReset)
	s.Pipes(PipeBusy, 1)
	s.BodyOffloaded()
}

// TestServerStats: the families read from the HTTP plane's own counters show what the function
// given to SetServerStats returns at each scrape, and 0 before one is set.
func TestServerStats(t *testing.T) {
	r := NewRegistry()
	names := []string{NameFDsUsed, NameFDsLimit, NameEngineRestarts, NameQueuedBytes, NameBackendIdle, NameRetries}
	f := scrape(t, r)
	for _, n := range names {
		wantValue(t, f, n, "", 0)
	}
	var calls int64
	r.SetServerStats(func() ServerStats {
		calls++
		return ServerStats{FDsUsed: 10 * calls, FDsLimit: 19000, EngineRestarts: 2, QueuedBytes: 4096, BackendIdle: 3, Retries: 5}
	})
	for i := int64(1); i <= 2; i++ {
		f = scrape(t, r)
		for n, want := range map[string]float64{NameFDsUsed: float64(10 * i), NameFDsLimit: 19000,
			NameEngineRestarts: 2, NameQueuedBytes: 4096, NameBackendIdle: 3, NameRetries: 5} {
			wantValue(t, f, n, "", want)
		}
	}
	var nilReg *Registry
	nilReg.SetServerStats(func() ServerStats { return ServerStats{} })
}
