package main

import (
	"bytes"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// Every bad command line is exactly one line on stderr, nothing on stdout, and exit code 2.
func TestBadCommandLineIsOneLineExit2(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-header-timeout", "soon"}, `invalid value "soon" for flag -header-timeout: parse error (see wsgate -h)`},
		{[]string{"-loops", "many"}, `invalid value "many" for flag -loops: parse error (see wsgate -h)`},
		{[]string{"-loops"}, `flag needs an argument: -loops (see wsgate -h)`},
		{[]string{"-frobnicate"}, `flag provided but not defined: -frobnicate (see wsgate -h)`},
		{[]string{"extra"}, `unexpected argument "extra" (flags only; see wsgate -h)`},
		{[]string{"-listen", "127.0.0.1:1", "-listen", "127.0.0.1:2"}, `-listen given twice ("127.0.0.1:1", then "127.0.0.1:2"): a flag takes one value`},
		{[]string{"-backend", "a:1", "-backend=b:2"}, `-backend given twice ("a:1", then "b:2"): a flag takes one value`},
		{[]string{"-splice=false", "-splice"}, `-splice given twice ("false", then "true"): a flag takes one value`},
		{[]string{"-loops", "0"}, `-loops 0: want 1 or more`},
		{[]string{"-tunnel-loops", "0"}, `-tunnel-loops 0: want 1 or more`},
		{[]string{"-max-conns", "0"}, `-max-conns 0: want 1 or more`},
		{[]string{"-max-head-bytes", "10"}, `-max-head-bytes 10: want 1024 or more`},
		{[]string{"-body-high-water", "100"}, `-body-high-water 100: want 4096 or more`},
		{[]string{"-backend-idle", "-1"}, `-backend-idle -1: want 0 (none) or more`},
		{[]string{"-pipe-size", "-1"}, `-pipe-size -1: want 0 (kernel default) or more`},
		{[]string{"-pipe-pool-max", "-1"}, `-pipe-pool-max -1: want 0 (none) or more`},
		{[]string{"-max-pipes", "-1"}, `-max-pipes -1: want 0 (none) or more`},
		{[]string{"-header-timeout", "0"}, `-header-timeout 0s: want more than 0 (this timeout cannot be turned off)`},
		{[]string{"-idle-timeout", "0"}, `-idle-timeout 0s: want more than 0 (this timeout cannot be turned off)`},
		{[]string{"-dial-timeout", "-1s"}, `-dial-timeout -1s: want more than 0 (this timeout cannot be turned off)`},
		{[]string{"-response-timeout", "0"}, `-response-timeout 0s: want more than 0 (this timeout cannot be turned off)`},
		{[]string{"-backend-idle-timeout", "0"}, `-backend-idle-timeout 0s: want more than 0 (this timeout cannot be turned off)`},
		{[]string{"-tunnel-idle-timeout", "-1s"}, `-tunnel-idle-timeout -1s: want 0 (no limit) or more`},
		{[]string{"-tunnel-fin-timeout", "-1s"}, `-tunnel-fin-timeout -1s: want 0 (no limit) or more`},
		{[]string{"-memory-return", "-1s"}, `-memory-return -1s: want 0 (no limit) or more`},
		{[]string{"-drain-delay", "-1s"}, `-drain-delay -1s: want 0 (no wait) or more`},
		{[]string{"-drain-timeout", "-1s"}, `-drain-timeout -1s: want 0 (no wait) or more`},
		{[]string{"-close-spread", "-1ms"}, `-close-spread -1ms: want 0 (no wait) or more`},
		{[]string{"-log-level", "chatty"}, `-log-level "chatty": want debug, info, warn or error`},
		{[]string{"-log-format", "xml"}, `-log-format "xml": want text or json`},
		{[]string{"-access-log", ""}, `-access-log "": want off, stdout, stderr or a file path`},
		{[]string{"-admin-pprof"}, `-admin-pprof needs -admin (the admin listener to serve it on)`},
		{[]string{"-admin", "9180"}, `-admin "9180": want host:port (e.g. 127.0.0.1:9180)`},
		{[]string{"-admin", "127.0.0.1:x"}, `-admin "127.0.0.1:x": port "x" is not a number from 0 to 65535`},
		{[]string{"-listen", "127.0.0.1:8080", "-admin", "127.0.0.1:8080"}, `-admin "127.0.0.1:8080": the proxy listens there (-listen "127.0.0.1:8080"); the admin listener needs its own address`},
		{[]string{"-listen", ":8080", "-admin", "127.0.0.1:8080"}, `-admin "127.0.0.1:8080": the proxy listens there (-listen ":8080"); the admin listener needs its own address`},
		{[]string{"-listen", "127.0.0.1:8080", "-admin", "0.0.0.0:8080"}, `-admin "0.0.0.0:8080": the proxy listens there (-listen "127.0.0.1:8080"); the admin listener needs its own address`},
		{[]string{"-listen", "8080"}, `-listen "8080": want host:port (e.g. :8080 or 127.0.0.1:8080)`},
		{[]string{"-listen", ":http"}, `-listen ":http": port "http" is not a number from 0 to 65535`},
		{[]string{"-listen", "no host!:80"}, `-listen "no host!:80": "no host!" is not an IP address or host name`},
		{[]string{"-backend", ""}, `-backend "": empty (want host:port or http://host:port)`},
		{[]string{"-backend", "localhost"}, `-backend "localhost": no port (want host:port or http://host:port)`},
		{[]string{"-backend", ":3000"}, `-backend ":3000": no host (want host:port or http://host:port)`},
		{[]string{"-backend", "127.0.0.1:0"}, `-backend "127.0.0.1:0": port "0" is not a number from 1 to 65535 (want host:port or http://host:port)`},
		{[]string{"-backend", "127.0.0.1:99999"}, `-backend "127.0.0.1:99999": port "99999" is not a number from 1 to 65535 (want host:port or http://host:port)`},
		{[]string{"-backend", "bad_host name:80"}, `-backend "bad_host name:80": "bad_host name" is not an IP address or host name (want host:port or http://host:port)`},
		{[]string{"-backend", "ftp://x:21"}, `-backend "ftp://x:21": scheme "ftp" is not supported (want host:port or http://host:port)`},
		{[]string{"-backend", "https://grafana:443"}, `-backend "https://grafana:443": TLS to the backend is not supported (want host:port or http://host:port)`},
		{[]string{"-backend", "http://grafana:3000/grafana"}, `-backend "http://grafana:3000/grafana": a backend is an address: no path, query or user (want host:port or http://host:port)`},
		{[]string{"-backend", "http://u@grafana:3000"}, `-backend "http://u@grafana:3000": a backend is an address: no path, query or user (want host:port or http://host:port)`},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runIO(c.args, &stdout, &stderr)
			if code != 2 || stdout.Len() != 0 || stderr.String() != "wsgate: "+c.want+"\n" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and stderr %q", code, stdout.String(), stderr.String(), "wsgate: "+c.want+"\n")
			}
		})
	}
}

func TestHelpListsEveryFlagOnStdout(t *testing.T) {
	for _, h := range []string{"-h", "-help", "--help"} {
		var stdout, stderr bytes.Buffer
		if code := runIO([]string{h}, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
			t.Fatalf("%s: exit %d, stderr %q", h, code, stderr.String())
		}
		out := stdout.String()
		for _, name := range flagNames(t) {
			if !strings.Contains(out, "  -"+name) {
				t.Errorf("%s does not list -%s", h, name)
			}
		}
		for _, want := range []string{"(default 10s)", `(default "127.0.0.1:8080")`, zeroRule, "SIGHUP"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s lacks %q:\n%s", h, want, out)
			}
		}
		if strings.Contains(out, "value\n") || strings.Contains(out, "panic") {
			t.Errorf("%s shows the wrapper's type instead of the flag's:\n%s", h, out)
		}
	}
}

// flagNames lists every flag the command line defines.
func flagNames(t *testing.T) []string {
	var names []string
	for _, l := range strings.Split(usageText(), "\n") {
		if strings.HasPrefix(l, "  -") {
			names = append(names, strings.Fields(l)[0][1:])
		}
	}
	if len(names) < 20 {
		t.Fatalf("only %d flags found in -h", len(names))
	}
	return names
}

func usageText() string {
	var b bytes.Buffer
	printUsage(&b)
	return b.String()
}

// The README documents every flag and the same zero-value rule as -h.
func TestReadmeDocumentsEveryFlag(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, name := range flagNames(t) {
		if !strings.Contains(readme, "| `-"+name+"` |") {
			t.Errorf("README's flag table has no row for -%s", name)
		}
	}
	if !strings.Contains(strings.Join(strings.Fields(readme), " "), strings.Join(strings.Fields(zeroRule), " ")) {
		t.Errorf("README does not state the zero-value rule of -h:\n%s", zeroRule)
	}
}

func TestVersionFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runIO([]string{"-version"}, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	out := stdout.String()
	if !strings.HasPrefix(out, "wsgate ") || !strings.Contains(out, "\ngo go1.") {
		t.Fatalf("-version printed %q", out)
	}
}

func TestVersionText(t *testing.T) {
	cases := []struct {
		name, version string
		bi            *debug.BuildInfo
		want          string
	}{
		{"go install @version", "v1.2.3", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/wsgate/wsgate", Version: "v1.2.3"}},
			"wsgate v1.2.3\ngo go1.26.8 linux/amd64\n"},
		{"checkout with VCS", "0123456789ab+dirty", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.time", Value: "2026-12-07T01:00:00Z"}, {Key: "vcs.modified", Value: "true"}}},
			"wsgate 0123456789ab+dirty\nrevision 0123456789abcdef 2026-12-07T01:00:00Z (modified)\ngo go1.26.8 linux/amd64\n"},
		{"clean checkout", "0123456789ab", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "false"}}},
			"wsgate 0123456789ab\nrevision 0123456789abcdef\ngo go1.26.8 linux/amd64\n"},
		{"no VCS", "(devel)", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			"wsgate (devel)\nrevision unknown (built without VCS information)\ngo go1.26.8 linux/amd64\n"},
		{"no build info", "(devel)", nil,
			"wsgate (devel)\nrevision unknown (built without VCS information)\ngo go1.26.8 linux/amd64\n"},
	}
	for _, c := range cases {
		if got := versionText(c.version, "go1.26.8", c.bi, "linux/amd64"); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestBackendNormalised(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:3000":         "127.0.0.1:3000",
		"grafana.internal:3000":  "grafana.internal:3000",
		"http://127.0.0.1:3000":  "127.0.0.1:3000",
		"HTTP://Grafana:3000/":   "Grafana:3000",
		"http://grafana":         "grafana:80",
		"http://[::1]:3000":      "[::1]:3000",
		"http://[::1]":           "[::1]:80",
		"[::1]:3000":             "[::1]:3000",
		"http://127.0.0.1:03000": "127.0.0.1:3000",
	} {
		o, err := parseCommandLine([]string{"-backend", in})
		if err != nil || o.cfg.Backend != want {
			t.Errorf("-backend %s: %q, %v; want %q", in, o.cfg.Backend, err, want)
		}
	}
}

// The zero-value rule reaches the packages' Config as their "none" values.
func TestZeroValuesMeanNone(t *testing.T) {
	o, err := parseCommandLine([]string{"-backend-idle", "0", "-pipe-size", "0", "-pipe-pool-max", "0",
		"-max-pipes", "0", "-tunnel-idle-timeout", "0", "-tunnel-fin-timeout", "0", "-memory-return", "0"})
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.BackendIdle != -1 || c.Tunnel.PipeSize != -1 || c.Tunnel.PipePoolMax != -1 || c.Tunnel.MaxPipes != -1 ||
		c.Tunnel.IdleTimeout != 0 || c.Tunnel.FinTimeout != -1 || o.memEvery != 0 {
		t.Fatalf("zeros did not become none: %+v memory-return %v", c, o.memEvery)
	}
	d, err := parseCommandLine(nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.cfg.BackendIdle != 64 || d.cfg.Tunnel.PipeSize != 256<<10 || d.cfg.Tunnel.MaxPipes != 2500 || d.cfg.Tunnel.FinTimeout != 30*time.Second {
		t.Fatalf("defaults: %+v", d.cfg)
	}
	// -max-pipes follows -max-conns unless given.
	if o, _ := parseCommandLine([]string{"-max-conns", "100"}); o.cfg.Tunnel.MaxPipes != 25 {
		t.Fatalf("-max-conns 100: -max-pipes %d, want 25", o.cfg.Tunnel.MaxPipes)
	}
	if o, _ := parseCommandLine([]string{"-max-conns", "100", "-max-pipes", "7"}); o.cfg.Tunnel.MaxPipes != 7 {
		t.Fatalf("-max-pipes 7: %d", o.cfg.Tunnel.MaxPipes)
	}
}

func TestFlagsReachConfig(t *testing.T) {
	var out bytes.Buffer
	cfg, level, err := parseFlags([]string{"-listen", "127.0.0.1:9", "-backend", "127.0.0.1:10",
		"-preserve-host=false", "-splice=false", "-tunnel-fin-timeout", "7s", "-header-timeout", "3s", "-log-level", "debug"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9" || cfg.Backend != "127.0.0.1:10" || cfg.PreserveHost ||
		cfg.Tunnel.Splice || cfg.Tunnel.FinTimeout != 7*time.Second || cfg.HeaderTimeout != 3*time.Second || level.String() != "DEBUG" {
		t.Fatalf("config not taken from flags: %+v", cfg)
	}
	// run: stdout and stderr on one writer.
	if code := run([]string{"-loops", "0"}, &out); code != 2 || out.String() != "wsgate: -loops 0: want 1 or more\n" {
		t.Fatalf("run: exit %d, %q", code, out.String())
	}
}

// Every flag says what a reload does with it: applied (reloadable), only a new process can change
// it (fixed, with what that takes), or it cannot differ (the command line is the same one). A new
// flag must be put in one of them (reload.go).
func TestEveryFlagHasAReloadRule(t *testing.T) {
	for _, name := range flagNames(t) {
		n := 0
		if reloadable[name] {
			n++
		}
		if fixed[name] != "" {
			n++
		}
		if commandLineOnly[name] {
			n++
		}
		if n != 1 {
			t.Errorf("-%s is in %d of reloadable, fixed, commandLineOnly (reload.go): want exactly one", name, n)
		}
	}
}

func TestObserveFlags(t *testing.T) {
	o, err := parseCommandLine(nil)
	if err != nil || o.admin != "" || o.adminPprof || o.accessLog != "stderr" || o.logFormat.String() != "text" {
		t.Fatalf("defaults: admin %q pprof %v access log %q format %v (%v)", o.admin, o.adminPprof, o.accessLog, o.logFormat, err)
	}
	o, err = parseCommandLine([]string{"-listen", "127.0.0.1:8080", "-admin", "127.0.0.2:8080", "-admin-pprof",
		"-access-log", "/var/log/wsgate/access.log", "-log-format", "json"})
	if err != nil || o.admin != "127.0.0.2:8080" || !o.adminPprof || o.accessLog != "/var/log/wsgate/access.log" || o.logFormat.String() != "json" {
		t.Fatalf("admin %q pprof %v access log %q format %v (%v)", o.admin, o.adminPprof, o.accessLog, o.logFormat, err)
	}
	for _, ok := range [][]string{{"-admin", "127.0.0.1:9180"}, {"-listen", ":0", "-admin", ":0"}, {"-admin", "[::1]:9180"}} {
		if _, err := parseCommandLine(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
}
