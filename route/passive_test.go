package route

import (
	"testing"
	"time"
)

// Passive health driven by an injected clock (the now argument).
func TestPassiveBackoff(t *testing.T) {
	m := newMember("127.0.0.1:1", 0, PassiveHealth{})
	s := int64(time.Second)
	now := 100 * s
	// Two failures: still usable (suspect); the third takes it out for 1s.
	if m.ReportFailure(now) || m.ReportFailure(now) || !m.Usable(now) {
		t.Fatal("out before the third failure")
	}
	if !m.ReportFailure(now) {
		t.Fatal("third failure did not take the member out")
	}
	if m.Usable(now) || m.Usable(now+s-1) || !m.Usable(now+s) {
		t.Fatalf("1s back-off: usable at +0 %v, +1s-1 %v, +1s %v", m.Usable(now), m.Usable(now+s-1), m.Usable(now+s))
	}
	// Failures of attempts that started before it went down change nothing.
	if m.ReportFailure(now+s/2) || m.Health().DownUntil != now+s {
		t.Fatalf("a late failure extended the back-off: %+v", m.Health())
	}
	// Probation: each failure after a back-off doubles it: 2s, 4s, ... 30s.
	want := []int64{2, 4, 8, 16, 30, 30}
	for _, w := range want {
		now = m.Health().DownUntil
		if !m.Usable(now) {
			t.Fatal("not usable when its back-off ended")
		}
		if !m.ReportFailure(now) {
			t.Fatal("a failure on probation did not take the member out")
		}
		if got := m.Health().DownUntil - now; got != w*s {
			t.Fatalf("back-off %v, want %ds", time.Duration(got), w)
		}
	}
	// A success brings it back at once and resets the back-off.
	if !m.ReportSuccess() || !m.Usable(now) {
		t.Fatal("success did not bring the member back")
	}
	if h := m.Health(); h.Fails != 0 || h.DownUntil != 0 || h.Backoff != int64(time.Second) {
		t.Fatalf("after success: %+v", h)
	}
	if m.ReportSuccess() {
		t.Fatal("a second success reported a comeback")
	}
	// A success between failures resets the count: failures must be consecutive.
	m.ReportFailure(now)
	m.ReportFailure(now)
	m.ReportSuccess()
	if m.ReportFailure(now) || m.ReportFailure(now) || !m.Usable(now) {
		t.Fatal("failures separated by a success counted together")
	}
}

func TestPassiveConfig(t *testing.T) {
	m := newMember("127.0.0.1:1", 0, PassiveHealth{Failures: 1, Backoff: 100 * time.Millisecond, MaxBackoff: 250 * time.Millisecond})
	if !m.ReportFailure(0) {
		t.Fatal("Failures=1: one failure should take the member out")
	}
	var got []time.Duration
	for i := 0; i < 4; i++ {
		now := m.Health().DownUntil
		m.ReportFailure(now)
		got = append(got, time.Duration(m.Health().DownUntil-now))
	}
	want := []time.Duration{200 * time.Millisecond, 250 * time.Millisecond, 250 * time.Millisecond, 250 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("back-offs %v, want %v", got, want)
		}
	}
}
