package loop

import (
	"net/netip"
	"strings"
	"testing"
)

// The tunnel's log record survives packing for every kind of client address and any target.
func TestTunnelRecRoundTrip(t *testing.T) {
	long := "/loki/api/v1/tail?query=" + strings.Repeat("%7Bjob%3D%22x%22%7D", 300)
	for _, c := range []struct {
		addr           netip.AddrPort
		route, backend int
		target         string
	}{
		{netip.MustParseAddrPort("192.0.2.7:51234"), 1, 0, "/api/live/ws"},
		{netip.MustParseAddrPort("[2001:db8::1]:443"), 7, 12, long},
		{netip.MustParseAddrPort("[::ffff:192.0.2.7]:80"), 0, 1<<31 - 1, ""},
		{netip.AddrPort{}, 3, 4, "/x\x00\xff"},
	} {
		rec := packTunnelRec(c.addr, c.route, c.backend, []byte(c.target))
		if len(rec) != tunnelRecHead+len(c.target) {
			t.Errorf("%v: record of %d bytes", c.addr, len(rec))
		}
		a, r, b, tg := unpackTunnelRec(rec)
		if a != c.addr || r != c.route || b != c.backend || tg != c.target {
			t.Errorf("%v %d %d %q: got %v %d %d %q", c.addr, c.route, c.backend, c.target, a, r, b, tg)
		}
	}
}

func TestRequestLine(t *testing.T) {
	for in, want := range map[string][2]string{
		"GET /a?b HTTP/1.1\r\nHost: x\r\n": {"GET", "/a?b"},
		"GET /only-target\r\n":             {"GET", "/only-target"},
		"GARBAGE\r\n":                      {"GARBAGE", ""},
		"\x16\x03\x01\x02\x00 more":        {"\x16\x03\x01\x02\x00", "more"},
		"GET /cut":                         {"GET", "/cut"},
		"":                                 {"", ""},
	} {
		m, tg := requestLine([]byte(in), 64)
		if string(m) != want[0] || string(tg) != want[1] {
			t.Errorf("%q: %q %q, want %q %q", in, m, tg, want[0], want[1])
		}
	}
	if m, tg := requestLine([]byte("GET /"+strings.Repeat("a", 100)+" HTTP/1.1\r\n"), 20); string(m) != "GET" || len(tg) != 16 {
		t.Errorf("capped: %q %q", m, tg)
	}
}
