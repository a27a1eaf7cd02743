package main

// The observability flags through the real binary: the admin listener, the version both ways,
// the access log in both formats, SIGUSR1 after a logrotate-style rename, and the Grafana
// dashboard's queries against a real scrape after traffic.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// httpGet GETs url and returns the status and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrapeBinary GETs /metrics from a running wsgate's admin listener and parses it with
// Prometheus' text parser.
func scrapeBinary(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return fams
}

// scrapeUntil scrapes until ok accepts the families (for up to 5 s) and returns the last scrape:
// a count is made just after the client saw its bytes (the exchange's end, a tunnel's close).
func scrapeUntil(t *testing.T, admin string, ok func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f := scrapeBinary(t, admin)
		if ok(f) || time.Now().After(deadline) {
			return f
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// has reports whether the series of name with exactly labels has value v.
func has(f map[string]*dto.MetricFamily, name, labels string, v float64) bool {
	got, ok := lookup(f, name, labels)
	return ok && got == v
}

// startAdmin runs wsgate with an admin listener in front of be and waits until /readyz says 200.
func startAdmin(t *testing.T, bin, be string, extra ...string) (p *proc, listen, admin string) {
	t.Helper()
	listen, admin = freePort(t), freePort(t)
	p = startProc(t, exec.Command(bin, append([]string{"-listen", listen, "-backend", be, "-admin", admin}, extra...)...))
	p.waitLog(t, "wsgate listening", 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, listen, admin
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 within 10s (%v); stderr:\n%s", err, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stopProc(t *testing.T, p *proc) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
	}
}

// TestBinaryAdmin: /healthz, /readyz after start, /metrics with real counts, /debug/pprof/ only
// with -admin-pprof, and the admin listener gone with the process.
func TestBinaryAdmin(t *testing.T) {
	be := newCountingBackend(t)
	for _, pprof := range []bool{false, true} {
		var extra []string
		if pprof {
			extra = []string{"-admin-pprof"}
		}
		p, listen, admin := startAdmin(t, binPath, be.addr, extra...)
		if code, body := httpGet(t, "http://"+admin+"/healthz"); code != 200 || body != "ok\n" {
			t.Fatalf("/healthz: %d %q", code, body)
		}
		if code, body := httpGet(t, "http://"+admin+"/readyz"); code != 200 || body != "ready\n" {
			t.Fatalf("/readyz: %d %q", code, body)
		}
		wantPprof := 404
		if pprof {
			wantPprof = 200
		}
		if code, _ := httpGet(t, "http://"+admin+"/debug/pprof/"); code != wantPprof {
			t.Fatalf("-admin-pprof=%v: /debug/pprof/ answered %d, want %d", pprof, code, wantPprof)
		}
		// The proxy listener knows nothing of the admin paths: they go to the backend.
		get(t, listen, 3)
		f := scrapeUntil(t, admin, func(f map[string]*dto.MetricFamily) bool {
			return has(f, "wsgate_http_requests_total", "code=2xx,route=/", 3)
		})
		if v := value(t, f, "wsgate_http_requests_total", "code=2xx,route=/"); v != 3 {
			t.Fatalf("2xx requests %v, want 3", v)
		}
		if v := value(t, f, "wsgate_connections_accepted_total", ""); v != 1 {
			t.Fatalf("accepted %v, want 1", v)
		}
		if v := value(t, f, "wsgate_fd_budget_limit", ""); v <= 0 {
			t.Fatalf("fd budget limit %v", v)
		}
		if f["process_open_fds"] == nil || f["go_goroutines"] == nil {
			t.Fatal("no process_* / go_* families")
		}
		stopProc(t, p)
		if _, err := net.DialTimeout("tcp", admin, time.Second); err == nil {
			t.Fatal("the admin listener outlived the process")
		}
	}
}

// value is the value of the series of name with exactly labels ("k=v,k=v", sorted by key).
func value(t *testing.T, fams map[string]*dto.MetricFamily, name, labels string) float64 {
	t.Helper()
	v, ok := lookup(fams, name, labels)
	if !ok {
		t.Fatalf("%s{%s} not in the scrape", name, labels)
	}
	return v
}

func lookup(fams map[string]*dto.MetricFamily, name, labels string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
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
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// TestBinaryVersionIsBuildInfo: the version `wsgate -version` prints and wsgate_build_info's
// version label come from one function; so do the Go versions. Checked on a plain build and on
// one whose version a packager stamped with -ldflags -X.
func TestBinaryVersionIsBuildInfo(t *testing.T) {
	stamped := filepath.Join(t.TempDir(), "wsgate-stamped")
	build := exec.Command("go", "build", "-o", stamped,
		"-ldflags", "-X github.com/wsgate/wsgate/metrics.versionOverride=1.4.2-test", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	be := newCountingBackend(t)
	for _, c := range []struct{ bin, want string }{{binPath, ""}, {stamped, "1.4.2-test"}} {
		out, err := exec.Command(c.bin, "-version").Output()
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		version := strings.TrimPrefix(lines[0], "wsgate ")
		goLine := strings.Fields(lines[len(lines)-1]) // go go1.26.8 linux/amd64
		if !strings.HasPrefix(lines[0], "wsgate ") || len(goLine) != 3 || goLine[0] != "go" {
			t.Fatalf("-version: %q", out)
		}
		if c.want != "" && version != c.want {
			t.Fatalf("stamped -version %q, want %q", version, c.want)
		}
		p, _, admin := startAdmin(t, c.bin, be.addr)
		f := scrapeBinary(t, admin)
		ms := f["wsgate_build_info"].GetMetric()
		if len(ms) != 1 {
			t.Fatalf("%d wsgate_build_info series", len(ms))
		}
		labels := map[string]string{}
		for _, l := range ms[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != version || labels["goversion"] != goLine[1] || ms[0].GetGauge().GetValue() != 1 {
			t.Fatalf("wsgate_build_info %v = %v; -version says %q, go %q", labels, ms[0].GetGauge().GetValue(), version, goLine[1])
		}
		t.Logf("%s: -version %q, wsgate_build_info %v", filepath.Base(c.bin), version, labels)
		stopProc(t, p)
	}
}

// wsBackend is a backend that upgrades /ws (echoing messages) and answers "ok" otherwise.
func wsBackend(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			io.WriteString(w, "ok")
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// echoTunnel opens a WebSocket through wsgate, echoes n messages of size bytes and closes it.
func echoTunnel(t *testing.T, listen string, n, size int) {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+listen+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket through wsgate: %v", err)
	}
	defer c.Close()
	msg := strings.Repeat("m", size)
	for i := 0; i < n; i++ {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
			t.Fatalf("echo %d: %v", i, err)
		}
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			break
		}
	}
}

// TestBinaryAccessLog: the default (text on stderr, wsgate's own lines in the same format),
// -log-format json to a file (and wsgate's own log in JSON on stderr), and off.
func TestBinaryAccessLog(t *testing.T) {
	be := wsBackend(t)
	file := filepath.Join(t.TempDir(), "access.log")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"json-file", []string{"-log-format", "json", "-access-log", file}},
		{"off", []string{"-access-log", "off"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			listen := freePort(t)
			p := wsgate(t, append([]string{"-listen", listen, "-backend", be}, c.args...)...)
			p.waitLog(t, "wsgate listening", 10*time.Second)
			get(t, listen, 2)
			echoTunnel(t, listen, 3, 100)
			stopProc(t, p)
			stderr := p.stderr.String()
			switch c.name {
			case "default":
				if !strings.Contains(stderr, `level=INFO msg="wsgate listening"`) {
					t.Fatalf("own log not in text:\n%s", stderr)
				}
				if n := strings.Count(stderr, " msg=request client=127.0.0.1:"); n != 3 { // 2 GETs, 1 upgrade
					t.Fatalf("%d request lines on stderr, want 3:\n%s", n, stderr)
				}
				if !regexp.MustCompile(` msg=tunnel client=127\.0\.0\.1:\d+ target=/ws route=/ backend=` + regexp.QuoteMeta(be) +
					` duration=\d+\.\d{6} bytes_up=\d+ bytes_down=\d+ reason=(client|backend)\n`).MatchString(stderr) {
					t.Fatalf("no tunnel line on stderr:\n%s", stderr)
				}
			case "json-file":
				for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
					var v map[string]any
					if err := json.Unmarshal([]byte(l), &v); err != nil || v["msg"] == nil || v["level"] == nil {
						t.Fatalf("own log line not JSON: %q (%v)", l, err)
					}
				}
				b, _ := os.ReadFile(file)
				kinds := map[string]int{}
				for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
					var v map[string]any
					if err := json.Unmarshal([]byte(l), &v); err != nil {
						t.Fatalf("access log line not JSON: %q (%v)", l, err)
					}
					kinds[v["msg"].(string)]++
					if v["msg"] == "tunnel" && (v["bytes_up"].(float64) < 300 || v["target"] != "/ws" || v["backend"] != be) {
						t.Fatalf("tunnel line %q", l)
					}
				}
				if kinds["request"] != 3 || kinds["tunnel"] != 1 {
					t.Fatalf("access log lines %v, want 3 requests and 1 tunnel:\n%s", kinds, b)
				}
				if strings.Contains(stderr, `"msg":"request"`) {
					t.Fatal("access lines on stderr with -access-log FILE")
				}
			case "off":
				if strings.Contains(stderr, "msg=request") || strings.Contains(stderr, "msg=tunnel") {
					t.Fatalf("access lines with -access-log off:\n%s", stderr)
				}
			}
		})
	}
}

// TestBinarySIGUSR1Reopen: logrotate's create mode through the real binary. Lines go to the
// file; it is renamed (wsgate keeps writing to the renamed file: it still has it open) and a new
// empty file is created; SIGUSR1 makes wsgate write every accepted line to the old file and the
// next ones to the new file.
func TestBinarySIGUSR1Reopen(t *testing.T) {
	be := newCountingBackend(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "access.log")
	listen := freePort(t)
	p := wsgate(t, "-listen", listen, "-backend", be.addr, "-access-log", file)
	p.waitLog(t, "wsgate listening", 10*time.Second)
	request := func(path string) {
		c, err := net.DialTimeout("tcp", listen, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", path)
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	waitLine := func(path, target string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(path)
			if strings.Contains(string(b), "target="+target+" ") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no line for %s within 5s:\n%s", path, target, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	request("/before")
	waitLine(file, "/before")
	if err := os.Rename(file, file+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o640); err != nil { // logrotate's "create"
		t.Fatal(err)
	}
	request("/renamed") // still goes to the renamed file
	waitLine(file+".1", "/renamed")
	p.cmd.Process.Signal(syscall.SIGUSR1)
	p.waitLog(t, "SIGUSR1: access log reopened", 10*time.Second)
	request("/after")
	waitLine(file, "/after")
	stopProc(t, p)
	old, _ := os.ReadFile(file + ".1")
	cur, _ := os.ReadFile(file)
	if strings.Count(string(old), "\n") != 2 || !strings.Contains(string(old), "target=/before ") ||
		strings.Contains(string(old), "/after") {
		t.Fatalf("rotated file:\n%s", old)
	}
	if strings.Count(string(cur), "\n") != 1 || !strings.Contains(string(cur), "target=/after ") {
		t.Fatalf("new file:\n%s", cur)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("new file mode: %v %v", st.Mode(), err)
	}
}

var (
	dashMetricRef  = regexp.MustCompile(`\b(?:wsgate|process|go)_[a-zA-Z0-9_]+`)
	dashByClause   = regexp.MustCompile(`\bby \(([^)]*)\)`)
	dashMatcherRef = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
)

// TestBinaryDashboardMetricsExist: every metric the Grafana dashboard queries (panels and
// template variables, histograms through _bucket/_sum/_count) exists in a real scrape of a
// running wsgate after requests and a tunnel, with every label the query groups or filters by
// (job and instance are Prometheus' own), on a series that has it.
func TestBinaryDashboardMetricsExist(t *testing.T) {
	data, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct{ Name, Definition string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	be := wsBackend(t)
	p, listen, admin := startAdmin(t, binPath, be)
	get(t, listen, 5)
	echoTunnel(t, listen, 2, 1000)
	f := scrapeUntil(t, admin, func(f map[string]*dto.MetricFamily) bool {
		return has(f, "wsgate_tunnels_active", "route=/", 0) && has(f, "wsgate_http_requests_total", "code=2xx,route=/", 5)
	})
	stopProc(t, p)

	labelsOf := func(fam *dto.MetricFamily) map[string]bool {
		ls := map[string]bool{"job": true, "instance": true}
		if fam.GetType() == dto.MetricType_HISTOGRAM {
			ls["le"] = true
		}
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = true
			}
		}
		return ls
	}
	resolve := func(name string) *dto.MetricFamily {
		if fam := f[name]; fam != nil && len(fam.GetMetric()) > 0 {
			return fam
		}
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok {
				if fam := f[base]; fam != nil && fam.GetType() == dto.MetricType_HISTOGRAM && len(fam.GetMetric()) > 0 {
					return fam
				}
			}
		}
		return nil
	}
	queries := 0
	check := func(where, expr string) {
		queries++
		var used []*dto.MetricFamily
		for _, ref := range dashMetricRef.FindAllString(expr, -1) {
			fam := resolve(ref)
			if fam == nil {
				t.Errorf("%s: %s is not in the scrape of a running wsgate", where, ref)
				continue
			}
			used = append(used, fam)
		}
		if len(used) == 0 {
			t.Errorf("%s: no metric of the scrape in %q", where, expr)
			return
		}
		labels := map[string]bool{}
		for _, m := range dashByClause.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				labels[strings.TrimSpace(l)] = true
			}
		}
		for _, m := range dashMatcherRef.FindAllStringSubmatch(expr, -1) {
			labels[m[1]] = true
		}
		for l := range labels {
			found := false
			for _, fam := range used {
				found = found || labelsOf(fam)[l]
			}
			if !found {
				t.Errorf("%s: label %q is on no series of %q", where, l, expr)
			}
		}
	}
	for _, pnl := range dash.Panels {
		for _, tg := range pnl.Targets {
			check("panel "+pnl.Title, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			check("variable "+v.Name, v.Definition)
		}
	}
	if queries < 20 {
		t.Fatalf("only %d queries checked", queries)
	}
	// The traffic is there: the panels would not be empty.
	if v := value(t, f, "wsgate_tunnel_closes_total", "reason=client,route=/") + value(t, f, "wsgate_tunnel_closes_total", "reason=backend,route=/"); v != 1 {
		t.Fatalf("tunnel closes %v, want 1", v)
	}
	if v := value(t, f, "wsgate_http_requests_total", "code=2xx,route=/"); v != 5 {
		t.Fatalf("2xx %v, want 5", v)
	}
}
