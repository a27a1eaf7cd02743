package loop_test

// Metrics and the access log of a running wsgate: known traffic through real sockets, then a
// real scrape of /metrics on a real admin listener, parsed with Prometheus' own text parser, and
// the access-log lines parsed back field by field, in both formats.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/admin"
	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
)

// ---------------------------------------------------------------------------------------------
// the rig: wsgate with metrics, an access log in a buffer, and an admin listener

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type obsRig struct {
	srv    *loop.Server
	addr   string
	reg    *metrics.Registry
	adm    *admin.Server
	out    *lockedBuf
	format accesslog.Format
}

// observe returns an option that wires reg and a log writing to out in format f (flushed every
// 10 ms, so tests see lines quickly).
func observe(reg *metrics.Registry, alog *accesslog.Log) func(*loop.Config) {
	return func(c *loop.Config) { c.Metrics, c.AccessLog = reg, alog }
}

func newObsLog(t testing.TB, f accesslog.Format) (*accesslog.Log, *lockedBuf) {
	out := &lockedBuf{}
	alog := accesslog.New(out, accesslog.Config{Format: f, FlushInterval: 10 * time.Millisecond, Logger: testLogger()})
	t.Cleanup(func() { alog.Close() })
	return alog, out
}

func startObserved(t testing.TB, backend string, f accesslog.Format, opts ...func(*loop.Config)) *obsRig {
	t.Helper()
	reg := metrics.NewRegistry()
	alog, out := newObsLog(t, f)
	adm, err := admin.Start(admin.Config{Addr: "127.0.0.1:0", Metrics: reg.Handler(), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.Shutdown(t.Context()) })
	srv, addr := startProxy(t, backend, append([]func(*loop.Config){observe(reg, alog)}, opts...)...)
	return &obsRig{srv: srv, addr: addr, reg: reg, adm: adm, out: out, format: f}
}

// scrape GETs /metrics from the admin listener and parses it with Prometheus' text parser.
func scrapeAdmin(t testing.TB, adm *admin.Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + adm.Addr() + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape: parse: %v", err)
	}
	return fams
}

func (r *obsRig) scrape(t testing.TB) map[string]*dto.MetricFamily { return scrapeAdmin(t, r.adm) }

// metricValue is the value of the series of family name with exactly the labels given as
// "k=v,k=v" (any order); a histogram's value is its sample count. ok is false when absent.
func metricValue(fams map[string]*dto.MetricFamily, name, labels string) (float64, bool) {
	want := strings.Split(labels, ",")
	if labels == "" {
		want = nil
	}
	sort.Strings(want)
	for _, m := range fams[name].GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(ls)
		if strings.Join(ls, ",") != strings.Join(want, ",") {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// wantMetrics checks exact values; it polls the scrape for up to 5 s, because a few counts are
// made just after the client already saw the bytes (a tunnel's close, a splice's count).
func (r *obsRig) wantMetrics(t testing.TB, want map[string]float64) map[string]*dto.MetricFamily {
	t.Helper()
	var fams map[string]*dto.MetricFamily
	var bad []string
	waitFor(5*time.Second, func() bool {
		fams = r.scrape(t)
		bad = bad[:0]
		for k, v := range want {
			name, labels, _ := strings.Cut(k, "{")
			labels = strings.TrimSuffix(labels, "}")
			got, ok := metricValue(fams, name, labels)
			if !ok || got != v {
				bad = append(bad, fmt.Sprintf("%s = %v (present %v), want %v", k, got, ok, v))
			}
		}
		return len(bad) == 0
	})
	if len(bad) > 0 {
		sort.Strings(bad)
		t.Fatalf("metrics:\n%s", strings.Join(bad, "\n"))
	}
	return fams
}

// ---------------------------------------------------------------------------------------------
// access-log lines, parsed back into key -> value (text: logfmt with Go-quoted values; JSON:
// numbers kept as written), so both formats are checked by the same assertions

func parseLine(t testing.TB, f accesslog.Format, line string) (keys []string, vals map[string]string) {
	t.Helper()
	vals = map[string]string{}
	if f == accesslog.JSON {
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		tok, err := d.Token()
		if err != nil || tok != json.Delim('{') {
			t.Fatalf("JSON line %q: %v", line, err)
		}
		for d.More() {
			k, err := d.Token()
			if err != nil {
				t.Fatalf("JSON line %q: %v", line, err)
			}
			v, err := d.Token()
			if err != nil {
				t.Fatalf("JSON line %q: %v", line, err)
			}
			keys = append(keys, k.(string))
			vals[k.(string)] = fmt.Sprint(v)
		}
		return keys, vals
	}
	s := line
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			t.Fatalf("logfmt line %q: no key at %q", line, s)
		}
		k := s[:eq]
		s = s[eq+1:]
		var v string
		if strings.HasPrefix(s, `"`) {
			end := 1
			for ; end < len(s) && s[end] != '"'; end++ {
				if s[end] == '\\' {
					end++
				}
			}
			var err error
			if v, err = strconv.Unquote(s[:end+1]); err != nil {
				t.Fatalf("logfmt line %q: %v", line, err)
			}
			s = s[end+1:]
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			v, s = s[:sp], s[sp:]
		}
		s = strings.TrimPrefix(s, " ")
		keys = append(keys, k)
		vals[k] = v
	}
	return keys, vals
}

type logLine struct {
	keys []string
	vals map[string]string
	raw  string
}

// logLines waits until the log holds n lines with msg=kind and returns them, keyed by target
// (the tests give every request its own).
func (r *obsRig) logLines(t testing.TB, kind string, n int) map[string]logLine {
	t.Helper()
	var got map[string]logLine
	var all []string
	ok := waitFor(5*time.Second, func() bool {
		got = map[string]logLine{}
		all = strings.Split(strings.TrimSuffix(r.out.String(), "\n"), "\n")
		for _, l := range all {
			if l == "" {
				continue
			}
			k, v := parseLine(t, r.format, l)
			if v["msg"] == kind {
				got[v["target"]] = logLine{k, v, l}
			}
		}
		return len(got) >= n
	})
	if !ok || len(got) != n {
		t.Fatalf("%d %s lines (distinct targets), want %d:\n%s", len(got), kind, n, strings.Join(all, "\n"))
	}
	return got
}

// checkFields compares a parsed line with want; a want value "<num>" asks for any number >= 0,
// "<pos>" for a number > 0, "<time>" for a time within [from, now]; a missing want key means
// the field must be absent.
func checkFields(t testing.TB, what string, l logLine, want map[string]string, order []string, from time.Time) {
	t.Helper()
	keys, got := l.keys, l.vals
	what += ": " + l.raw
	if strings.Join(keys, " ") != strings.Join(order, " ") {
		t.Errorf("%s: fields %v, want %v", what, keys, order)
	}
	for k, w := range want {
		v, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: no field %s", what, k)
		case w == "<num>" || w == "<pos>":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || (w == "<pos>" && f == 0) {
				t.Errorf("%s: %s=%q, want %s", what, k, v, w)
			}
		case w == "<time>":
			tm, err := time.Parse("2006-01-02T15:04:05.000Z07:00", v)
			if err != nil || tm.Before(from.Truncate(time.Millisecond)) || tm.After(time.Now().Add(time.Millisecond)) {
				t.Errorf("%s: time %q (%v) not within [%v, now]", what, v, err, from)
			}
		case v != w:
			t.Errorf("%s: %s=%q, want %q", what, k, v, w)
		}
	}
}

var (
	requestFields       = []string{"time", "msg", "client", "method", "target", "status", "bytes_in", "bytes_out", "duration", "route", "backend", "connect"}
	requestFieldsAnswer = append(append([]string(nil), requestFields...), "answered")
	requestFieldsDetail = append(append([]string(nil), requestFieldsAnswer...), "detail")
	tunnelFields        = []string{"time", "msg", "client", "target", "route", "backend", "duration", "bytes_up", "bytes_down", "reason"}
	formats             = []accesslog.Format{accesslog.Text, accesslog.JSON}
)

// ---------------------------------------------------------------------------------------------
// HTTP exchanges

// obsBackend answers by the path's last element: the statuses the test counts, and two ways a
// backend fails.
func obsBackend(t testing.TB) *backend {
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch "/" + path.Base(r.URL.Path) {
		case "/ok":
			io.WriteString(w, "hello")
		case "/moved":
			w.Header().Set("Location", "/ok")
			w.WriteHeader(302)
		case "/nope":
			http.Error(w, "no such thing", 404)
		case "/boom":
			http.Error(w, "it broke", 500)
		case "/close": // closes without answering: wsgate answers 502 (backend_reset)
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		case "/garbage": // a head no parser accepts: 502 (bad_response)
			c, _, _ := w.(http.Hijacker).Hijack()
			io.WriteString(c, "HTTP/1.1 2OO OK\r\n\r\n")
			c.Close()
		default:
			http.Error(w, "unexpected path "+r.URL.Path, 500)
		}
	}))
}

// oneShot sends req on a fresh connection and reads everything until wsgate closes it; it
// returns the client's address as wsgate saw it and the bytes received.
func oneShot(t testing.TB, addr, req string) (client string, got []byte) {
	t.Helper()
	c := dialRaw(t, addr)
	c.send(t, req)
	got = c.expectClosed(t, 20*time.Second)
	return c.LocalAddr().String(), got
}

func statusLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(line)
}

// TestE2EObserveHTTP: N requests per status class, a parse error, a header timeout, a backend
// that resets and one that answers garbage, a refused dial: exact counts by route and class,
// upstream errors by backend and reason, connections, connect times; one access-log line per
// request with every field, in text and in JSON.
func TestE2EObserveHTTP(t *testing.T) {
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			be := obsBackend(t)
			r := startObserved(t, be.Addr, f, func(c *loop.Config) { c.HeaderTimeout = 400 * time.Millisecond })
			start := time.Now()
			type sent struct {
				target, req, client string
				got                 []byte
			}
			var reqs []sent
			do := func(path string, i int) {
				target := fmt.Sprintf("%s?i=%d", path, i)
				req := "GET " + target + " HTTP/1.1\r\nHost: obs.example\r\nConnection: close\r\n\r\n"
				client, got := oneShot(t, r.addr, req)
				reqs = append(reqs, sent{target, req, client, got})
			}
			counts := map[string]int{"/ok": 3, "/moved": 2, "/nope": 4, "/boom": 1, "/close": 1, "/garbage": 1}
			for _, p := range []string{"/ok", "/moved", "/nope", "/boom", "/close", "/garbage"} {
				for i := 0; i < counts[p]; i++ {
					do(p, i)
				}
			}
			// A head the parser refuses: a field line without a colon.
			badReq := "GET /bad?x=1 HTTP/1.1\r\nHost: obs.example\r\nNo colon here\r\n\r\n"
			badClient, badGot := oneShot(t, r.addr, badReq)
			if !strings.HasPrefix(statusLine(badGot), "HTTP/1.1 400 ") {
				t.Fatalf("bad head answered %q", badGot)
			}
			_, reason, _ := bytes.Cut(badGot, []byte("\r\n\r\n400 Bad Request: "))
			detail := strings.TrimSuffix(string(reason), "\n")
			// A head that never completes: 408 after -header-timeout.
			slowReq := "GET /slow HTTP/1.1\r\nHost: obs.example\r\n"
			slowClient, slowGot := oneShot(t, r.addr, slowReq)
			if !strings.HasPrefix(statusLine(slowGot), "HTTP/1.1 408 ") {
				t.Fatalf("slow head answered %q", slowGot)
			}

			routeLabel := "route=/"
			r.wantMetrics(t, map[string]float64{
				"wsgate_http_requests_total{" + routeLabel + ",code=1xx}":                   0,
				"wsgate_http_requests_total{" + routeLabel + ",code=2xx}":                   3,
				"wsgate_http_requests_total{" + routeLabel + ",code=3xx}":                   2,
				"wsgate_http_requests_total{" + routeLabel + ",code=4xx}":                   4,
				"wsgate_http_requests_total{" + routeLabel + ",code=5xx}":                   3, // the backend's 500, two 502s
				"wsgate_http_requests_total{route=none,code=4xx}":                           2, // the 400 and the 408
				"wsgate_http_requests_total{route=none,code=5xx}":                           0,
				"wsgate_http_request_duration_seconds{" + routeLabel + "}":                  12,
				"wsgate_http_request_duration_seconds{route=none}":                          2,
				"wsgate_upstream_errors_total{backend=" + be.Addr + ",reason=reset}":        1,
				"wsgate_upstream_errors_total{backend=" + be.Addr + ",reason=bad_response}": 1,
				"wsgate_upstream_errors_total{backend=" + be.Addr + ",reason=refused}":      0,
				"wsgate_upstream_connect_duration_seconds{backend=" + be.Addr + "}":         float64(be.Accepted.Load()),
				"wsgate_connections_accepted_total":                                         14,
				"wsgate_connections_active{phase=http}":                                     0,
				"wsgate_connections_active{phase=tunnel}":                                   0,
				"wsgate_websocket_upgrades_total{" + routeLabel + ",result=ok}":             0,
				"wsgate_access_log_dropped_total":                                           0,
			})
			if be.Accepted.Load() == 0 {
				t.Fatal("the backend accepted no connection")
			}

			lines := r.logLines(t, "request", 14)
			statusOf := func(b []byte) string { return strings.Fields(statusLine(b))[1] }
			dialled := 0
			for _, q := range reqs {
				l := lines[q.target]
				want := map[string]string{"time": "<time>", "msg": "request", "client": q.client, "method": "GET",
					"target": q.target, "status": statusOf(q.got), "bytes_in": strconv.Itoa(len(q.req)),
					"bytes_out": strconv.Itoa(len(q.got)), "duration": "<pos>", "route": "/", "backend": be.Addr,
					"connect": "<num>"}
				order := requestFields
				switch {
				case strings.HasPrefix(q.target, "/close"):
					want["answered"], order = "backend_reset", requestFieldsAnswer
				case strings.HasPrefix(q.target, "/garbage"):
					want["answered"], order = "bad_response", requestFieldsAnswer
				}
				checkFields(t, q.target, l, want, order, start)
				if l.vals["connect"] != "0.000000" {
					dialled++
				}
			}
			if int64(dialled) != be.Accepted.Load() {
				t.Errorf("%d lines show a connect time, the backend accepted %d connections", dialled, be.Accepted.Load())
			}
			checkFields(t, "parse error", lines["/bad?x=1"], map[string]string{"time": "<time>", "msg": "request",
				"client": badClient, "method": "GET", "target": "/bad?x=1", "status": "400",
				"bytes_in": strconv.Itoa(len(badReq)), "bytes_out": strconv.Itoa(len(badGot)), "duration": "<num>",
				"route": "none", "backend": "", "connect": "0.000000", "answered": "parse_error", "detail": detail},
				requestFieldsDetail, start)
			if detail == "" {
				t.Error("the 400 named no reason")
			}
			checkFields(t, "header timeout", lines["/slow"], map[string]string{"time": "<time>", "msg": "request",
				"client": slowClient, "method": "GET", "target": "/slow", "status": "408",
				"bytes_in": strconv.Itoa(len(slowReq)), "bytes_out": strconv.Itoa(len(slowGot)), "duration": "<pos>",
				"route": "none", "backend": "", "connect": "0.000000", "answered": "header_timeout"},
				requestFieldsAnswer, start)
			if d, _ := strconv.ParseFloat(lines["/slow"].vals["duration"], 64); d < 0.4 {
				t.Errorf("header timeout after %vs, want >= 0.4", d)
			}

			// A backend nobody listens on: the dial is refused.
			dead := freeAddr(t)
			r2 := startObserved(t, dead, f)
			client, got := oneShot(t, r2.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
			if !strings.HasPrefix(statusLine(got), "HTTP/1.1 502 ") {
				t.Fatalf("refused dial answered %q", got)
			}
			r2.wantMetrics(t, map[string]float64{
				"wsgate_upstream_errors_total{backend=" + dead + ",reason=refused}": 1,
				"wsgate_upstream_connect_duration_seconds{backend=" + dead + "}":    0,
				"wsgate_http_requests_total{route=/,code=5xx}":                      1,
			})
			l := r2.logLines(t, "request", 1)["/x"]
			checkFields(t, "refused dial", l, map[string]string{"client": client, "status": "502", "backend": dead,
				"route": "/", "answered": "connect_refused", "connect": "0.000000"}, requestFieldsAnswer, start)
		})
	}
}

// ---------------------------------------------------------------------------------------------
// WebSocket upgrades and tunnels

// obsTunnelBackend switches "/ws" upgrades and hands the conn to the test; "/ws-refuse" answers
// 403, "/ws-badaccept" a 101 with a wrong Sec-WebSocket-Accept, "/ws-close" closes unanswered.
func obsTunnelBackend(t testing.TB) (*rawBackend, chan *rawPeer) {
	peers := make(chan *rawPeer, 16)
	be := newRawBackend(t, func(p *rawPeer) {
		key := p.Req.Header.Get("Sec-WebSocket-Key")
		switch p.Req.URL.Path {
		case "/ws-refuse":
			io.WriteString(p.Conn, "HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
		case "/ws-badaccept":
			io.WriteString(p.Conn, response101("not-"+key))
			io.Copy(io.Discard, p.R) // until wsgate closes
		case "/ws-close":
		default:
			if _, err := io.WriteString(p.Conn, response101(key)); err == nil {
				peers <- p
				<-p.Done
			}
		}
	})
	return be, peers
}

// obsTunnel is one tunnel through wsgate with the bytes it moved, as the test counts them.
type obsTunnel struct {
	target, client string
	c              *rawConn
	b              *rawPeer
	up, down       int64 // the 101 head counts down: the tunnel plane writes it
	head           int   // the 101 head's length
}

// upgrade sends an upgrade for target and reads the answer head byte by byte, so its exact
// length is known and nothing behind it is consumed.
func upgrade(t testing.TB, addr, target string) (*rawConn, string, []byte) {
	t.Helper()
	c := dialRaw(t, addr)
	req := upgradeRequest("obs.example", target, wsKey(), "")
	c.send(t, req)
	var head []byte
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		b, err := c.br.ReadByte()
		if err != nil {
			return c, req, head // closed: the head (if any) is all there is
		}
		head = append(head, b)
	}
	return c, req, head
}

func openObsTunnel(t testing.TB, addr, target string, peers chan *rawPeer) *obsTunnel {
	t.Helper()
	c, _, head := upgrade(t, addr, target)
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		t.Fatalf("upgrade %s: %q", target, head)
	}
	var p *rawPeer
	select {
	case p = <-peers:
	case <-time.After(5 * time.Second):
		t.Fatalf("upgrade %s: the backend never saw it", target)
	}
	return &obsTunnel{target: target, client: c.LocalAddr().String(), c: c, b: p, down: int64(len(head)), head: len(head)}
}

// move sends up bytes client -> backend and down bytes back, each read whole on the other side.
func (o *obsTunnel) move(t testing.TB, up, down int) {
	t.Helper()
	if up > 0 {
		go o.c.Write(genBytes(uint64(up), up))
		if _, err := io.ReadFull(o.b.R, make([]byte, up)); err != nil {
			t.Fatalf("%s: backend read: %v", o.target, err)
		}
		o.up += int64(up)
	}
	if down > 0 {
		go o.b.Conn.Write(genBytes(uint64(down), down))
		if _, err := io.ReadFull(o.c.br, make([]byte, down)); err != nil {
			t.Fatalf("%s: client read: %v", o.target, err)
		}
		o.down += int64(down)
	}
}

// TestE2EObserveTunnels: upgrades accepted, refused, failing verification and failing upstream;
// tunnels that end each way a tunnel ends through a running wsgate (the client first, the
// backend first, a reset, the fin timeout, the idle timeout, the proxy stopping); bytes counted
// exactly each way, visible in a scrape while the tunnel is still open; one access-log line per
// tunnel, in text and in JSON. (The "error" reason needs a socket error other than a reset, which
// loopback cannot produce: splice's TestTunnelMetrics injects one.)
func TestE2EObserveTunnels(t *testing.T) {
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			be, peers := obsTunnelBackend(t)
			r := startObserved(t, be.Addr, f, func(c *loop.Config) { c.Tunnel.FinTimeout = 500 * time.Millisecond })
			start := time.Now()
			bytesUp := func(n int64) map[string]float64 {
				return map[string]float64{"wsgate_tunnel_bytes_total{route=/,direction=up}": float64(n),
					"wsgate_tunnels_active{route=/}": 1, "wsgate_connections_active{phase=tunnel}": 1}
			}

			// The client finishes first. Halfway through, a scrape shows the bytes that moved.
			tc := openObsTunnel(t, r.addr, "/ws?t=client", peers)
			tc.move(t, 512<<10, 0)
			r.wantMetrics(t, bytesUp(512<<10))
			tc.move(t, 512<<10, 300<<10)
			r.wantMetrics(t, bytesUp(1<<20))
			tc.c.Conn.(*net.TCPConn).CloseWrite()
			if _, err := io.Copy(io.Discard, tc.b.R); err != nil {
				t.Fatal(err)
			}
			tc.b.Conn.Close()
			tc.c.expectClosed(t, 5*time.Second)

			// The backend finishes first.
			tb := openObsTunnel(t, r.addr, "/ws?t=backend", peers)
			tb.move(t, 10, 20)
			tb.b.Conn.CloseWrite()
			tb.c.expectClosed(t, 5*time.Second)
			tb.c.Close()

			// A reset.
			tr := openObsTunnel(t, r.addr, "/ws?t=reset", peers)
			tr.move(t, 5, 0)
			tr.c.Conn.(*net.TCPConn).SetLinger(0)
			tr.c.Close()

			// The fin timeout: the client finished, the backend never does.
			tf := openObsTunnel(t, r.addr, "/ws?t=fin", peers)
			tf.move(t, 7, 3)
			tf.c.Conn.(*net.TCPConn).CloseWrite()
			tf.c.expectClosed(t, 5*time.Second)

			// Upgrades that do not become tunnels.
			refC, refReq, refHead := upgrade(t, r.addr, "/ws-refuse")
			refBody, _ := io.ReadAll(refC.br)
			badC, badReq, badHead := upgrade(t, r.addr, "/ws-badaccept")
			badRest, _ := io.ReadAll(badC.br)
			clC, clReq, clHead := upgrade(t, r.addr, "/ws-close")
			clRest, _ := io.ReadAll(clC.br)
			for _, h := range []struct {
				head []byte
				want string
			}{{refHead, "HTTP/1.1 403 "}, {badHead, "HTTP/1.1 502 "}, {clHead, "HTTP/1.1 502 "}} {
				if !bytes.HasPrefix(h.head, []byte(h.want)) {
					t.Fatalf("answer %q, want %s", h.head, h.want)
				}
			}

			// The proxy stops with a tunnel open: drain.
			td := openObsTunnel(t, r.addr, "/ws?t=drain", peers)
			td.move(t, 1, 1)
			r.wantMetrics(t, map[string]float64{"wsgate_tunnels_active{route=/}": 1})
			stopProxy(t, r.srv)

			tunnels := []*obsTunnel{tc, tb, tr, tf, td}
			var up, down float64
			for _, o := range tunnels {
				up += float64(o.up)
				down += float64(o.down)
			}
			r.wantMetrics(t, map[string]float64{
				"wsgate_websocket_upgrades_total{route=/,result=ok}":                        5,
				"wsgate_websocket_upgrades_total{route=/,result=refused}":                   1,
				"wsgate_websocket_upgrades_total{route=/,result=bad_accept}":                1,
				"wsgate_websocket_upgrades_total{route=/,result=upstream_error}":            1,
				"wsgate_tunnel_closes_total{route=/,reason=client}":                         1,
				"wsgate_tunnel_closes_total{route=/,reason=backend}":                        1,
				"wsgate_tunnel_closes_total{route=/,reason=reset}":                          1,
				"wsgate_tunnel_closes_total{route=/,reason=fin_timeout}":                    1,
				"wsgate_tunnel_closes_total{route=/,reason=drain}":                          1,
				"wsgate_tunnel_closes_total{route=/,reason=idle_timeout}":                   0,
				"wsgate_tunnel_closes_total{route=/,reason=error}":                          0,
				"wsgate_tunnel_duration_seconds{route=/}":                                   5,
				"wsgate_tunnel_bytes_total{route=/,direction=up}":                           up,
				"wsgate_tunnel_bytes_total{route=/,direction=down}":                         down,
				"wsgate_tunnels_active{route=/}":                                            0,
				"wsgate_connections_active{phase=tunnel}":                                   0,
				"wsgate_connections_active{phase=http}":                                     0,
				"wsgate_http_requests_total{route=/,code=1xx}":                              5,
				"wsgate_http_requests_total{route=/,code=4xx}":                              1,
				"wsgate_http_requests_total{route=/,code=5xx}":                              2,
				"wsgate_upstream_errors_total{backend=" + be.Addr + ",reason=reset}":        1,
				"wsgate_upstream_errors_total{backend=" + be.Addr + ",reason=bad_response}": 1,
				"wsgate_connections_accepted_total":                                         8,
			})

			// One line per tunnel, at its close.
			tl := r.logLines(t, "tunnel", 5)
			reasons := map[string]string{"/ws?t=client": "client", "/ws?t=backend": "backend", "/ws?t=reset": "reset",
				"/ws?t=fin": "fin_timeout", "/ws?t=drain": "drain"}
			for _, o := range tunnels {
				checkFields(t, o.target, tl[o.target], map[string]string{"time": "<time>", "msg": "tunnel", "client": o.client,
					"target": o.target, "route": "/", "backend": be.Addr, "duration": "<pos>",
					"bytes_up": strconv.FormatInt(o.up, 10), "bytes_down": strconv.FormatInt(o.down, 10),
					"reason": reasons[o.target]}, tunnelFields, start)
			}
			if d, _ := strconv.ParseFloat(tl["/ws?t=fin"].vals["duration"], 64); d < 0.5 {
				t.Errorf("fin timeout tunnel lived %vs, want >= 0.5", d)
			}
			// One request line per upgrade: the switch, and the answers that were not one.
			rl := r.logLines(t, "request", 8)
			for _, o := range tunnels {
				checkFields(t, o.target, rl[o.target], map[string]string{"status": "101", "route": "/", "backend": be.Addr,
					"client": o.client, "bytes_out": strconv.Itoa(o.head), "connect": "<pos>"}, requestFields, start)
			}
			checkFields(t, "refused", rl["/ws-refuse"], map[string]string{"status": "403", "client": refC.LocalAddr().String(),
				"bytes_in": strconv.Itoa(len(refReq)), "bytes_out": strconv.Itoa(len(refHead) + len(refBody))}, requestFields, start)
			checkFields(t, "bad accept", rl["/ws-badaccept"], map[string]string{"status": "502", "answered": "bad_upgrade",
				"bytes_in": strconv.Itoa(len(badReq)), "bytes_out": strconv.Itoa(len(badHead) + len(badRest))}, requestFieldsAnswer, start)
			checkFields(t, "upstream error", rl["/ws-close"], map[string]string{"status": "502", "answered": "backend_reset",
				"bytes_in": strconv.Itoa(len(clReq)), "bytes_out": strconv.Itoa(len(clHead) + len(clRest))}, requestFieldsAnswer, start)

			// The idle timeout, on a proxy that has one.
			r2 := startObserved(t, be.Addr, f, func(c *loop.Config) { c.Tunnel.IdleTimeout = 400 * time.Millisecond })
			ti := openObsTunnel(t, r2.addr, "/ws?t=idle", peers)
			ti.move(t, 4, 4)
			ti.c.expectClosed(t, 5*time.Second)
			r2.wantMetrics(t, map[string]float64{
				"wsgate_tunnel_closes_total{route=/,reason=idle_timeout}": 1,
				"wsgate_tunnel_bytes_total{route=/,direction=up}":         4,
				"wsgate_tunnel_bytes_total{route=/,direction=down}":       float64(ti.down),
			})
			l := r2.logLines(t, "tunnel", 1)["/ws?t=idle"]
			checkFields(t, "idle", l, map[string]string{"reason": "idle_timeout", "bytes_up": "4",
				"bytes_down": strconv.FormatInt(ti.down, 10)}, tunnelFields, start)
		})
	}
}

// TestE2EObserveRejected: a client over -max-conns is refused at accept with 503, counted by
// reason and logged.
func TestE2EObserveRejected(t *testing.T) {
	be := obsBackend(t)
	r := startObserved(t, be.Addr, accesslog.JSON, func(c *loop.Config) { c.MaxConns = 1 })
	start := time.Now()
	c1 := dialRaw(t, r.addr)
	if !waitFor(5*time.Second, func() bool { return r.srv.Stats().Conns == 1 }) {
		t.Fatal("first client not accepted")
	}
	client, got := oneShot(t, r.addr, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
	if !strings.HasPrefix(statusLine(got), "HTTP/1.1 503 ") {
		t.Fatalf("over -max-conns: %q", got)
	}
	r.wantMetrics(t, map[string]float64{
		"wsgate_connections_rejected_total{reason=max_conns}": 1,
		"wsgate_connections_rejected_total{reason=fd_budget}": 0,
		"wsgate_connections_accepted_total":                   1,
		"wsgate_connections_active{phase=http}":               1,
	})
	l := r.logLines(t, "request", 1)[""]
	checkFields(t, "rejected", l, map[string]string{"time": "<time>", "msg": "request", "client": client, "method": "",
		"target": "", "status": "503", "bytes_in": "0", "bytes_out": strconv.Itoa(len(got)), "duration": "0.000000",
		"route": "none", "backend": "", "connect": "0.000000", "answered": "overloaded"}, requestFieldsAnswer, start)
	c1.Close()
	r.wantMetrics(t, map[string]float64{"wsgate_connections_active{phase=http}": 0})
}

// TestE2EObserveOffload: a body that moves to the tunnel plane is counted, and its bytes are in
// the request's line; the server's own counters are gauges.
func TestE2EObserveOffload(t *testing.T) {
	const n = 8 << 20
	be := newBackend(t, http.HandlerFunc(dataHandler))
	r := startObserved(t, be.Addr, accesslog.Text, lowWater)
	c := dialRaw(t, r.addr)
	c.Conn.(*net.TCPConn).SetReadBuffer(32 << 10)
	req := fmt.Sprintf("GET /data?n=%d&seed=7 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", n)
	c.send(t, req)
	time.Sleep(500 * time.Millisecond) // not reading: the body passes BodyHighWater and moves to the plane
	st := r.srv.Stats()
	fams := r.wantMetrics(t, map[string]float64{"wsgate_body_offloads_total": 1,
		"wsgate_fd_budget_limit": float64(st.FDsLimit), "wsgate_engine_restarts_total": 0})
	if used, _ := metricValue(fams, "wsgate_fd_budget_used", ""); used < 2 {
		t.Fatalf("fd budget used %v with a client and a backend connection in flight", used)
	}
	got := c.expectClosed(t, 60*time.Second)
	_, body, _ := bytes.Cut(got, []byte("\r\n\r\n"))
	if len(body) != n || sumOf(body) != genSum(7, n) {
		t.Fatalf("body: %d bytes, want %d (sha ok %v)", len(body), n, sumOf(body) == genSum(7, n))
	}
	l := r.logLines(t, "request", 1)
	target := fmt.Sprintf("/data?n=%d&seed=7", n)
	checkFields(t, "offloaded", l[target], map[string]string{"status": "200", "bytes_in": strconv.Itoa(len(req)),
		"bytes_out": strconv.Itoa(len(got))}, requestFields, time.Now().Add(-time.Minute))
}

// TestE2EObserveZeroAllocs: with metrics and the access log on, a proxied keep-alive GET still
// allocates nothing (the whole process is counted: client, backend and wsgate).
func TestE2EObserveZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	be := benchBackend(t)
	f, err := os.CreateTemp(t.TempDir(), "access.log")
	if err != nil {
		t.Fatal(err)
	}
	alog := accesslog.New(f, accesslog.Config{Format: accesslog.JSON, Logger: testLogger()})
	t.Cleanup(func() { alog.Close() })
	reg := metrics.NewRegistry()
	_, addr := startProxy(t, be, observe(reg, alog))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := &rawGetter{c: c, req: []byte("GET /bench HTTP/1.1\r\nHost: bench.example\r\n\r\n"), buf: make([]byte, 16<<10)}
	get := func() {
		if err := g.get(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		get()
	}
	if a := testing.AllocsPerRun(2000, get); a > 0 {
		t.Fatalf("%v allocs per proxied request with metrics and access log on", a)
	}
	fams := scrapeText(t, reg)
	if v, _ := metricValue(fams, "wsgate_http_requests_total", "route=/,code=2xx"); v != 2101 {
		t.Fatalf("2xx requests %v, want 2101", v)
	}
}

// scrapeText renders reg's handler in-process (no admin listener) and parses it.
func scrapeText(t testing.TB, reg *metrics.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// TestE2EObserveRoutes: with a route table, every count and line carries its route ([HOST]/PREFIX)
// and member (address): two routes to two backends, a path no route matches (404, the connection
// kept), a route whose only member refuses connections (502, counted against that member), an
// upgrade on a route with websocket = false (403); after a reload that moves a route to another
// backend, the new backend is labelled and the series of the route go on.
func TestE2EObserveRoutes(t *testing.T) {
	a, b := obsBackend(t), obsBackend(t)
	dead := freeAddr(t)
	no := false
	wsOff := mustSpec(t, "/ws-off/="+b.Addr)
	wsOff.WebSocket = &no
	specs := []route.Spec{mustSpec(t, "/a/="+a.Addr), mustSpec(t, "logs.example/b/="+b.Addr), mustSpec(t, "/dead/="+dead), wsOff}
	reg := metrics.NewRegistry()
	alog, out := newObsLog(t, accesslog.JSON)
	adm, err := admin.Start(admin.Config{Addr: "127.0.0.1:0", Metrics: reg.Handler(), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.Shutdown(t.Context()) })
	s, addr, t1 := startRouted(t, specs, observe(reg, alog))
	r := &obsRig{srv: s, addr: addr, reg: reg, adm: adm, out: out, format: accesslog.JSON}
	start := time.Now()

	c := dialRaw(t, addr)
	for i := 0; i < 2; i++ {
		if st, _ := c.get(t, "x", fmt.Sprintf("/a/ok?i=%d", i)); st != 200 {
			t.Fatalf("/a/: %d", st)
		}
	}
	for i := 0; i < 3; i++ {
		if st, _ := c.get(t, "logs.example", fmt.Sprintf("/b/nope?i=%d", i)); st != 404 {
			t.Fatalf("/b/ (the backend's 404): %d", st)
		}
	}
	if st, _ := c.get(t, "x", "/nothing"); st != 404 { // wsgate's own 404; the connection stays
		t.Fatalf("no route: %d", st)
	}
	if st, _ := c.get(t, "x", "/dead/x"); st != 502 {
		t.Fatalf("/dead/: %d", st)
	}
	_, _, head := upgrade(t, addr, "/ws-off/live")
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 403 ")) {
		t.Fatalf("upgrade on websocket = false: %q", head)
	}
	r.wantMetrics(t, map[string]float64{
		"wsgate_http_requests_total{route=/a/,code=2xx}":                      2,
		"wsgate_http_requests_total{route=logs.example/b/,code=4xx}":          3,
		"wsgate_http_requests_total{route=none,code=4xx}":                     1,
		"wsgate_http_requests_total{route=/dead/,code=5xx}":                   1,
		"wsgate_http_requests_total{route=/ws-off/,code=4xx}":                 1,
		"wsgate_websocket_upgrades_total{route=/ws-off/,result=refused}":      1,
		"wsgate_upstream_errors_total{backend=" + dead + ",reason=refused}":   1,
		"wsgate_upstream_connect_duration_seconds{backend=" + a.Addr + "}":    float64(a.Accepted.Load()),
		"wsgate_upstream_connect_duration_seconds{backend=" + b.Addr + "}":    float64(b.Accepted.Load()),
		"wsgate_upstream_connect_duration_seconds{backend=" + dead + "}":      0,
		"wsgate_upstream_errors_total{backend=" + a.Addr + ",reason=refused}": 0,
		"wsgate_http_request_duration_seconds{route=logs.example/b/}":         3,
	})
	lines := r.logLines(t, "request", 8)
	for target, want := range map[string]map[string]string{
		"/a/ok?i=1":    {"route": "/a/", "backend": a.Addr, "status": "200"},
		"/b/nope?i=2":  {"route": "logs.example/b/", "backend": b.Addr, "status": "404"},
		"/nothing":     {"route": "none", "backend": "", "status": "404", "answered": "no_route"},
		"/dead/x":      {"route": "/dead/", "backend": dead, "status": "502", "answered": "connect_refused"},
		"/ws-off/live": {"route": "/ws-off/", "backend": "", "status": "403", "answered": "websocket_refused"},
	} {
		order := requestFields
		if want["answered"] != "" {
			order = requestFieldsAnswer
		}
		checkFields(t, target, lines[target], want, order, start)
	}

	// A reload: /a/ now goes to b.
	specs2 := []route.Spec{mustSpec(t, "/a/="+b.Addr), mustSpec(t, "logs.example/b/="+b.Addr)}
	t2, err := route.NewTable(specs2, baseConfig("").RouteDefaults(), t1)
	if err != nil {
		t.Fatal(err)
	}
	t2.Start()
	t.Cleanup(t2.Close)
	s.SetRoutes(t2)
	c = dialRaw(t, addr) // the 502 closed the first one
	if st, _ := c.get(t, "x", "/a/ok?after=1"); st != 200 {
		t.Fatalf("/a/ after the reload: %d", st)
	}
	r.wantMetrics(t, map[string]float64{"wsgate_http_requests_total{route=/a/,code=2xx}": 3})
	l := r.logLines(t, "request", 9)["/a/ok?after=1"]
	checkFields(t, "after the reload", l, map[string]string{"route": "/a/", "backend": b.Addr}, requestFields, start)
}
