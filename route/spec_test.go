package route

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Spec
	}{
		{"/=127.0.0.1:3000", Spec{Prefix: "/", Backends: []string{"127.0.0.1:3000"}}},
		{"/loki/=127.0.0.1:3100,127.0.0.1:3101", Spec{Prefix: "/loki/", Backends: []string{"127.0.0.1:3100", "127.0.0.1:3101"}}},
		{"/loki/=127.0.0.1:3100, 127.0.0.1:3101", Spec{Prefix: "/loki/", Backends: []string{"127.0.0.1:3100", "127.0.0.1:3101"}}},
		{"logs.example.com/=127.0.0.1:3100", Spec{Host: "logs.example.com", Prefix: "/", Backends: []string{"127.0.0.1:3100"}}},
		{"Logs.Example.COM./api=localhost:80", Spec{Host: "logs.example.com", Prefix: "/api", Backends: []string{"localhost:80"}}},
		{"*.example.com/api/=[::1]:8080", Spec{Host: "*.example.com", Prefix: "/api/", Backends: []string{"[::1]:8080"}}},
		{"[::1]/=127.0.0.1:1", Spec{Host: "[::1]", Prefix: "/", Backends: []string{"127.0.0.1:1"}}},
		{"[2001:DB8::1]/x=127.0.0.1:1", Spec{Host: "[2001:db8::1]", Prefix: "/x", Backends: []string{"127.0.0.1:1"}}},
		{"10.0.0.1/=127.0.0.1:1", Spec{Host: "10.0.0.1", Prefix: "/", Backends: []string{"127.0.0.1:1"}}},
		{"/a=b/=127.0.0.1:1", Spec{Prefix: "/a=b/", Backends: []string{"127.0.0.1:1"}}},
		{"/%7Euser/=127.0.0.1:1", Spec{Prefix: "/%7Euser/", Backends: []string{"127.0.0.1:1"}}},
	} {
		got, err := ParseSpec(tc.in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseSpec(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `route "": want [HOST]/PREFIX=ADDR[,ADDR...]`},
		{"/", `route "/": want [HOST]/PREFIX=ADDR`},
		{"/=", `route "/=": no backend after '='`},
		{"=127.0.0.1:1", `match "": no path prefix`},
		{"example.com=127.0.0.1:1", `match "example.com": no path prefix (write "example.com/" for the whole host)`},
		{"/=127.0.0.1", `backend "127.0.0.1": missing port in address`},
		{"/=127.0.0.1:0", `backend "127.0.0.1:0": port "0": want 1-65535`},
		{"/=127.0.0.1:http", `port "http": want 1-65535`},
		{"/=:3000", `backend ":3000": no host (write 127.0.0.1:3000 for this machine)`},
		{"/=127.0.0.1:1,", `empty backend address`},
		{"/=[::1:1", `backend "[::1:1"`},
		{"/=bad_host!:1", `backend "bad_host!:1": bad host name`},
		{"example.com:8080/=127.0.0.1:1", `a port is ignored for matching, leave it out`},
		{"[::1]:8080/=127.0.0.1:1", `nothing may follow the IPv6 literal`},
		{"[::1/=127.0.0.1:1", `unterminated IPv6 literal`},
		{"[]/=127.0.0.1:1", `empty IPv6 literal`},
		{"[g::1]/=127.0.0.1:1", `'g' is not allowed in an IPv6 literal`},
		{"*/=127.0.0.1:1", `'*' is only allowed as the whole first label`},
		{"a.*.com/=127.0.0.1:1", `'*' is only allowed as the whole first label`},
		{"*a.com/=127.0.0.1:1", `'*' is only allowed as the whole first label`},
		{"a..com/=127.0.0.1:1", `empty label`},
		{"\u212aelvin.com/=127.0.0.1:1", `non-ASCII byte (write internationalized names in punycode`},
		{"exa mple.com/=127.0.0.1:1", `' ' is not allowed in a host name`},
		{"/a b=127.0.0.1:1", `byte 0x20 is not allowed in a path`},
		{"/a?b=127.0.0.1:1", `'?' is not part of a path`},
		{"/api/*=127.0.0.1:1", `no wildcards in prefixes`},
		{"/caf\u00e9/=127.0.0.1:1", `byte 0xc3 is not allowed in a path (percent-encode it as clients do)`},
		{strings.Repeat("a", 64) + ".com/=127.0.0.1:1", `label longer than 63 characters`},
	} {
		_, err := ParseSpec(tc.in)
		if err == nil {
			t.Errorf("ParseSpec(%q): no error, want %q", tc.in, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSpec(%q) = %q, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestParseBalance(t *testing.T) {
	for _, b := range []Balance{LeastConn, RoundRobin, ClientHash} {
		got, err := ParseBalance(b.String())
		if err != nil || got != b {
			t.Errorf("ParseBalance(%q) = %v, %v", b.String(), got, err)
		}
	}
	if _, err := ParseBalance("random"); err == nil || err.Error() != `balance "random": want least-conn, round-robin or client-hash` {
		t.Errorf("ParseBalance(random) = %v", err)
	}
}

func TestValidateErrors(t *testing.T) {
	p := func(s string) *string { return &s }
	spec := func(s string) Spec {
		sp, err := ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	a, b, c := spec("/=127.0.0.1:1"), spec("/=127.0.0.1:2"), spec("example.com/=127.0.0.1:1,127.0.0.1:1")
	h1, h2 := spec("/x/=127.0.0.1:5"), spec("/y/=127.0.0.1:5")
	h1.HealthPath, h2.HealthPath = p("/ready"), p("/health")
	errs := Validate([]Spec{a, b, c, h1, h2, {Host: "Example.com", Prefix: "/"}})
	want := []string{
		`route #2 (/=127.0.0.1:2): duplicate route: / is also route #1`,
		`route #3 (example.com/=127.0.0.1:1,127.0.0.1:1): backend 127.0.0.1:1 is listed twice`,
		`route #5 (/y/=127.0.0.1:5): backend 127.0.0.1:5 is shared with route #4, which probes "/ready"; shared backends are one member: set the same health_path`,
		`route #6 (Example.com/=): host "Example.com" is not in stored form (want "example.com")`,
		`route #6 (Example.com/=): no backends`,
	}
	if len(errs) != len(want) {
		t.Fatalf("Validate: %d errors, want %d: %v", len(errs), len(want), errs)
	}
	for i, err := range errs {
		if err.Error() != want[i] {
			t.Errorf("error %d = %q\nwant %q", i, err, want[i])
		}
	}
	if f := errs[2].(*SpecError).Field; f != "health_path" {
		t.Errorf("field = %q", f)
	}
}

func TestNewTableDefaultsErrors(t *testing.T) {
	specs := []Spec{{Prefix: "/", Backends: []string{"127.0.0.1:1"}}}
	_, err := NewTable(specs, Defaults{HealthPath: "ready", HealthInterval: time.Millisecond, SourceAddrs: []netip.Addr{netip.IPv4Unspecified()}}, nil)
	want := "default health path: health path \"ready\": must start with '/'\n" +
		"default source addresses: source address 0.0.0.0: unspecified (leave source_addresses out to let the kernel choose)\n" +
		"default health interval 1ms: want 10ms or more"
	if err == nil || err.Error() != want {
		t.Errorf("NewTable = %v\nwant %s", err, want)
	}
}
