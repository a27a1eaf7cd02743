package splice

import (
	"io"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/metrics"
)

// scrapeText serves reg's real /metrics handler and parses the text exposition with Prometheus'
// own parser.
func scrapeText(t testing.TB, reg *metrics.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: status %d", rec.Code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return fams
}

// sample is the value of the series of family name whose labels are exactly labels ("k=v,k=v",
// sorted); a histogram's value is its sample count.
func sample(t testing.TB, fams map[string]*dto.MetricFamily, name, labels string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
	for _, m := range f.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(ls)
		if strings.Join(ls, ",") != labels {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("%s{%s} not in the scrape", name, labels)
	return 0
}

// TestTunnelMetrics: every way a tunnel can end is classified (TunnelResult.Reason and
// wsgate_tunnel_closes_total{reason}), tunnel bytes count exactly, each way, while the tunnel is
// open, pipes are counted by state, and the gauges the HTTP plane raised (TunnelOpened on its own
// shard) come back to 0 once the plane's loops count the closes.
func TestTunnelMetrics(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		reg := metrics.NewRegistry()
		route := reg.Route("/r")
		httpShard := reg.NewShard() // stands for the HTTP loop that hands tunnels over
		const (
			fin  = 300 * time.Millisecond
			idle = 600 * time.Millisecond
		)
		p := newPlane(t, Config{Splice: on, Loops: 2, Metrics: reg, FinTimeout: fin})
		pIdle := newPlane(t, Config{Splice: on, Loops: 1, Metrics: reg, IdleTimeout: idle})
		ln := listen(t)
		open := func(p *Plane, toBackend, toClient []byte) *tunnelEnds {
			t.Helper()
			e := &tunnelEnds{res: make(chan TunnelResult, 1)}
			var cfd, bfd int
			e.client, cfd = tcpPair(t, ln)
			e.backend, bfd = tcpPair(t, ln)
			if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, ToBackend: toBackend, ToClient: toClient,
				Route: route, OnClose: func(r TunnelResult) { e.res <- r }}); err != nil {
				t.Fatal(err)
			}
			httpShard.TunnelOpened(route)
			t.Cleanup(e.close)
			return e
		}
		var up, down int64 // bytes the tunnels moved, as the test counts them
		exchange := func(e *tunnelEnds, nUp, nDown int) {
			t.Helper()
			if nUp > 0 {
				e.client.Write(make([]byte, nUp))
				readN(t, e.backend, nUp, 10*time.Second)
			}
			if nDown > 0 {
				e.backend.Write(make([]byte, nDown))
				readN(t, e.client, nDown, 10*time.Second)
			}
			up += int64(nUp)
			down += int64(nDown)
		}
		expect := func(e *tunnelEnds, want metrics.CloseReason, loops int) TunnelResult {
			t.Helper()
			r := e.result(t, 10*time.Second)
			if r.Reason != want {
				t.Fatalf("closed with %v (err %v), want %v", r.Reason, r.Err, want)
			}
			if r.Loop < 0 || r.Loop >= loops || r.Duration <= 0 || r.Duration > time.Minute {
				t.Fatalf("result %+v", r)
			}
			return r
		}
		wantCloses := map[metrics.CloseReason]float64{}

		// The client finishes first: its EOF reaches the backend, which then closes.
		e := open(p, []byte("early"), []byte("HTTP/1.1 101 x\r\n\r\n"))
		readN(t, e.backend, 5, 5*time.Second)
		readN(t, e.client, 18, 5*time.Second)
		up, down = up+5, down+18
		exchange(e, 70000, 1000)
		// A scrape while the tunnel is open: bytes are counted as they move, not at the close.
		// (The loop adds a write's count just after the kernel took the bytes, which the reader
		// may see first: poll briefly for the exact figure.)
		var f map[string]*dto.MetricFamily
		waitFor(5*time.Second, func() bool {
			f = scrapeText(t, reg)
			return sample(t, f, metrics.NameTunnelBytes, "direction=down,route=/r") == float64(down) &&
				sample(t, f, metrics.NameTunnelBytes, "direction=up,route=/r") == float64(up)
		})
		if got := sample(t, f, metrics.NameTunnelBytes, "direction=up,route=/r"); got != float64(up) {
			t.Fatalf("open tunnel: bytes up %v, want %d", got, up)
		}
		if got := sample(t, f, metrics.NameTunnelBytes, "direction=down,route=/r"); got != float64(down) {
			t.Fatalf("open tunnel: bytes down %v, want %d", got, down)
		}
		if got := sample(t, f, metrics.NameTunnelsActive, "route=/r"); got != 1 {
			t.Fatalf("tunnels active %v, want 1", got)
		}
		e.client.CloseWrite()
		expectEOF(t, e.backend, 5*time.Second)
		e.backend.CloseWrite()
		r := expect(e, metrics.CloseClient, 2)
		if r.ClientToBackend != 70005 || r.BackendToClient != 1018 || r.Err != nil {
			t.Fatalf("result %+v", r)
		}
		wantCloses[metrics.CloseClient]++

		// The backend finishes first.
		e = open(p, nil, nil)
		exchange(e, 10, 200000)
		e.backend.CloseWrite()
		expectEOF(t, e.client, 5*time.Second)
		e.client.Close()
		expect(e, metrics.CloseBackend, 2)
		wantCloses[metrics.CloseBackend]++

		// A reset from either side.
		for _, client := range []bool{true, false} {
			e = open(p, nil, nil)
			exchange(e, 3, 4)
			victim := e.backend
			if client {
				victim = e.client
			}
			victim.SetLinger(0)
			victim.Close()
			expect(e, metrics.CloseReset, 2)
			wantCloses[metrics.CloseReset]++
		}

		// The fin timeout: the client finished, the backend never does.
		e = open(p, nil, nil)
		exchange(e, 1, 1)
		e.client.CloseWrite()
		expectEOF(t, e.backend, 5*time.Second)
		expect(e, metrics.CloseFinTimeout, 2)
		wantCloses[metrics.CloseFinTimeout]++

		// The idle timeout.
		e = open(pIdle, nil, nil)
		exchange(e, 2, 2)
		expect(e, metrics.CloseIdleTimeout, 1)
		wantCloses[metrics.CloseIdleTimeout]++

		// Any other error: a splice(2) that fails with EIO (only the splice path has a hook; the
		// bytes up to the first full small read are copied and counted, whatever EIO cut).
		var pErr *Plane
		if on {
			pErr = newPlane(t, Config{Splice: true, Loops: 1, Metrics: reg})
			pErr.spliceIn = func(in, out, n int) (int, error) { return 0, unix.EIO }
			e = open(pErr, nil, nil)
			// More than the small-message buffer, so that the direction turns bulk and splices.
			go e.client.Write(make([]byte, 256<<10))
			r := expect(e, metrics.CloseError, 1)
			if !strings.Contains(r.Err.Error(), "read from client") {
				t.Fatalf("error %v", r.Err)
			}
			up += r.ClientToBackend // the small read that turned the direction bulk
			wantCloses[metrics.CloseError]++
		}

		// Pipes: none busy once every tunnel is quiet; the idle ones are the loops' pools.
		f = scrapeText(t, reg)
		st := p.Stats()
		pooled := st.PipesIdle + pIdle.Stats().PipesIdle
		if pErr != nil {
			pooled += pErr.Stats().PipesIdle
		}
		if got := sample(t, f, metrics.NameSplicePipes, "state=busy"); got != 0 {
			t.Fatalf("busy pipes %v, want 0", got)
		}
		if got := sample(t, f, metrics.NameSplicePipes, "state=idle"); got != float64(pooled) {
			t.Fatalf("idle pipes %v, want %d", got, pooled)
		}
		if on && st.PipesIdle == 0 {
			t.Fatal("the splice path pooled no pipe")
		}

		// The plane closing ends the rest: drain.
		e = open(p, nil, nil)
		exchange(e, 5, 5)
		p.Close()
		expect(e, metrics.CloseDrain, 2)
		wantCloses[metrics.CloseDrain]++
		pIdle.Close()
		if pErr != nil {
			pErr.Close()
		}

		f = scrapeText(t, reg)
		var n float64
		for r := metrics.CloseReason(0); r.String() != "invalid"; r++ {
			got := sample(t, f, metrics.NameTunnelCloses, "reason="+r.String()+",route=/r")
			if got != wantCloses[r] {
				t.Errorf("closes{reason=%s} = %v, want %v", r, got, wantCloses[r])
			}
			n += wantCloses[r]
		}
		if got := sample(t, f, metrics.NameTunnelDuration, "route=/r"); got != n {
			t.Errorf("tunnel durations observed %v, want %v", got, n)
		}
		if got := sample(t, f, metrics.NameTunnelBytes, "direction=up,route=/r"); got != float64(up) {
			t.Errorf("bytes up %v, want %d", got, up)
		}
		if got := sample(t, f, metrics.NameTunnelBytes, "direction=down,route=/r"); got != float64(down) {
			t.Errorf("bytes down %v, want %d", got, down)
		}
		for _, s := range []struct{ name, labels string }{
			{metrics.NameTunnelsActive, "route=/r"},
			{metrics.NameConnsActive, "phase=tunnel"},
			{metrics.NameSplicePipes, "state=busy"},
			{metrics.NameSplicePipes, "state=idle"}, // the closed planes closed their pools
		} {
			if got := sample(t, f, s.name, s.labels); got != 0 {
				t.Errorf("%s{%s} = %v after every tunnel closed, want 0", s.name, s.labels, got)
			}
		}
	})
}

// Counting a tunnel's bytes allocates nothing (the shard is the loop's own).
func TestTunnelMetricsZeroAllocs(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		reg := metrics.NewRegistry()
		route := reg.Route("/")
		p := newPlane(t, Config{Splice: on, Loops: 1, Metrics: reg})
		ln := listen(t)
		e := &tunnelEnds{res: make(chan TunnelResult, 1)}
		var cfd, bfd int
		e.client, cfd = tcpPair(t, ln)
		e.backend, bfd = tcpPair(t, ln)
		t.Cleanup(e.close)
		if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, Route: route}); err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, 32<<10)
		buf := make([]byte, 32<<10)
		round := func() {
			e.client.Write(msg)
			if _, err := io.ReadFull(e.backend, buf); err != nil {
				t.Fatal(err)
			}
			e.backend.Write(msg)
			if _, err := io.ReadFull(e.client, buf); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 20; i++ {
			round()
		}
		if a := testing.AllocsPerRun(100, round); a > 0 {
			t.Fatalf("%v allocs per round trip with metrics on", a)
		}
		f := scrapeText(t, reg)
		if got := sample(t, f, metrics.NameTunnelBytes, "direction=up,route=/"); got != 121*32<<10 {
			t.Fatalf("bytes up %v, want %d", got, 121*32<<10)
		}
	})
}
