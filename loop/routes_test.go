package loop

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"

	"github.com/wsgate/wsgate/fdbudget"
	"github.com/wsgate/wsgate/route"
)

func routeFor(t testing.TB, spec string, strip bool) *route.Route {
	t.Helper()
	sp, err := route.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	sp.StripPrefix = strip
	tb, err := route.NewTable([]route.Spec{sp}, route.Defaults{PreserveHost: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tb.Routes()[0]
}

// The routed rewrites allocate nothing: a stripped target, the member's address as Host, and a
// Location put back under the stripped prefix.
func TestRoutedRewriteAllocs(t *testing.T) {
	r := routeFor(t, "/loki/=127.0.0.1:3100", true)
	req := parseReq(t, "GET /loki/api/v1/query_range?query=x HTTP/1.1\r\nHost: grafana.example\r\nAccept: */*\r\n\r\n")
	resp := parseResp(t, "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:3100/login?x=1\r\nContent-Location: /a\r\nContent-Length: 0\r\n\r\n")
	ro := reqHeadOpts{backendHost: []byte("127.0.0.1:3100"), clientIP: []byte("10.0.0.1"), forwarded: true, route: r}
	so := respHeadOpts{backendHost: []byte("127.0.0.1:3100"), clientHost: []byte("grafana.example"), stripped: strippedPrefix(r)}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(200, func() {
		buf = appendRequestHead(buf[:0], req, &ro)
		buf = appendResponseHead(buf[:0], resp, &so)
	}); n != 0 {
		t.Fatalf("routed head rewrite allocates %v times per run, want 0", n)
	}
	out := string(appendRequestHead(nil, req, &ro))
	if !strings.HasPrefix(out, "GET /api/v1/query_range?query=x HTTP/1.1\r\nHost: 127.0.0.1:3100\r\n") || ro.backendHostAt != len("GET /api/v1/query_range?query=x HTTP/1.1\r\nHost: ") {
		t.Fatalf("request head %q, host at %d", out, ro.backendHostAt)
	}
	out = string(appendResponseHead(nil, resp, &so))
	if !strings.Contains(out, "Location: http://grafana.example/loki/login?x=1\r\n") || !strings.Contains(out, "Content-Location: /loki/a\r\n") {
		t.Fatalf("response head %q", out)
	}
}

func TestAppendUnstripped(t *testing.T) {
	for _, c := range []struct{ prefix, rest, want string }{
		{"/loki/", "/x", "/loki/x"},
		{"/loki/", "/", "/loki/"},
		{"/loki/", "", "/loki/"},
		{"/loki/", "?q=1", "/loki/?q=1"},
		{"/loki/", "#f", "/loki/#f"},
		{"/loki", "/x", "/loki/x"},
		{"/loki", "", "/loki"},
		{"/loki", "?q", "/loki?q"},
	} {
		if got := string(appendUnstripped(nil, []byte(c.rest), c.prefix)); got != c.want {
			t.Errorf("prefix %q rest %q: %q, want %q", c.prefix, c.rest, got, c.want)
		}
	}
}

// switchMember moves the count and rewrites the Host the forwarded head names.
func TestSwitchMemberRewritesHost(t *testing.T) {
	sm := newSeam(t)
	tb, err := route.NewTable([]route.Spec{{Prefix: "/", Backends: []string{"127.0.0.1:3100", "10.1.2.3:31000"}}}, route.Defaults{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := tb.Routes()[0]
	m1, m2 := r.Pool.Members()[0], r.Pool.Members()[1]
	cc, _ := sm.client(0)
	req := parseReq(t, "GET /x HTTP/1.0\r\nAccept: */*\r\n\r\n") // no Host: the member's goes
	cc.beginExchange(req, false, r, m1)
	cc.takeMember(m1)
	if !strings.Contains(string(cc.ex.fwd.B), "Host: 127.0.0.1:3100\r\n") {
		t.Fatalf("head %q", cc.ex.fwd.B)
	}
	cc.switchMember(m2)
	if got := string(cc.ex.fwd.B); !strings.Contains(got, "Host: 10.1.2.3:31000\r\nAccept: */*\r\nX-Forwarded-For") || !strings.HasSuffix(got, "\r\n\r\n") {
		t.Fatalf("after the switch: %q", got)
	}
	if r1, _ := m1.Load(); r1 != 0 {
		t.Fatalf("old member still counts %d requests", r1)
	}
	if r2, _ := m2.Load(); r2 != 1 {
		t.Fatalf("new member counts %d requests", r2)
	}
	cc.switchMember(m1) // back to the shorter address
	if got := string(cc.ex.fwd.B); !strings.Contains(got, "Host: 127.0.0.1:3100\r\nAccept: */*\r\nX-Forwarded-For") {
		t.Fatalf("after the switch back: %q", got)
	}
	cc.releaseMember()
	cc.releaseMember() // exactly once
	if r1, _ := m1.Load(); r1 != 0 {
		t.Fatalf("member counts %d requests after the release", r1)
	}
	bytebufferpool.Put(cc.ex.fwd)
	cc.ex.fwd = nil
}

// enrollGivesUp is an event loop whose Enroll answers with a channel closed without a result, as
// gnet's does when its enroll worker recovers a panic; Execute runs the job at once.
type enrollGivesUp struct{ gnet.EventLoop }

func (enrollGivesUp) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	ch := make(chan gnet.RegisteredResult)
	close(ch)
	return ch, nil
}

func (enrollGivesUp) Execute(ctx context.Context, r gnet.Runnable) error { return r.Run(ctx) }

// A dial whose Enroll ended without a result is a failed dial (the exchange is answered at once),
// not a success that leaves it waiting for a response that cannot come; it is not the backend's
// fault, so passive health does not count it.
func TestEnrollWithoutResultIsAFailedDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sm := newSeam(t, func(c *Config) { c.Backend = ln.Addr().String() })
	sm.s.fds = fdbudget.New(1000)
	sm.ls.el = enrollGivesUp{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sm.s.ctx = ctx
	jobs := make(chan dialJob, 1)
	sm.s.dials = dialPool{jobs: make(chan dialJob), ctx: ctx, run: func(j dialJob) { jobs <- j }}
	cc, w := sm.client(0)
	w.feed("GET / HTTP/1.1\r\nHost: a\r\n\r\n") // readHead -> beginExchange -> dial
	job := <-jobs
	m := cc.ex.member
	if !cc.ex.dialing || m == nil || job.d == nil {
		t.Fatalf("no dial started: dialing %v member %v", cc.ex.dialing, m)
	}
	sm.s.runDial(job) // on this goroutine, which plays the loop: Execute runs dialFailed here
	out, _ := w.readPeer()
	if !strings.HasPrefix(out, "HTTP/1.1 502 ") || cc.ex.dialing {
		t.Fatalf("after Enroll gave up: client got %q, dialing %v", out, cc.ex.dialing)
	}
	if h := m.Health(); h.Fails != 0 {
		t.Fatalf("an enroll failure counted against the backend: %+v", h)
	}
	if used := sm.s.fds.Used(); used != 0 {
		t.Fatalf("%d fds still counted after the failed dial", used)
	}
	if r, _ := m.Load(); r != 0 {
		t.Fatalf("member counts %d requests after the 502", r)
	}
}
