package loop_test

// Routes, pools and health through real sockets: wsgate in front of two or three backends with a
// route table (package route), every answer checked for the backend that gave it.

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/route"
)

// ---------------------------------------------------------------------------------------------
// harness

func mustSpec(t testing.TB, s string) route.Spec {
	t.Helper()
	sp, err := route.ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// startRouted starts wsgate serving specs (built into a table with the Config's RouteDefaults,
// probes started) and returns the server, its address and the table.
func startRouted(t testing.TB, specs []route.Spec, opts ...func(*loop.Config)) (*loop.Server, string, *route.Table) {
	t.Helper()
	cfg := baseConfig("")
	for _, o := range opts {
		o(&cfg)
	}
	table, err := route.NewTable(specs, cfg.RouteDefaults(), nil)
	if err != nil {
		t.Fatalf("route table: %v", err)
	}
	table.Start()
	t.Cleanup(table.Close) // registered before the proxy's Stop: runs after it
	s, addr := startProxy(t, "", append(opts, func(c *loop.Config) { c.Routes = table })...)
	return s, addr, table
}

// nameBackend answers every request with "<name> <request-target> <Host>" and X-Backend: name;
// /redirect?loc=L answers 302 with Location L.
func nameBackend(t testing.TB, name string) *backend {
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		if loc := r.URL.Query().Get("loc"); loc != "" && strings.HasSuffix(r.URL.Path, "/redirect") {
			w.Header().Set("Location", loc)
			w.Header().Set("Content-Location", loc)
			w.WriteHeader(http.StatusFound)
			return
		}
		fmt.Fprintf(w, "%s %s %s", name, r.RequestURI, r.Host)
	}))
}

// get sends one GET on c with host and target and returns status and body.
func (c *rawConn) get(t testing.TB, host, target string) (int, string) {
	t.Helper()
	c.send(t, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	resp, body := c.fullResponse(t, "GET")
	return resp.StatusCode, string(body)
}

// poolBackend is a backend process stand-in that can die: it serves keep-alive GETs (body: its
// name), /ready per its readiness, and WebSocket upgrades (101, then its name and a newline, then
// an echo of everything); kill closes its listener and every connection, like a crash.
type poolBackend struct {
	name     string
	Addr     string
	ln       net.Listener
	Requests atomic.Int64 // GETs answered (not /ready)
	Probes   atomic.Int64 // /ready answered
	Upgrades atomic.Int64 // tunnels accepted in all
	Open     atomic.Int64 // tunnels open now
	Accepted atomic.Int64
	down     atomic.Bool // /ready answers 503
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func newPoolBackend(t testing.TB, name string) *poolBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &poolBackend{name: name, Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.Accepted.Add(1)
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.serve(c)
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		b.kill()
		done := make(chan struct{})
		go func() { b.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("pool backend %s: goroutines still running", name)
		}
	})
	return b
}

func (b *poolBackend) serve(c net.Conn) {
	br := bufio.NewReaderSize(c, 16<<10)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
			if _, err := io.WriteString(c, response101(req.Header.Get("Sec-WebSocket-Key"))+b.name+"\n"); err != nil {
				return
			}
			b.Upgrades.Add(1)
			b.Open.Add(1)
			defer b.Open.Add(-1)
			_, _ = io.Copy(c, br) // echo until the tunnel ends
			return
		}
		body, status := b.name, "200 OK"
		if req.URL.Path == "/ready" {
			b.Probes.Add(1)
			if b.down.Load() {
				status = "503 Service Unavailable"
			}
		} else {
			b.Requests.Add(1)
		}
		if _, err := io.WriteString(c, "HTTP/1.1 "+status+"\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body); err != nil {
			return
		}
	}
}

// connCount is the number of connections the backend holds now.
func (b *poolBackend) connCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// kill closes the listener and every connection (tunnels included): the backend process died.
func (b *poolBackend) kill() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
}

// openPoolTunnel upgrades through wsgate on target and returns the client end and the name of
// the backend that took it.
func openPoolTunnel(t testing.TB, addr, target string) (*rawConn, string) {
	t.Helper()
	c := dialRaw(t, addr)
	key := wsKey()
	c.send(t, upgradeRequest("grafana.example", target, key, ""))
	resp := c.response(t, "GET")
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		t.Fatalf("upgrade on %s: status %d, accept %q", target, resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	name, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatalf("upgrade on %s: reading the backend's name: %v", target, err)
	}
	return c, strings.TrimSuffix(name, "\n")
}

// echoOK sends n bytes through a tunnel and checks they come back.
func echoOK(t testing.TB, c *rawConn, seed uint64, n int) {
	t.Helper()
	data := genBytes(seed, n)
	c.send(t, string(data))
	got := make([]byte, n)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c.br, got); err != nil {
		t.Fatalf("tunnel echo: %v", err)
	}
	if string(got) != string(data) {
		t.Fatal("tunnel echo: bytes differ")
	}
}

// ---------------------------------------------------------------------------------------------
// matching

// TestRoutesPathAndHost: path and host routing, longest prefix, the /loki-without-slash rule,
// wildcard hosts, case and port in Host, all on one keep-alive client connection: each request
// reaches exactly the backend its route names.
func TestRoutesPathAndHost(t *testing.T) {
	t.Parallel()
	a, b, c := nameBackend(t, "A"), nameBackend(t, "B"), nameBackend(t, "C")
	specs := []route.Spec{
		mustSpec(t, "/="+a.Addr),
		mustSpec(t, "/loki/="+b.Addr),
		mustSpec(t, "/loki/api/v1/push="+c.Addr),
		mustSpec(t, "logs.example.com/="+c.Addr),
		mustSpec(t, "*.example.com/x/="+b.Addr),
	}
	_, addr, _ := startRouted(t, specs)
	cn := dialRaw(t, addr)
	cases := []struct{ host, target, want string }{
		{"grafana.local", "/api/live/ws", "A"},
		{"grafana.local", "/loki/api/v1/query_range?query=%7Bjob%3D%22x%22%7D", "B"},
		{"grafana.local", "/loki/api/v1/push", "C"},         // longest prefix
		{"grafana.local", "/loki/api/v1/pushx", "B"},        // segment boundary: not /loki/api/v1/push
		{"grafana.local", "/loki", "A"},                     // "/loki/" matches only below it
		{"LOGS.Example.Com:8080", "/loki/api/v1/tail", "C"}, // a host route beats the longer host-less prefix
		{"logs.example.com.", "/", "C"},
		{"a.example.com", "/x/y", "B"},   // one label for *
		{"a.b.example.com", "/x/y", "A"}, // two labels: host-less
		{"example.com", "/x/y", "A"},
		{"a.example.com", "/y", "A"}, // the wildcard host's routes do not match: falls through
	}
	for _, k := range cases {
		status, body := cn.get(t, k.host, k.target)
		if status != 200 || !strings.HasPrefix(body, k.want+" "+k.target+" ") {
			t.Errorf("Host %s %s: status %d body %q, want backend %s with the target unchanged", k.host, k.target, status, body, k.want)
		}
	}
	// Absolute-form targets route by their authority.
	cn.send(t, "GET http://logs.example.com/z HTTP/1.1\r\nHost: logs.example.com\r\n\r\n")
	if resp, body := cn.fullResponse(t, "GET"); resp.StatusCode != 200 || !strings.HasPrefix(string(body), "C /z ") {
		t.Errorf("absolute-form: %d %q", resp.StatusCode, body)
	}
	cn.expectQuiet(t, 50*time.Millisecond)
	if a.Requests.Load() != 5 || b.Requests.Load() != 3 || c.Requests.Load() != 4 {
		t.Errorf("requests per backend A %d B %d C %d, want 5 3 4", a.Requests.Load(), b.Requests.Load(), c.Requests.Load())
	}
}

// TestRoutesNotFound: a request no route matches gets wsgate's 404 and nothing reaches any
// backend; the connection stays usable for a request without a body (HEAD gets no body), and
// closes after one with a body or an upgrade.
func TestRoutesNotFound(t *testing.T) {
	t.Parallel()
	a, b := nameBackend(t, "A"), nameBackend(t, "B")
	_, addr, _ := startRouted(t, []route.Spec{mustSpec(t, "/api/="+a.Addr), mustSpec(t, "grafana.example.com/="+b.Addr)})

	c := dialRaw(t, addr)
	status, body := c.get(t, "other.example.com", "/dashboards")
	if status != 404 || !strings.Contains(body, "no route") {
		t.Fatalf("no route: %d %q", status, body)
	}
	c.send(t, "HEAD /x HTTP/1.1\r\nHost: other\r\n\r\n")
	if resp, body := c.fullResponse(t, "HEAD"); resp.StatusCode != 404 || len(body) != 0 || resp.ContentLength <= 0 {
		t.Fatalf("HEAD: %d, %d body bytes, Content-Length %d", resp.StatusCode, len(body), resp.ContentLength)
	}
	// The same connection goes on: the next request matches.
	if status, body := c.get(t, "other.example.com", "/api/x"); status != 200 || !strings.HasPrefix(body, "A ") {
		t.Fatalf("after the 404: %d %q", status, body)
	}
	if status, body := c.get(t, "GRAFANA.example.com", "/d/1"); status != 200 || !strings.HasPrefix(body, "B ") {
		t.Fatalf("host route: %d %q", status, body)
	}
	c.expectQuiet(t, 50*time.Millisecond)

	// With a body: 404 and close, the body never read as a request.
	c2 := dialRaw(t, addr)
	c2.send(t, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := c2.fullResponse(t, "POST"); resp.StatusCode != 404 || !resp.Close {
		t.Fatalf("POST without route: %d close %v", resp.StatusCode, resp.Close)
	}
	c2.expectClosed(t, 5*time.Second)
	// An upgrade without a route: 404 and close.
	c3 := dialRaw(t, addr)
	c3.send(t, upgradeRequest("x", "/live", wsKey(), ""))
	if resp, _ := c3.fullResponse(t, "GET"); resp.StatusCode != 404 || !resp.Close {
		t.Fatalf("upgrade without route: %d close %v", resp.StatusCode, resp.Close)
	}
	c3.expectClosed(t, 5*time.Second)
	if a.Requests.Load() != 1 || b.Requests.Load() != 1 || a.count("/api/smuggled") != 0 {
		t.Fatalf("backends saw A %d B %d requests (smuggled %d), want 1 and 1", a.Requests.Load(), b.Requests.Load(), a.count("/api/smuggled"))
	}
	if b.Accepted.Load() != 1 || a.Accepted.Load() != 1 {
		t.Fatalf("backend connections A %d B %d, want 1 each", a.Accepted.Load(), b.Accepted.Load())
	}
}

// ---------------------------------------------------------------------------------------------
// per-route options

// TestRoutesStripPrefix: strip_prefix removes the matched prefix (the query kept), and Location /
// Content-Location answers get it back, absolute URLs naming the member and absolute paths alike.
// preserve_host off sends the member's address as Host, on one route only.
func TestRoutesStripPrefix(t *testing.T) {
	t.Parallel()
	a, b := nameBackend(t, "A"), nameBackend(t, "B")
	strip := mustSpec(t, "/grafana/="+a.Addr)
	strip.StripPrefix = true
	bare := mustSpec(t, "/p="+b.Addr)
	bare.StripPrefix = true
	off := false
	bare.PreserveHost = &off
	_, addr, _ := startRouted(t, []route.Spec{strip, bare, mustSpec(t, "/="+b.Addr)})
	c := dialRaw(t, addr)
	for _, k := range []struct{ target, want string }{
		{"/grafana/api/dashboards?q=1", "A /api/dashboards?q=1 front.example"},
		{"/grafana/", "A / front.example"},
		{"/grafana/?orgId=1", "A /?orgId=1 front.example"},
		{"/p", "B / " + b.Addr},
		{"/p?x=1", "B /?x=1 " + b.Addr},
		{"/p/x", "B /x " + b.Addr},
		{"/px", "B /px front.example"}, // the "/" route, unstripped, Host preserved
	} {
		if status, body := c.get(t, "front.example", k.target); status != 200 || body != k.want {
			t.Errorf("%s: %d %q, want %q", k.target, status, body, k.want)
		}
	}
	for _, k := range []struct{ loc, want string }{
		{"http://" + a.Addr + "/login?x=1", "http://front.example/grafana/login?x=1"},
		{"http://" + a.Addr, "http://front.example/grafana/"},
		{"/login", "/grafana/login"},
		{"//cdn.example/x", "//cdn.example/x"},
		{"https://elsewhere.example/x", "https://elsewhere.example/x"},
	} {
		c.send(t, "GET /grafana/redirect?loc="+strings.ReplaceAll(k.loc, "&", "%26")+" HTTP/1.1\r\nHost: front.example\r\n\r\n")
		resp, _ := c.fullResponse(t, "GET")
		if resp.StatusCode != 302 || resp.Header.Get("Location") != k.want || resp.Header.Get("Content-Location") != k.want {
			t.Errorf("Location %q: %d, Location %q Content-Location %q, want %q", k.loc, resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Content-Location"), k.want)
		}
	}
	// Without strip_prefix nothing is put back.
	c.send(t, "GET /redirect?loc=/login HTTP/1.1\r\nHost: front.example\r\n\r\n")
	if resp, _ := c.fullResponse(t, "GET"); resp.Header.Get("Location") != "/login" {
		t.Errorf("unstripped route: Location %q", resp.Header.Get("Location"))
	}
}

// TestRoutesTimeouts: response_timeout, header_timeout (for the next head on the connection) and
// tunnel_idle_timeout come from the route.
func TestRoutesTimeouts(t *testing.T) {
	t.Parallel()
	slow := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait := time.Duration(0)
		switch r.URL.Path {
		case "/slow/x":
			wait = 8 * time.Second // longer than the route's timeout allows, shorter than the global
		case "/x":
			wait = time.Second
		}
		select {
		case <-time.After(wait):
		case <-r.Context().Done(): // wsgate closed the conn after its 504
			return
		}
		io.WriteString(w, "ok")
	}))
	tb := newPoolBackend(t, "T")
	sSlow := mustSpec(t, "/slow/="+slow.Addr)
	short := 300 * time.Millisecond
	sSlow.ResponseTimeout = &short
	sHead := mustSpec(t, "/h/="+slow.Addr)
	sHead.HeaderTimeout = &short
	sIdle := mustSpec(t, "/idle/="+tb.Addr)
	sIdle.TunnelIdleTimeout = &short
	// Global header and response timeouts of 20 s: a 504 or 408 well before that comes from the
	// route (generous bounds: the box may be loaded).
	_, addr, _ := startRouted(t, []route.Spec{mustSpec(t, "/="+slow.Addr), sSlow, sHead, sIdle, mustSpec(t, "/ws/="+tb.Addr)},
		func(c *loop.Config) { c.HeaderTimeout, c.ResponseTimeout = 20*time.Second, 20*time.Second })

	// response_timeout: 504 well before the backend's 8 s answer and the global 20 s.
	c := dialRaw(t, addr)
	start := time.Now()
	if status, _ := c.get(t, "h", "/slow/x"); status != 504 {
		t.Fatalf("/slow/x: %d, want 504 from the route's 300ms response timeout", status)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("504 after %v: the route's response timeout was not used", d)
	}
	// The global one lets the same backend answer on another route.
	if status, body := dialRaw(t, addr).get(t, "h", "/x"); status != 200 || body != "ok" {
		t.Fatalf("/x: %d %q", status, body)
	}

	// header_timeout: after an exchange on /h/, a stalled head gets 408 fast; after one on /,
	// the global 20 s applies.
	hc := dialRaw(t, addr)
	if status, _ := hc.get(t, "h", "/h/a"); status != 200 {
		t.Fatal(status)
	}
	gc := dialRaw(t, addr)
	if status, _ := gc.get(t, "h", "/a"); status != 200 {
		t.Fatal(status)
	}
	hc.send(t, "GET /h/b HTTP/1.1\r\n")
	gc.send(t, "GET /b HTTP/1.1\r\n")
	start = time.Now()
	if resp, _ := hc.fullResponse(t, "GET"); resp.StatusCode != 408 {
		t.Fatalf("stalled head after /h/: %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("408 after %v: the route's header timeout was not used", d)
	}
	gc.send(t, "Host: h\r\n\r\n") // still alive: the global timeout is 20 s
	if resp, _ := gc.fullResponse(t, "GET"); resp.StatusCode != 200 {
		t.Fatalf("head finished within the global timeout: %d", resp.StatusCode)
	}

	// tunnel_idle_timeout: the quiet /idle/ tunnel closes, the /ws/ one (never) stays.
	quiet, _ := openPoolTunnel(t, addr, "/idle/tail")
	keep, _ := openPoolTunnel(t, addr, "/ws/tail")
	quiet.expectClosed(t, 5*time.Second)
	echoOK(t, keep, 1, 1000)
}

// ---------------------------------------------------------------------------------------------
// WebSockets on routes

// TestRoutesWebSocketTwoRoutes: a tunnel on a routed path and one on / at the same time, each to
// its own backend, bytes echoed on both.
func TestRoutesWebSocketTwoRoutes(t *testing.T) {
	t.Parallel()
	g, l := newPoolBackend(t, "grafana"), newPoolBackend(t, "loki")
	s, addr, _ := startRouted(t, []route.Spec{mustSpec(t, "/="+g.Addr), mustSpec(t, "/loki/="+l.Addr)})
	live, gotG := openPoolTunnel(t, addr, "/api/live/ws")
	tail, gotL := openPoolTunnel(t, addr, "/loki/api/v1/tail?query=%7Bjob%3D%22x%22%7D")
	if gotG != "grafana" || gotL != "loki" {
		t.Fatalf("tunnels went to %q and %q, want grafana and loki", gotG, gotL)
	}
	for i := 0; i < 5; i++ {
		echoOK(t, live, uint64(i), 4096)
		echoOK(t, tail, uint64(100+i), 4096)
	}
	if st := s.Stats(); st.Tunnels != 2 {
		t.Fatalf("%d tunnels open, want 2", st.Tunnels)
	}
}

// TestRoutesWebSocketFalse: websocket = false refuses upgrades on that route with 403 and close,
// nothing forwarded; ordinary requests on it and upgrades elsewhere go through.
func TestRoutesWebSocketFalse(t *testing.T) {
	t.Parallel()
	g, api := newPoolBackend(t, "grafana"), newPoolBackend(t, "api")
	no := false
	sp := mustSpec(t, "/api/="+api.Addr)
	sp.WebSocket = &no
	_, addr, _ := startRouted(t, []route.Spec{mustSpec(t, "/="+g.Addr), sp})
	c := dialRaw(t, addr)
	c.send(t, upgradeRequest("x", "/api/live/ws", wsKey(), ""))
	resp, body := c.fullResponse(t, "GET")
	if resp.StatusCode != 403 || !resp.Close || !strings.Contains(string(body), "not allowed") {
		t.Fatalf("upgrade on a websocket = false route: %d close %v %q", resp.StatusCode, resp.Close, body)
	}
	c.expectClosed(t, 5*time.Second)
	if api.Accepted.Load() != 0 {
		t.Fatalf("the refused upgrade reached the backend (%d connections)", api.Accepted.Load())
	}
	if status, body := dialRaw(t, addr).get(t, "x", "/api/health"); status != 200 || body != "api" {
		t.Fatalf("GET on the route: %d %q", status, body)
	}
	if _, name := openPoolTunnel(t, addr, "/api2/live/ws"); name != "grafana" {
		t.Fatalf("upgrade on / went to %q", name)
	}
}

// ---------------------------------------------------------------------------------------------
// pools: balancing, failover, health

// TestRoutesLeastConnTunnels: 1,500 tunnels opened through wsgate from four clients at once (a
// random tenth closed as they go) end within 5% of the mean on three members, and the members'
// counts match the tunnels the backends hold; once every tunnel is closed the counts are zero
// (every Acquire released exactly once).
func TestRoutesLeastConnTunnels(t *testing.T) {
	t.Parallel()
	if raiseNofile(t) < 8000 {
		t.Skip("needs RLIMIT_NOFILE >= 8000 (1,500 tunnels hold 6,000 fds in this process)")
	}
	bs := []*poolBackend{newPoolBackend(t, "m0"), newPoolBackend(t, "m1"), newPoolBackend(t, "m2")}
	_, addr, table := startRouted(t, []route.Spec{mustSpec(t, "/="+bs[0].Addr+","+bs[1].Addr+","+bs[2].Addr)})
	const total, workers = 1500, 4
	var mu sync.Mutex
	var open []*rawConn
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < total/workers; i++ {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				rc := &rawConn{Conn: c, br: bufio.NewReaderSize(c, 512)}
				key := wsKey()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.WriteString(c, upgradeRequest("x", "/live", key, ""))
				resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
				if err != nil || resp.StatusCode != 101 {
					failed.Store(fmt.Sprintf("upgrade %d: %v %v", i, err, resp))
					c.Close()
					return
				}
				if _, err := rc.br.ReadString('\n'); err != nil {
					failed.Store(err.Error())
					c.Close()
					return
				}
				c.SetDeadline(time.Time{})
				if r.IntN(10) == 0 {
					c.Close() // a tenth close as they go
					continue
				}
				mu.Lock()
				open = append(open, rc)
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	if f := failed.Load(); f != nil {
		t.Fatalf("opening tunnels: %v", f)
	}
	// Closed tunnels end at the backends (and in the members' counts) asynchronously.
	members := table.Members()
	settled := waitFor(20*time.Second, func() bool {
		sum := int64(0)
		for i, b := range bs {
			_, tun := members[i].Load()
			if tun != b.Open.Load() {
				return false
			}
			sum += tun
		}
		return sum == int64(len(open))
	})
	counts := make([]int64, 3)
	for i, b := range bs {
		counts[i] = b.Open.Load()
	}
	if !settled {
		var loads []string
		for _, m := range members {
			r, tn := m.Load()
			loads = append(loads, fmt.Sprintf("%s: %d requests %d tunnels", m.Addr(), r, tn))
		}
		t.Fatalf("backends hold %v tunnels (%d open at the clients); members count %v", counts, len(open), loads)
	}
	mean := float64(len(open)) / 3
	t.Logf("%d tunnels open through wsgate: %v per member (mean %.1f)", len(open), counts, mean)
	for i, n := range counts {
		if d := float64(n) - mean; d > 0.05*mean || d < -0.05*mean {
			t.Errorf("member %d holds %d tunnels, more than 5%% from the mean %.1f", i, n, mean)
		}
	}
	for _, c := range open {
		c.Close()
	}
	if !waitFor(20*time.Second, func() bool {
		for _, m := range members {
			if r, tn := m.Load(); r != 0 || tn != 0 {
				return false
			}
		}
		return true
	}) {
		for _, m := range members {
			r, tn := m.Load()
			t.Errorf("after every tunnel closed, %s counts %d requests and %d tunnels", m.Addr(), r, tn)
		}
	}
}

// TestRoutesClientHash: a client-hash pool keeps each client IP on one member across
// connections, and spreads different clients over the members.
func TestRoutesClientHash(t *testing.T) {
	t.Parallel()
	bs := []*poolBackend{newPoolBackend(t, "m0"), newPoolBackend(t, "m1"), newPoolBackend(t, "m2")}
	sp := mustSpec(t, "/="+bs[0].Addr+","+bs[1].Addr+","+bs[2].Addr)
	ch := route.ClientHash
	sp.Balance = &ch
	_, addr, _ := startRouted(t, []route.Spec{sp})
	seen := map[string]int{}
	for ip := 2; ip < 26; ip++ {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(ip))}
		first := ""
		for k := 0; k < 4; k++ { // a new connection each time
			c, err := (&net.Dialer{LocalAddr: src, Timeout: 3 * time.Second}).Dial("tcp", addr)
			if err != nil {
				t.Fatalf("dial from %v: %v", src, err)
			}
			rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			status, body := rc.get(t, "x", "/q")
			c.Close()
			if status != 200 {
				t.Fatalf("from %v: %d", src, status)
			}
			if first == "" {
				first = body
				seen[body]++
			} else if body != first {
				t.Fatalf("client 127.0.0.%d moved from %s to %s", ip, first, body)
			}
		}
	}
	if len(seen) < 2 {
		t.Fatalf("24 clients all landed on %v: client-hash should spread them", seen)
	}
	t.Logf("24 clients, each stable over 4 connections: %v", seen)
}

// TestRoutesFailover: a pool member dies while requests and tunnels run through it. No
// idempotent request fails (in flight on its conns: resent on the other member; new ones: the
// refused dial is retried on the other member and passive health takes it out), its open tunnels
// close, the other member's stay, and new tunnels go to the live member.
func TestRoutesFailover(t *testing.T) {
	t.Parallel()
	a, b := newPoolBackend(t, "A"), newPoolBackend(t, "B")
	s, addr, table := startRouted(t, []route.Spec{mustSpec(t, "/="+a.Addr+","+b.Addr)})
	var onA, onB []*rawConn
	for i := 0; i < 10; i++ {
		c, name := openPoolTunnel(t, addr, "/api/live/ws")
		if name == "A" {
			onA = append(onA, c)
		} else {
			onB = append(onB, c)
		}
	}
	if len(onA) != 5 || len(onB) != 5 {
		t.Fatalf("least-conn put %d tunnels on A and %d on B, want 5 and 5", len(onA), len(onB))
	}
	// Four clients send GETs on keep-alive connections all along.
	var stop atomic.Bool
	var ok, bad atomic.Int64
	var badMsg atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *rawConn
			for !stop.Load() {
				if c == nil {
					nc, err := net.DialTimeout("tcp", addr, 3*time.Second)
					if err != nil {
						bad.Add(1)
						badMsg.Store(err.Error())
						return
					}
					c = &rawConn{Conn: nc, br: bufio.NewReader(nc)}
				}
				c.SetDeadline(time.Now().Add(15 * time.Second))
				io.WriteString(c, "GET /api/q HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
				}
				if err != nil || resp.StatusCode != 200 {
					bad.Add(1)
					badMsg.Store(fmt.Sprintf("%v %v", err, resp))
					c.Close()
					c = nil
					continue
				}
				ok.Add(1)
				if resp.Close {
					c.Close()
					c = nil
				}
			}
			if c != nil {
				c.Close()
			}
		}()
	}
	waitFor(10*time.Second, func() bool { return a.Requests.Load() > 50 && b.Requests.Load() > 50 })
	a.kill()
	before := ok.Load()
	waitFor(20*time.Second, func() bool { return ok.Load() > before+300 })
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d requests failed while member A died (%d succeeded): %v", bad.Load(), ok.Load(), badMsg.Load())
	}
	if ok.Load() <= before+300 {
		t.Fatalf("only %d requests after A died", ok.Load()-before)
	}
	for _, c := range onA {
		c.expectClosed(t, 10*time.Second)
	}
	for i, c := range onB {
		echoOK(t, c, uint64(i), 1000)
	}
	for i := 0; i < 6; i++ {
		if _, name := openPoolTunnel(t, addr, "/api/live/ws"); name != "B" {
			t.Fatalf("new tunnel %d went to %s after A died", i, name)
		}
	}
	h := table.Members()[0].Health()
	t.Logf("%d requests ok, %d after A died; retries %d; A: %d consecutive failures, down %v",
		ok.Load(), ok.Load()-before, s.Stats().Retries, h.Fails, h.DownUntil > 0)
	if s.Stats().Retries == 0 {
		t.Fatal("no request was retried: the failover was not exercised")
	}
}

// TestRoutesNoHealthyMember: with every member out (passive back-off after refused connects),
// the pool answers 502 at once, without dialling.
func TestRoutesNoHealthyMember(t *testing.T) {
	t.Parallel()
	dead := freeAddr(t) // nothing listens
	_, addr, table := startRouted(t, []route.Spec{mustSpec(t, "/="+dead)})
	for i := 0; i < 3; i++ { // three refused connects take it out
		if status, _ := dialRaw(t, addr).get(t, "x", "/"); status != 502 {
			t.Fatalf("refused dial %d: %d", i, status)
		}
	}
	m := table.Members()[0]
	if m.Usable(time.Now().UnixNano()) {
		t.Fatalf("member still usable after three refused connects: %+v", m.Health())
	}
	start := time.Now()
	if status, body := dialRaw(t, addr).get(t, "x", "/"); status != 502 || !strings.Contains(body, "Bad Gateway") {
		t.Fatalf("no usable member: %d %q", status, body)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("502 took %v", d)
	}
	if r, tn := m.Load(); r != 0 || tn != 0 {
		t.Fatalf("member counts %d requests %d tunnels after the failures", r, tn)
	}
}

// TestRoutesActiveHealth: active probes take a member that answers 503 on its health path out
// (nothing more reaches it) and bring it back when it answers 200 again.
func TestRoutesActiveHealth(t *testing.T) {
	t.Parallel()
	a, b := newPoolBackend(t, "A"), newPoolBackend(t, "B")
	sp := mustSpec(t, "/="+a.Addr+","+b.Addr)
	rr := route.RoundRobin
	sp.Balance = &rr
	hp, hi := "/ready", 50*time.Millisecond
	sp.HealthPath, sp.HealthInterval = &hp, &hi
	_, addr, table := startRouted(t, []route.Spec{sp})
	ma := table.Members()[0]
	c := dialRaw(t, addr)
	names := func(n int) map[string]int {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			status, body := c.get(t, "x", "/q")
			if status != 200 {
				t.Fatalf("request %d: %d", i, status)
			}
			got[body]++
		}
		return got
	}
	if got := names(10); got["A"] == 0 || got["B"] == 0 {
		t.Fatalf("round-robin over two healthy members: %v", got)
	}
	a.down.Store(true)
	if !waitFor(5*time.Second, func() bool { return ma.Health().ActiveDown }) {
		t.Fatal("member A still up 5s after its health path started answering 503")
	}
	before := a.Requests.Load()
	if got := names(20); got["A"] != 0 || a.Requests.Load() != before {
		t.Fatalf("requests reached A while it was out: %v", got)
	}
	a.down.Store(false)
	if !waitFor(5*time.Second, func() bool { return !ma.Health().ActiveDown }) {
		t.Fatal("member A not back 5s after its health path answered 200 again")
	}
	if got := names(10); got["A"] == 0 {
		t.Fatalf("A back, yet no request reached it: %v", got)
	}
	// Both members keep being probed (B too, which never failed). The test itself can finish
	// within four intervals (A needs two failed and two good probes), so wait for B's count
	// rather than read it at once.
	if !waitFor(5*time.Second, func() bool { return a.Probes.Load() >= 4 && b.Probes.Load() >= 4 }) {
		t.Fatalf("probes after 5s: A %d B %d", a.Probes.Load(), b.Probes.Load())
	}
}

// TestRoutesReloadDropsMember: after SetRoutes with a table that no longer has a member, new
// exchanges use the new table and the sweep closes the idle connections to the dropped member.
func TestRoutesReloadDropsMember(t *testing.T) {
	t.Parallel()
	a, b := newPoolBackend(t, "A"), newPoolBackend(t, "B")
	cfg := baseConfig("")
	t1, err := route.NewTable([]route.Spec{mustSpec(t, "/="+a.Addr)}, cfg.RouteDefaults(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t1.Start()
	t.Cleanup(t1.Close)
	s, addr := startProxy(t, "", func(c *loop.Config) { c.Routes = t1 })
	c := dialRaw(t, addr)
	if _, body := c.get(t, "x", "/"); body != "A" {
		t.Fatal(body)
	}
	if !waitFor(2*time.Second, func() bool { return s.Stats().BackendIdle == 1 }) {
		t.Fatal("no idle conn to A")
	}
	// A reload: / now goes to B; the sweep closes the idle conn to A, which the table dropped.
	t2, err := route.NewTable([]route.Spec{mustSpec(t, "/="+b.Addr)}, cfg.RouteDefaults(), t1)
	if err != nil {
		t.Fatal(err)
	}
	t2.Start()
	t.Cleanup(t2.Close)
	s.SetRoutes(t2)
	if _, body := c.get(t, "x", "/"); body != "B" {
		t.Fatalf("after the reload: %q", body)
	}
	if !waitFor(5*time.Second, func() bool { return a.connCount() == 0 }) {
		t.Fatal("the idle conn to the dropped member is still open")
	}
}
