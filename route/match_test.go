package route

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func mustTable(t testing.TB, routes ...string) *Table {
	t.Helper()
	specs := make([]Spec, len(routes))
	for i, s := range routes {
		sp, err := ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		specs[i] = sp
	}
	tb, err := NewTable(specs, Defaults{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestMatch(t *testing.T) {
	tb := mustTable(t,
		"/=127.0.0.1:3000",                  // grafana
		"/loki/=127.0.0.1:3100",             // loki under the slash
		"/prom=127.0.0.1:9090",              // no trailing slash: segment match
		"/prom/api/v1/write=127.0.0.1:9091", // longer prefix wins
		"logs.example.com/=127.0.0.1:3101",
		"logs.example.com/admin/=127.0.0.1:3102",
		"*.example.com/=127.0.0.1:4000",
		"*.example.com/x/=127.0.0.1:4001",
		"[::1]/=127.0.0.1:6000",
		"10.1.2.3/=127.0.0.1:6001",
		"api.example.com/v1/=127.0.0.1:5000",
	)
	for _, tc := range []struct {
		host, target, want string // want is the route's [HOST]/PREFIX, "" for no match
	}{
		// host-less, longest prefix
		{"", "/", "/"},
		{"", "/dashboards", "/"},
		{"grafana.local", "/api/live/ws", "/"},
		{"", "/loki/", "/loki/"},
		{"", "/loki/api/v1/tail?query=x", "/loki/"},
		{"", "/loki", "/"},  // "/loki/" matches only below itself
		{"", "/lokix", "/"}, // not a segment of /loki/
		{"", "/loki?x=/loki/", "/"},
		{"", "/prom", "/prom"},
		{"", "/prom/", "/prom"},
		{"", "/prom/graph", "/prom"},
		{"", "/prom?x", "/prom"},
		{"", "/promx", "/"}, // segment boundary: /prom does not match /promx
		{"", "/prom/api/v1/write", "/prom/api/v1/write"},
		{"", "/prom/api/v1/writes", "/prom"},
		{"", "/prom/api/v1/write/x", "/prom/api/v1/write"},
		{"", "/Loki/", "/"}, // paths are case-sensitive
		{"", "*", "/"},      // OPTIONS *
		{"", "", "/"},
		{"", "?a=b", "/"},
		// exact host, with case, port, trailing dot
		{"logs.example.com", "/", "logs.example.com/"},
		{"LOGS.Example.Com", "/x", "logs.example.com/"},
		{"logs.example.com:8080", "/", "logs.example.com/"},
		{"logs.example.com.", "/", "logs.example.com/"},
		{"logs.example.com.:443", "/admin/x", "logs.example.com/admin/"},
		{"user@logs.example.com", "/", "logs.example.com/"},
		// a host route beats a host-less one whatever the lengths...
		{"logs.example.com", "/loki/api", "logs.example.com/"},
		// ...and when the host's routes miss, the host-less ones still apply
		{"api.example.com", "/v1/x", "api.example.com/v1/"},
		{"api.example.com", "/loki/x", "*.example.com/"},
		// wildcard: exactly one label
		{"a.example.com", "/", "*.example.com/"},
		{"A-B.EXAMPLE.COM:80", "/x/y", "*.example.com/x/"},
		{"a.b.example.com", "/", "/"},
		{"example.com", "/", "/"},
		{".example.com", "/", "/"},
		{"aexample.com", "/", "/"},
		// Unicode lookalikes never fold: the Kelvin sign is not k, a long s is not s.
		{"logs.example.\u212a", "/", "/"},
		{"logs.example.com\u212a", "/", "/"},
		{"\u017fogs.example.com", "/", "*.example.com/"}, // one (odd) label, not logs.example.com
		{"logs.ex\u0430mple.com", "/", "/"},              // Cyrillic a
		// IP literals
		{"[::1]", "/", "[::1]/"},
		{"[::1]:8080", "/", "[::1]/"},
		{"[::1", "/", "/"},
		{"::1", "/", "/"},
		{"10.1.2.3:80", "/", "10.1.2.3/"},
		{strings.Repeat("a", 300) + ".example.com", "/", "/"},
	} {
		r := tb.Match([]byte(tc.host), []byte(tc.target))
		got := ""
		if r != nil {
			got = r.String()
		}
		if got != tc.want {
			t.Errorf("Match(%q, %q) = %q, want %q", tc.host, tc.target, got, tc.want)
		}
	}
}

func TestMatchNoRoute(t *testing.T) {
	tb := mustTable(t, "/api/=127.0.0.1:1", "grafana.example.com/=127.0.0.1:2")
	for _, tc := range [][2]string{{"", "/"}, {"", "/ap"}, {"", "/api"}, {"other.example.com", "/"}, {"", "*"}} {
		if r := tb.Match([]byte(tc[0]), []byte(tc[1])); r != nil {
			t.Errorf("Match(%q, %q) = %v, want nil (404)", tc[0], tc[1], r)
		}
	}
	if r := tb.Match([]byte("grafana.example.com"), []byte("/x")); r == nil || r.Host != "grafana.example.com" {
		t.Errorf("host route: %v", r)
	}
}

func TestForwardTarget(t *testing.T) {
	strip := func(prefix string) *Route {
		return &Route{Prefix: prefix, StripPrefix: true, slash: strings.HasSuffix(prefix, "/")}
	}
	for _, tc := range []struct {
		r              *Route
		target, expect string
	}{
		{strip("/loki/"), "/loki/api/v1/tail?q=1", "/api/v1/tail?q=1"},
		{strip("/loki/"), "/loki/", "/"},
		{strip("/loki/"), "/loki/?q", "/?q"},
		{strip("/loki"), "/loki", "/"},
		{strip("/loki"), "/loki?x=1", "/?x=1"},
		{strip("/loki"), "/loki/", "/"},
		{strip("/loki"), "/loki/x", "/x"},
		{strip("/"), "/x?y", "/x?y"},
		{strip("/a/b/"), "/a/b//c", "//c"},
		{&Route{Prefix: "/loki/", slash: true}, "/loki/x", "/loki/x"}, // no strip_prefix
	} {
		got := string(tc.r.AppendTarget(nil, []byte(tc.target)))
		if got != tc.expect {
			t.Errorf("%s strip: %q -> %q, want %q", tc.r.Prefix, tc.target, got, tc.expect)
		}
	}
	r := strip("/loki/")
	target := []byte("/loki/api/v1/query_range?query=%7Bjob%3D%22x%22%7D")
	dst := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() {
		h, tl := r.ForwardTarget(target)
		dst = append(append(dst[:0], h...), tl...)
	}); n != 0 {
		t.Errorf("ForwardTarget: %v allocs", n)
	}
}

func TestTableRouteOptions(t *testing.T) {
	f := false
	d := 7 * time.Second
	bal := RoundRobin
	specs := []Spec{
		{Prefix: "/", Backends: []string{"127.0.0.1:1"}},
		{Prefix: "/ws/", Backends: []string{"127.0.0.1:1", "127.0.0.1:2"}, Options: Options{
			StripPrefix: true, PreserveHost: &f, WebSocket: &f, ResponseTimeout: &d, Balance: &bal,
		}},
	}
	tb, err := NewTable(specs, Defaults{PreserveHost: true, ResponseTimeout: time.Minute, HeaderTimeout: 10 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r0, r1 := tb.Routes()[0], tb.Routes()[1]
	if !r0.PreserveHost || !r0.WebSocket || r0.ResponseTimeout != time.Minute || r0.HeaderTimeout != 10*time.Second || r0.Pool.Balance() != LeastConn {
		t.Errorf("route 0 = %+v", r0)
	}
	if r1.PreserveHost || r1.WebSocket || r1.ResponseTimeout != d || !r1.StripPrefix || r1.Pool.Balance() != RoundRobin {
		t.Errorf("route 1 = %+v", r1)
	}
	// One Member per address, shared by the routes that list it.
	if r0.Pool.Members()[0] != r1.Pool.Members()[0] || len(tb.Members()) != 2 {
		t.Errorf("members not shared: %v %v", r0.Pool.Members(), r1.Pool.Members())
	}
	// A reload keeps the Member (its counters and health) and its ID.
	m := r0.Pool.Members()[0]
	m.Acquire(Tunnel)
	tb2, err := NewTable([]Spec{{Prefix: "/", Backends: []string{"127.0.0.1:9", "127.0.0.1:1"}}}, Defaults{}, tb)
	if err != nil {
		t.Fatal(err)
	}
	ms := tb2.Members()
	if ms[1] != m || ms[0].ID() != 2 || tb2.MemberIDLimit() != 3 {
		t.Errorf("reload: members %v ids %d %d limit %d", ms, ms[0].ID(), ms[1].ID(), tb2.MemberIDLimit())
	}
	if !tb2.Has(m) || tb2.Has(r1.Pool.Members()[1]) || !tb.Has(r1.Pool.Members()[1]) {
		t.Error("Has")
	}
	if _, tun := ms[1].Load(); tun != 1 {
		t.Errorf("reload lost the open tunnel count: %d", tun)
	}
}

func TestMatchAllocs(t *testing.T) {
	tb := benchTable(t, 100)
	reqs := benchRequests()
	for _, rq := range reqs {
		if n := testing.AllocsPerRun(100, func() { tb.Match(rq.host, rq.target) }); n != 0 {
			t.Errorf("Match(%q, %q): %v allocs", rq.host, rq.target, n)
		}
	}
}

// naiveMatch is the rules written as plainly as possible: the reference for FuzzMatch.
func naiveMatch(specs []Spec, host, target string) int {
	if i := strings.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	if target == "" || target[0] != '/' {
		target = "/"
	}
	h := host
	if i := strings.LastIndexByte(h, '@'); i >= 0 {
		h = h[i+1:]
	}
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i >= 0 {
			h = h[:i+1]
		} else {
			h = ""
		}
	} else {
		if i := strings.IndexByte(h, ':'); i >= 0 {
			h = h[:i]
		}
		h = strings.TrimSuffix(h, ".")
	}
	if len(h) > maxHost {
		h = ""
	}
	lh := []byte(h)
	for i := range lh {
		lh[i] = lower(lh[i])
	}
	h = string(lh)
	best := func(accept func(*Spec) bool) int {
		bi := -1
		for i := range specs {
			s := &specs[i]
			if !accept(s) {
				continue
			}
			p := s.Prefix
			ok := strings.HasPrefix(target, p) && (strings.HasSuffix(p, "/") || len(target) == len(p) || target[len(p)] == '/')
			if ok && (bi < 0 || len(p) > len(specs[bi].Prefix)) {
				bi = i
			}
		}
		return bi
	}
	if h != "" {
		if i := best(func(s *Spec) bool { return s.Host == h }); i >= 0 {
			return i
		}
		if dot := strings.IndexByte(h, '.'); dot > 0 {
			if i := best(func(s *Spec) bool { return s.Host == "*."+h[dot+1:] }); i >= 0 {
				return i
			}
		}
	}
	return best(func(s *Spec) bool { return s.Host == "" })
}

// FuzzMatch checks Match against naiveMatch on fuzzed route sets and requests.
func FuzzMatch(f *testing.F) {
	f.Add("/;/loki/;/prom;logs.example.com/;*.example.com/x/", "LOGS.example.com.:80", "/loki/x?y")
	f.Add("/a;/a/;/a/b;/ab", "", "/a/b/c")
	f.Add("x.y/;*.y/;/", "a.x.y", "/")
	f.Add("[::1]/;/", "[::1]:80", "/z")
	f.Fuzz(func(t *testing.T, routes, host, target string) {
		var specs []Spec
		seen := map[string]bool{}
		for _, m := range strings.Split(routes, ";") {
			h, p, err := ParseMatch(m)
			if err != nil || seen[h+p] {
				continue
			}
			seen[h+p] = true
			specs = append(specs, Spec{Host: h, Prefix: p, Backends: []string{"127.0.0.1:1"}})
		}
		if len(specs) == 0 {
			return
		}
		tb, err := NewTable(specs, Defaults{}, nil)
		if err != nil {
			t.Fatalf("NewTable(%v): %v", specs, err)
		}
		r := tb.Match([]byte(host), []byte(target))
		got := -1
		if r != nil {
			got = r.Index
		}
		if want := naiveMatch(specs, host, target); got != want {
			t.Fatalf("routes %q host %q target %q: Match gave %d, reference %d", routes, host, target, got, want)
		}
		if r != nil && r.StripPrefix {
			t.Fatal("unexpected")
		}
	})
}

// FuzzParseSpec: ParseSpec never panics, and what it accepts round-trips and validates.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"/=127.0.0.1:3000", "*.Example.com./a/=[::1]:1,h:2", "[::1]/=x:1", "a/b=c=d:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := ParseSpec(s)
		if err != nil {
			return
		}
		if errs := Validate([]Spec{sp}); len(errs) > 0 && !strings.Contains(errs[0].Error(), "listed twice") {
			t.Fatalf("ParseSpec(%q) accepted what Validate refuses: %v", s, errs)
		}
		again, err := ParseSpec(sp.String())
		if err != nil || fmt.Sprint(again) != fmt.Sprint(sp) {
			t.Fatalf("round trip %q -> %q -> %v, %v", s, sp.String(), again, err)
		}
	})
}

// TestTableString: the table reads back in -route syntax, in match order, and parsing that back
// gives a table that prints the same (a reload compares tables by it).
func TestTableString(t *testing.T) {
	tb := mustTable(t, "/=127.0.0.1:3000", "/loki/=127.0.0.1:3100,127.0.0.1:3101", "logs.example.com/=127.0.0.1:3200")
	got := tb.String()
	for _, want := range []string{"/=127.0.0.1:3000", "/loki/=127.0.0.1:3100,127.0.0.1:3101", "logs.example.com/=127.0.0.1:3200"} {
		if !strings.Contains(got, want) {
			t.Errorf("String() = %q, missing %q", got, want)
		}
	}
	again := mustTable(t, strings.Fields(got)...)
	if again.String() != got {
		t.Fatalf("round trip: %q -> %q", got, again.String())
	}
	if other := mustTable(t, "/=127.0.0.1:3000", "/loki/=127.0.0.1:3100"); other.String() == got {
		t.Fatalf("two different tables print the same: %q", got)
	}
}
