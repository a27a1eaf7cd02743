package admin

import (
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wsgate/wsgate/metrics"
)

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}}

func get(t *testing.T, method, url string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func TestHealthAndReadiness(t *testing.T) {
	s := start(t, Config{})
	base := "http://" + s.Addr()
	for _, m := range []string{"GET", "HEAD"} {
		code, h, body := get(t, m, base+"/healthz")
		if code != 200 || h.Get("Content-Type") != "text/plain; charset=utf-8" || (m == "GET" && body != "ok\n") {
			t.Errorf("%s /healthz: %d %q %q", m, code, h.Get("Content-Type"), body)
		}
	}
	if code, _, body := get(t, "GET", base+"/readyz"); code != 503 || body != "not ready\n" || s.Ready() {
		t.Errorf("/readyz before SetReady: %d %q", code, body)
	}
	s.SetReady(true)
	if code, _, body := get(t, "GET", base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz ready: %d %q", code, body)
	}
	s.SetReady(false) // drain starts
	if code, _, _ := get(t, "GET", base+"/readyz"); code != 503 {
		t.Errorf("/readyz draining: %d", code)
	}
	if code, _, _ := get(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("/healthz while draining: %d", code)
	}
	if code, h, _ := get(t, "POST", base+"/healthz"); code != 405 || !strings.Contains(h.Get("Allow"), "GET") {
		t.Errorf("POST /healthz: %d Allow %q", code, h.Get("Allow"))
	}
	for _, p := range []string{"/metrics", "/debug/pprof/", "/", "/readyz/x"} {
		if code, _, _ := get(t, "GET", base+p); code != 404 {
			t.Errorf("GET %s without it configured: %d, want 404", p, code)
		}
	}
}

// TestReadinessFlipsUnderLoad: readers polling while the lifecycle flips readiness see only
// 200 or 503, and the last flip wins.
func TestReadinessFlipsUnderLoad(t *testing.T) {
	s := start(t, Config{})
	url := "http://" + s.Addr() + "/readyz"
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				s.SetReady(i%2 == 0)
			}
		}
	}()
	seen := map[int]int{}
	for range 200 {
		code, _, _ := get(t, "GET", url)
		seen[code]++
	}
	close(stop)
	<-done
	if len(seen) > 2 || seen[200]+seen[503] != 200 {
		t.Fatalf("codes %v", seen)
	}
	s.SetReady(true)
	if code, _, _ := get(t, "GET", url); code != 200 {
		t.Fatalf("after the last flip: %d", code)
	}
}

func TestMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	sh := reg.NewShard()
	sh.Accepted()
	sh.Accepted()
	s := start(t, Config{Metrics: reg.Handler()})
	url := "http://" + s.Addr() + "/metrics"

	code, h, body := get(t, "GET", url)
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("/metrics: %d %q", code, h.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if v := fams[metrics.NameConnsAccepted].GetMetric()[0].GetCounter().GetValue(); v != 2 {
		t.Errorf("accepted %v, want 2", v)
	}
	for _, name := range []string{metrics.NameBuildInfo, "process_open_fds", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}

	code, h, body = get(t, "GET", url, "Accept-Encoding", "gzip")
	if code != 200 || h.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip scrape: %d %q", code, h.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !strings.Contains(string(plain), "wsgate_connections_accepted_total 2\n") {
		t.Errorf("gzip body: %v %.200q", err, plain)
	}

	code, h, _ = get(t, "GET", url, "Accept", "application/openmetrics-text; version=1.0.0")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "application/openmetrics-text") {
		t.Errorf("OpenMetrics scrape: %d %q", code, h.Get("Content-Type"))
	}
}

func TestPprof(t *testing.T) {
	s := start(t, Config{Pprof: true})
	base := "http://" + s.Addr()
	code, h, body := get(t, "GET", base+"/debug/pprof/")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d %q", code, h.Get("Content-Type"))
	}
	if code, _, body := get(t, "GET", base+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("goroutine profile: %d", code)
	}
	if code, _, _ := get(t, "GET", base+"/debug/pprof/cmdline"); code != 200 {
		t.Errorf("cmdline: %d", code)
	}
	if code, _, _ := get(t, "GET", base+"/debug/pprof/heap?debug=1"); code != 200 {
		t.Errorf("heap: %d", code)
	}
}

func TestListenErrorNamesTheAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Start(Config{Addr: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "admin listener "+ln.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a used port: %v", err)
	}
}

func TestShutdownClosesListener(t *testing.T) {
	s, err := Start(Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if code, _, _ := get(t, "GET", "http://"+addr+"/healthz"); code != 200 {
		t.Fatal(code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("admin address still accepts after Shutdown")
	}
}
