package loop

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/httpparse"
)

// A refused request is answered with the parser's status and reason, so whoever sent it can tell
// what to fix, and the backend sees nothing.
func TestRejectNamesTheReason(t *testing.T) {
	var mu sync.Mutex
	seen := 0
	be := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		mu.Lock()
		seen++
		mu.Unlock()
	})
	s := startTestProxy(t, be)
	for _, tc := range []struct{ req, status, reason string }{
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400 Bad Request", "Host"},
		{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "505 HTTP Version Not Supported", "version"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "400 Bad Request", "Content-Length"},
	} {
		c := dial(t, s.Addr())
		resp, body := c.roundTrip(t, tc.req, "GET")
		if resp.Status != tc.status || !resp.Close {
			t.Fatalf("%q: got %q close=%v, want %q and close", tc.req, resp.Status, resp.Close, tc.status)
		}
		if !bytes.HasPrefix(body, []byte(tc.status+": ")) || !strings.Contains(strings.ToLower(string(body)), strings.ToLower(tc.reason)) {
			t.Fatalf("%q: body %q does not name the reason (%q)", tc.req, body, tc.reason)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen != 0 {
		t.Fatalf("backend accepted %d connections for refused requests", seen)
	}
}

func TestRejectResponseAllocatesOncePerKind(t *testing.T) {
	var p httpparse.Parser
	p.Limits = httpparse.DefaultLimits()
	var req httpparse.Request
	_, err := p.ParseRequest([]byte("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), &req)
	if err == nil {
		t.Fatal("duplicate Host accepted")
	}
	first := rejectResponse(err)
	if allocs := testing.AllocsPerRun(100, func() { _ = rejectResponse(err) }); allocs != 0 {
		t.Fatalf("rejectResponse allocates %v per call after the first", allocs)
	}
	if again := rejectResponse(err); &again[0] != &first[0] {
		t.Fatal("the cached answer was rebuilt")
	}
}

// warnLimiter: one line per interval, and the next line counts what was held back.
func TestWarnLimiter(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l := warnLimiter{interval: time.Second}
	t0 := int64(10 * time.Second)
	l.warn(log, t0, "backend unavailable")
	for i := 1; i <= 5; i++ {
		l.warn(log, t0+int64(i)*int64(100*time.Millisecond), "backend unavailable")
	}
	l.warn(log, t0+int64(time.Second), "backend unavailable")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "similar_suppressed") || !strings.Contains(lines[1], "similar_suppressed=5") {
		t.Fatalf("suppressed count not carried on the next line:\n%s", buf.String())
	}
}
