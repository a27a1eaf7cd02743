package loop

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/httpparse"
)

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

// The monotonic clock starts near 0: the first line must not count as "too soon after line 0".
func TestWarnLimiterFirstLineEarly(t *testing.T) {
	var buf bytes.Buffer
	l := warnLimiter{interval: time.Second}
	l.warn(slog.New(slog.NewTextHandler(&buf, nil)), int64(time.Millisecond), "backend unavailable")
	if !strings.Contains(buf.String(), "backend unavailable") {
		t.Fatal("the first line, 1 ms after start, was suppressed")
	}
}
