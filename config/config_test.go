package config

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/route"
)

// testFlags mirrors cmd/wsgate's flags (and a few of other kinds) so that the tests exercise
// every conversion.
type testFlags struct {
	listen, backend    string
	loops              int
	preserveHost       bool
	headerTimeout      time.Duration
	responseTimeout    time.Duration
	tunnelIdleTimeout  time.Duration
	bodyHighWater      int
	pipePoolMax        uint
	ratio              float64
	level              slog.Level
	routes             RouteFlag
	certs              StringsFlag
	config, checkCheck string
}

func newFlags(t testing.TB, args ...string) (*flag.FlagSet, *testFlags) {
	v := &testFlags{}
	fs := flag.NewFlagSet("wsgate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&v.listen, "listen", "127.0.0.1:8080", "")
	fs.StringVar(&v.backend, "backend", "127.0.0.1:3000", "")
	fs.IntVar(&v.loops, "loops", 2, "")
	fs.BoolVar(&v.preserveHost, "preserve-host", true, "")
	fs.DurationVar(&v.headerTimeout, "header-timeout", 10*time.Second, "")
	fs.DurationVar(&v.responseTimeout, "response-timeout", 60*time.Second, "")
	fs.DurationVar(&v.tunnelIdleTimeout, "tunnel-idle-timeout", 0, "")
	fs.IntVar(&v.bodyHighWater, "body-high-water", 1<<20, "")
	fs.UintVar(&v.pipePoolMax, "pipe-pool-max", 256, "")
	fs.Float64Var(&v.ratio, "ratio", 0.5, "")
	fs.TextVar(&v.level, "log-level", slog.LevelInfo, "")
	fs.Var(&v.routes, "route", "")
	fs.Var(&v.certs, "tls-cert", "")
	fs.StringVar(&v.config, "config", "", "")
	fs.StringVar(&v.checkCheck, "check-config", "", "")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs, v
}

func writeFile(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExampleGrafanaLoki(t *testing.T) {
	path := filepath.Join("..", "docs", "examples", "grafana-loki.toml")
	fs, v := newFlags(t)
	c, err := Load(path, fs)
	if err != nil {
		t.Fatal(err)
	}
	if v.listen != "127.0.0.1:8080" || v.headerTimeout != 10*time.Second || !v.preserveHost || v.level != slog.LevelInfo {
		t.Errorf("globals: %+v", v)
	}
	wantFrom := []string{"header-timeout", "listen", "log-level", "preserve-host", "response-timeout", "tunnel-idle-timeout"}
	if !reflect.DeepEqual(c.FromFile, wantFrom) {
		t.Errorf("FromFile = %v, want %v", c.FromFile, wantFrom)
	}
	if len(c.Routes) != 3 || c.RouteOrigins[1] != path+":25" {
		t.Fatalf("routes %v origins %v", c.Routes, c.RouteOrigins)
	}
	tb, err := route.NewTable(c.Routes, route.Defaults{PreserveHost: v.preserveHost, ResponseTimeout: v.responseTimeout}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, target, route, first string }{
		{"grafana.example.com", "/api/live/ws", "/", "127.0.0.1:3000"},
		{"grafana.example.com", "/api/datasources/proxy/3/loki/api/v1/tail", "/", "127.0.0.1:3000"},
		{"grafana.example.com", "/loki/api/v1/tail?query=%7Bjob%3D%22x%22%7D", "/loki/", "127.0.0.1:3100"},
		{"LOGS.example.com:443", "/loki/api/v1/query_range", "logs.example.com/", "127.0.0.1:3100"},
	} {
		r := tb.Match([]byte(tc.host), []byte(tc.target))
		if r == nil || r.String() != tc.route || r.Pool.Members()[0].Addr() != tc.first || !r.WebSocket {
			t.Errorf("Match(%q, %q) = %v", tc.host, tc.target, r)
		}
	}
	loki := tb.Routes()[1]
	if loki.ResponseTimeout != 5*time.Minute || tb.Routes()[0].ResponseTimeout != time.Minute || loki.Pool.Balance() != route.LeastConn {
		t.Errorf("loki route %+v", loki)
	}
	// The two Loki routes share their members (one per address) and probe /ready.
	if tb.Routes()[2].Pool.Members()[1] != loki.Pool.Members()[1] || len(tb.Members()) != 3 {
		t.Errorf("members: %v", tb.Members())
	}
	if tb.HealthPath(loki.Pool.Members()[0]) != "/ready" || tb.HealthPath(tb.Routes()[0].Pool.Members()[0]) != "" {
		t.Error("health paths")
	}
	if errs := Check(path, func() *flag.FlagSet { fs, _ := newFlags(t); return fs }()); errs != nil {
		t.Errorf("Check: %v", errs)
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	path := writeFile(t, "a.toml", `listen = "0.0.0.0:80"
loops = 8
header_timeout = "3s"
body_high_water = 65536
`)
	fs, v := newFlags(t, "-listen", "127.0.0.1:9999", "-loops", "3")
	c, err := Load(path, fs)
	if err != nil {
		t.Fatal(err)
	}
	if v.listen != "127.0.0.1:9999" || v.loops != 3 || v.headerTimeout != 3*time.Second || v.bodyHighWater != 65536 {
		t.Errorf("values: %+v", v)
	}
	if !reflect.DeepEqual(c.Overridden, []string{"listen", "loops"}) || !reflect.DeepEqual(c.FromFile, []string{"body-high-water", "header-timeout"}) {
		t.Errorf("Overridden %v FromFile %v", c.Overridden, c.FromFile)
	}
	if f := fs.Lookup("header-timeout"); f.Value.String() != "3s" {
		t.Errorf("flag value %q", f.Value.String())
	}
}

func TestRepeatableAndTypes(t *testing.T) {
	path := writeFile(t, "a.toml", `tls_cert = ["a.pem", "b.pem"]
ratio = 2
pipe_pool_max = 7
log_level = "debug"
route = ["/=127.0.0.1:1", "/x/=127.0.0.1:2"]
`)
	fs, v := newFlags(t)
	c, err := Load(path, fs)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual([]string(v.certs), []string{"a.pem", "b.pem"}) || v.ratio != 2 || v.pipePoolMax != 7 || v.level != slog.LevelDebug {
		t.Errorf("values %+v", v)
	}
	if len(c.Routes) != 2 || c.Routes[1].Prefix != "/x/" || c.RouteOrigins[1] != path+":5" {
		t.Errorf("routes %v %v", c.Routes, c.RouteOrigins)
	}
	// A repeatable flag on the command line replaces the file's list.
	fs, v = newFlags(t, "-tls-cert", "c.pem")
	if _, err := Load(path, fs); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual([]string(v.certs), []string{"c.pem"}) {
		t.Errorf("certs %v", v.certs)
	}
	// A scalar for a repeatable flag is one element.
	fs, v = newFlags(t)
	if _, err := Load(writeFile(t, "b.toml", `tls_cert = "only.pem"`+"\n"), fs); err != nil || len(v.certs) != 1 {
		t.Errorf("scalar for a list: %v %v", err, v.certs)
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		val  string
		want time.Duration
		err  string
	}{
		{`"1m30s"`, 90 * time.Second, ""},
		{`"0s"`, 0, ""},
		{`"250ms"`, 250 * time.Millisecond, ""},
		{`"10"`, 0, `header_timeout: "10" is not a duration (write it like "10s", "1m30s", "0s")`},
		{`10`, 0, `header_timeout: want a duration string such as "10s", got integer 10`},
		{`1.5`, 0, `header_timeout: want a duration string such as "10s", got float 1.5`},
		{`"-1s"`, -time.Second, ""}, // the flag accepts it; cmd/wsgate's validation refuses it
	} {
		fs, v := newFlags(t)
		_, err := Load(writeFile(t, "d.toml", "header_timeout = "+tc.val+"\n"), fs)
		if tc.err == "" {
			if err != nil || v.headerTimeout != tc.want {
				t.Errorf("%s: %v, %v", tc.val, v.headerTimeout, err)
			}
			continue
		}
		if err == nil || !strings.HasSuffix(err.Error(), ":1: "+tc.err) {
			t.Errorf("%s: error %v, want %q", tc.val, err, tc.err)
		}
	}
}

// Every error class with its exact message: file, line, key.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"syntax", "listen = \"x\nloops = 2\n", []string{`F:1: basic strings cannot have new lines`}},
		{"duplicate key", "listen = \"a\"\nlisten = \"b\"\n", []string{`F:2: key listen is already defined`}},
		{"table redefined", "[[route]]\nmatch = \"/\"\nbackends = [\"127.0.0.1:1\"]\n[route]\n", []string{`F:4: table route already exists as an array of tables`}},
		{"unknown keys", "lissten = \"x\"\nfoo = 1\nheader-timeout = \"1s\"\n[server]\nx = 1\n", []string{
			`F:1: unknown key "lissten" (did you mean listen?)`,
			`F:2: unknown key "foo"`,
			`F:3: unknown key "header-timeout" (write header_timeout: '_' for '-')`,
			`F:4: unknown key "server"`,
		}},
		{"wrong types", "loops = \"two\"\npreserve_host = \"yes\"\nlisten = 80\nratio = true\nlog_level = [1]\nbackend = { a = 1 }\n", []string{
			`F:1: loops: want an integer, got string "two"`,
			`F:2: preserve_host: want a boolean (true or false), got string "yes"`,
			`F:3: listen: want a string, got integer 80`,
			`F:4: ratio: want a number, got boolean true`,
			`F:5: log_level: wants a single value, not an array (-log-level is not repeatable)`,
			`F:6: backend: want a string, got a table`,
		}},
		{"set fails", "log_level = \"loud\"\npipe_pool_max = -1\n", []string{
			`F:1: log_level: invalid value "loud": slog: level string "loud": unknown name`,
			`F:2: pipe_pool_max: invalid value "-1": parse error`,
		}},
		{"command-line only", "config = \"other.toml\"\n", []string{`F:1: config: -config is a command-line flag only`}},
		{"repeatable element", "tls_cert = [\"a\", 1]\nroute = [\"/=x\"]\n", []string{
			`F:1: tls_cert: element 2: want a string, got integer 1`,
			`F:2: route #1: route "/=x": backend "x": missing port in address`,
		}},
		{"route keys", `[[route]]
match = "/"
bakends = ["127.0.0.1:1"]
strip_prefix = 1
websocket = "no"

[[route]]
backends = []
balance = "random"
health_interval = "soon"
source_addresses = ["127.0.0.2", "nope"]
`, []string{
			`F:1: route #1: no backends key (write backends = ["127.0.0.1:3000"])`,
			`F:3: route #1: unknown key "bakends" (did you mean backends?)`,
			`F:4: route #1: strip_prefix: want a boolean (true or false), got integer 1`,
			`F:5: route #1: websocket: want a boolean (true or false), got string "no"`,
			`F:7: route #2: no match key (write match = "/" or "host.example.com/prefix/")`,
			`F:8: route #2: backends: empty: list at least one backend`,
			`F:9: route #2: balance: balance "random": want least-conn, round-robin or client-hash`,
			`F:10: route #2: health_interval: "soon" is not a duration (write it like "10s", "1m30s", "0s")`,
			`F:11: route #2: source_addresses: ParseAddr("nope"): unable to parse IP`,
		}},
		{"route values", `[[route]]
match = "example.com:8080/"
backends = [
  "127.0.0.1:1",
  "127.0.0.1",
]
[[route]]
match = "/loki"
backends = ["127.0.0.1:2"]
health_path = "ready"
`, []string{
			`F:2: route #1: match: host "example.com:8080": a port is ignored for matching, leave it out (IPv6 literals go in brackets)`,
			`F:5: route #1: backends: backend "127.0.0.1": missing port in address`,
			`F:10: route #2: health_path: health path "ready": must start with '/'`,
		}},
		{"duplicate routes", `[[route]]
match = "/loki/"
backends = ["127.0.0.1:1"]

[[route]]
match = "/"
backends = ["127.0.0.1:2"]

[[route]]
match = "/loki/"
backends = ["127.0.0.1:3"]
`, []string{`F:10: route #3: match: duplicate route: /loki/ is also route #1 (F:1)`}},
		{"duplicate after a broken route", `[[route]]
match = "/broken"

[[route]]
match = "/loki/"
backends = ["127.0.0.1:1"]

[[route]]
match = "/loki/"
backends = ["127.0.0.1:3"]
`, []string{
			`F:1: route #1: no backends key (write backends = ["127.0.0.1:3000"])`,
			`F:9: route #3: match: duplicate route: /loki/ is also route #2 (F:4)`,
		}},
		{"shared member conflict", `[[route]]
match = "/a/"
backends = ["127.0.0.1:1"]
health_path = "/ready"
[[route]]
match = "/b/"
backends = ["127.0.0.1:1"]
health_path = "/health"
`, []string{`F:8: route #2: health_path: backend 127.0.0.1:1 is shared with route #1, which probes "/ready"; shared backends are one member: set the same health_path (F:1)`}},
		{"backend key and a / route", "backend = \"127.0.0.1:9\"\n[[route]]\nmatch = \"/\"\nbackends = [\"127.0.0.1:1\"]\n", []string{
			`F:1: backend: duplicate route: / is also route #1 (F:2)`,
		}},
		{"bad backend key", "backend = \"nowhere\"\n", []string{`F:1: backend: backend "nowhere": missing port in address`}},
		{"route not an array", "route = \"/=127.0.0.1:1\"\n", []string{`F:1: route: want [[route]] tables or an array of -route strings, got string "/=127.0.0.1:1"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "F")
			if err := os.WriteFile(p, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			fs, _ := newFlags(t)
			c, err := Load(p, fs)
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T %v", err, err)
			}
			got := strings.Split(strings.ReplaceAll(err.Error(), p, "F"), "\n")
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if errs := Check(p, func() *flag.FlagSet { fs, _ := newFlags(t); return fs }()); len(errs) != len(tc.want) {
				t.Errorf("Check: %d errors, want %d", len(errs), len(tc.want))
			}
		})
	}
}

func TestRoutePrecedence(t *testing.T) {
	file := writeFile(t, "r.toml", `backend = "127.0.0.1:7"
[[route]]
match = "/loki/"
backends = ["127.0.0.1:3100"]
`)
	origins := func(c *Config) string { return strings.Join(c.RouteOrigins, " ") }
	specs := func(c *Config) string {
		var s []string
		for i := range c.Routes {
			s = append(s, c.Routes[i].String())
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct {
		args           []string
		file           string
		routes, origin string
	}{
		{nil, "", "/=127.0.0.1:3000", "-backend (default)"},
		{[]string{"-backend", "127.0.0.1:4"}, "", "/=127.0.0.1:4", "-backend"},
		{[]string{"-route", "/=127.0.0.1:5", "-route", "h.example.com/=127.0.0.1:6"}, "", "/=127.0.0.1:5 h.example.com/=127.0.0.1:6", "-route -route"},
		{nil, file, "/loki/=127.0.0.1:3100 /=127.0.0.1:7", file + ":2 " + file + ":1"},
		// Any route on the command line replaces the file's routes.
		{[]string{"-route", "/x/=127.0.0.1:5"}, file, "/x/=127.0.0.1:5", "-route"},
		{[]string{"-backend", "127.0.0.1:4"}, file, "/=127.0.0.1:4", "-backend"},
		{[]string{"-route", "/x/=127.0.0.1:5", "-backend", "127.0.0.1:4"}, file, "/x/=127.0.0.1:5 /=127.0.0.1:4", "-route -backend"},
	} {
		fs, _ := newFlags(t, tc.args...)
		c, err := Load(tc.file, fs)
		if err != nil {
			t.Errorf("%v %q: %v", tc.args, tc.file, err)
			continue
		}
		if specs(c) != tc.routes || origins(c) != tc.origin {
			t.Errorf("%v %q: routes %q origins %q, want %q %q", tc.args, tc.file, specs(c), origins(c), tc.routes, tc.origin)
		}
	}
	fs, _ := newFlags(t, "-route", "/=127.0.0.1:5", "-backend", "127.0.0.1:4")
	if _, err := Load("", fs); err == nil || err.Error() != "command line: -backend /=127.0.0.1:4: duplicate route: / is also -route /=127.0.0.1:5" {
		t.Errorf("duplicate on the command line: %v", err)
	}
}

// Load is pure: a second Load (a reload) with a fresh FlagSet leaves the first Config and its
// flag values alone, and a broken file changes nothing but its own FlagSet.
func TestReloadIsPure(t *testing.T) {
	good := writeFile(t, "good.toml", "loops = 4\n[[route]]\nmatch = \"/\"\nbackends = [\"127.0.0.1:1\"]\n")
	fs1, v1 := newFlags(t)
	c1, err := Load(good, fs1)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := *c1
	snapshot.Routes = append([]route.Spec(nil), c1.Routes...)
	bad := writeFile(t, "bad.toml", "loops = 6\n[[route]]\nmatch = \"/\"\n")
	fs2, _ := newFlags(t)
	if _, err := Load(bad, fs2); err == nil {
		t.Fatal("bad file loaded")
	}
	if err := os.WriteFile(good, []byte("loops = 5\n[[route]]\nmatch = \"/b/\"\nbackends = [\"127.0.0.1:2\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs3, v3 := newFlags(t)
	c3, err := Load(good, fs3)
	if err != nil {
		t.Fatal(err)
	}
	if v1.loops != 4 || v3.loops != 5 || !reflect.DeepEqual(*c1, snapshot) || c3.Routes[0].Prefix != "/b/" {
		t.Errorf("first load changed: loops %d, %+v", v1.loops, c1)
	}
}

func TestLoadMissingFile(t *testing.T) {
	fs, _ := newFlags(t)
	_, err := Load("/nonexistent/wsgate.toml", fs)
	if err == nil || err.Error() != "/nonexistent/wsgate.toml: cannot read: no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
	if errs := Check("", fs); len(errs) != 1 {
		t.Errorf("Check without a file: %v", errs)
	}
}

// FuzzLoad: the loader never panics, and whatever it accepts builds a route table.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"listen = \"127.0.0.1:1\"\n[[route]]\nmatch = \"/\"\nbackends = [\"127.0.0.1:1\"]\n",
		"route = [\"/=127.0.0.1:1\", {match = \"/a/\", backends = [\"127.0.0.1:2\"]}]\n",
		"[[route]]\nmatch = \"x.example.com/a\"\nbackends = [\"[::1]:1\"]\nsource_addresses = [\"::1\"]\nhealth_path = \"/r\"\nhealth_interval = \"1s\"\n",
		"a.b.c = 1\n[route.x]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fs, _ := newFlags(t)
		c, err := LoadBytes("fuzz.toml", data, fs)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if _, err := route.NewTable(c.Routes, route.Defaults{}, nil); err != nil {
			t.Fatalf("Load accepted routes NewTable refuses: %v", err)
		}
	})
}

func TestAllRouteOptions(t *testing.T) {
	path := writeFile(t, "all.toml", `[[route]]
match = "*.Example.com/api"
backends = ["[::1]:8080", "localhost:1"]
strip_prefix = true
preserve_host = false
websocket = false
header_timeout = "5s"
response_timeout = "1m"
tunnel_idle_timeout = "0s"
balance = "client-hash"
health_path = "/ready"
health_interval = "500ms"
source_addresses = ["::1", "127.0.0.2"]
`)
	fs, _ := newFlags(t)
	c, err := Load(path, fs)
	if err != nil {
		t.Fatal(err)
	}
	sp := c.Routes[0]
	f := false
	hp := "/ready"
	bal := route.ClientHash
	d := func(s string) *time.Duration { v, _ := time.ParseDuration(s); return &v }
	want := route.Spec{
		Host: "*.example.com", Prefix: "/api", Backends: []string{"[::1]:8080", "localhost:1"},
		Options: route.Options{
			StripPrefix: true, PreserveHost: &f, WebSocket: &f, HeaderTimeout: d("5s"),
			ResponseTimeout: d("1m"), TunnelIdleTimeout: d("0s"), Balance: &bal, HealthPath: &hp,
			HealthInterval: d("500ms"), SourceAddrs: []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.2")},
		},
	}
	if !reflect.DeepEqual(sp, want) {
		t.Errorf("spec\n%+v\nwant\n%+v", sp, want)
	}
	tb, err := route.NewTable(c.Routes, route.Defaults{PreserveHost: true, TunnelIdleTimeout: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := tb.Routes()[0]
	if r.PreserveHost || r.WebSocket || r.TunnelIdleTimeout != 0 || r.HeaderTimeout != 5*time.Second || r.Pool.Balance() != route.ClientHash {
		t.Errorf("route %+v", r)
	}
	// Sources are kept per family: the IPv6 backend dials from ::1 only.
	if s := r.Pool.Dialer(r.Pool.Members()[0]).Sources(); len(s) != 1 || s[0].String() != "::1" {
		t.Errorf("sources for [::1]:8080: %v", s)
	}
}
