package tlsrecord

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// A server session is exported in every interesting state (a record cut anywhere: in its header,
// right after it, in its body; a KeyUpdate owed to the peer; after KeyUpdates both ways; shrunk)
// and restored: the restored session opens the rest of the cut record, answers with the
// KeyUpdate it owed, seals at the next sequence number, honours a KeyUpdate the peer sends
// afterwards, and says close_notify. The exported one is closed, as the old process does.
func TestSessionStateCarriesOn(t *testing.T) {
	for _, suite := range allSuites {
		for _, cut := range []int{0, 1, HeaderLen, HeaderLen + 1, HeaderLen + 100, -1} {
			for _, owe := range []bool{false, true} {
				for _, shrink := range []bool{false, true} {
					name := fmt.Sprintf("%#04x/cut%d/owe%v/shrink%v", suite, cut, owe, shrink)
					t.Run(name, func(t *testing.T) { carryOn(t, suite, cut, owe, shrink) })
				}
			}
		}
	}
}

func carryOn(t *testing.T, suite uint16, cut int, owe, shrink bool) {
	c, s := pair(t, suite)
	// Some traffic both ways and a KeyUpdate each way first: the secrets that travel are the
	// current ones, not the handshake's.
	wire, _ := c.Seal(nil, []byte("first"))
	wire, _ = c.AppendKeyUpdate(wire, false)
	wire, _ = c.Seal(wire, []byte("second"))
	if got, _, err := drain(t, s, wire, 0); err != nil || string(got) != "firstsecond" {
		t.Fatalf("before: %q %v", got, err)
	}
	back, _ := s.AppendKeyUpdate(nil, false)
	back, _ = s.Seal(back, []byte("ok"))
	if got, _, err := drain(t, c, back, 0); err != nil || string(got) != "ok" {
		t.Fatalf("before, back: %q %v", got, err)
	}
	if owe {
		ku, _ := c.AppendKeyUpdate(nil, true)
		if _, evs, err := drain(t, s, ku, 0); err != nil || len(evs) != 1 || evs[0] != EventKeyUpdateRequested {
			t.Fatalf("update_requested: %v %v", evs, err)
		}
	}
	msg := bytes.Repeat([]byte("0123456789"), 300)
	rec, _ := c.Seal(nil, msg)
	if cut < 0 {
		cut = len(rec) - 1
	}
	head, tail := rec[:cut], rec[cut:]
	if got, _, err := drain(t, s, head, 0); err != nil || len(got) != 0 {
		t.Fatalf("head of the cut record: %q %v", got, err)
	}
	if shrink {
		s.Shrink()
	}
	state, err := s.AppendState(nil)
	if err != nil {
		t.Fatal(err)
	}
	rs, ws := s.ReadState().Seq(), s.WriteState().Seq()
	s.Close()

	s2, err := RestoreSession(state)
	if err != nil {
		t.Fatal(err)
	}
	clear(state)
	defer s2.Close()
	if s2.ReadState().Seq() != rs || s2.WriteState().Seq() != ws || s2.KeyUpdatePending() != owe || s2.Partial() != (cut > 0) {
		t.Fatalf("restored: seq %d/%d (want %d/%d), owe %v, partial %v", s2.ReadState().Seq(), s2.WriteState().Seq(), rs, ws, s2.KeyUpdatePending(), s2.Partial())
	}
	if s2.KeyUpdatesIn != s.KeyUpdatesIn || s2.KeyUpdatesOut != s.KeyUpdatesOut {
		t.Fatalf("KeyUpdate counters %d/%d, want %d/%d", s2.KeyUpdatesIn, s2.KeyUpdatesOut, s.KeyUpdatesIn, s.KeyUpdatesOut)
	}
	if got, _, err := drain(t, s2, tail, 7); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("the rest of the cut record: %d bytes, %v", len(got), err)
	}
	out, err := s2.Seal(nil, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	got, evs, err := drain(t, c, out, 0)
	if err != nil || string(got) != "after" {
		t.Fatalf("the peer opens what the restored session seals: %q %v", got, err)
	}
	if owe != (len(evs) == 1 && evs[0] == EventKeyUpdate) {
		t.Fatalf("the owed KeyUpdate: events %v, owed %v", evs, owe)
	}
	ku, _ := c.AppendKeyUpdate(nil, true)
	ku, _ = c.Seal(ku, []byte("rekeyed"))
	if got, evs, err := drain(t, s2, ku, 3); err != nil || string(got) != "rekeyed" || len(evs) != 1 || evs[0] != EventKeyUpdateRequested {
		t.Fatalf("a KeyUpdate after the restore: %q %v %v", got, evs, err)
	}
	out, _ = s2.Seal(nil, []byte("done"))
	out, _ = s2.AppendCloseNotify(out)
	if got, evs, err := drain(t, c, out, 0); err != nil || string(got) != "done" || evs[len(evs)-1] != EventCloseNotify {
		t.Fatalf("close: %q %v %v", got, evs, err)
	}
}

// A state carries the half-closed and client flags, and a restored session exports the same
// bytes again (the format is canonical).
func TestSessionStateFlagsAndCanonical(t *testing.T) {
	c, s := pair(t, TLS_CHACHA20_POLY1305_SHA256)
	cn, _ := c.AppendCloseNotify(nil)
	if _, evs, err := drain(t, s, cn, 0); err != nil || len(evs) != 1 {
		t.Fatalf("close_notify: %v %v", evs, err)
	}
	if _, err := s.AppendCloseNotify(nil); err != nil {
		t.Fatal(err)
	}
	for _, sess := range []*Session{s, c} {
		st, err := sess.AppendState(nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := RestoreSession(st)
		if err != nil {
			t.Fatal(err)
		}
		if r.ReadClosed() != sess.ReadClosed() || r.WriteClosed() != sess.WriteClosed() || r.flags&flagClient != sess.flags&flagClient {
			t.Fatalf("flags: restored %#x, was %#x", r.flags, sess.flags)
		}
		again, _ := r.AppendState(nil)
		if !bytes.Equal(again, st) {
			t.Fatal("a restored session exports other bytes")
		}
	}
	if _, err := s.Seal(nil, []byte("x")); err == nil {
		t.Fatal("sealed after close_notify")
	}
}

// Refused: a failed session (export), and on restore an unknown version, every truncation, a
// secret of the wrong length, an unknown suite, a body held without its header, a complete
// record held as partial, bytes left over.
func TestSessionStateRefuses(t *testing.T) {
	c, s := pair(t, TLS_AES_128_GCM_SHA256)
	rec, _ := c.Seal(nil, []byte("hello"))
	state, err := s.AppendState(nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(state); n++ {
		if _, err := RestoreSession(state[:n]); err == nil {
			t.Fatalf("a state cut at %d of %d bytes restored", n, len(state))
		}
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), state...)) }
	for name, b := range map[string][]byte{
		"version":   mut(func(b []byte) []byte { b[0] = 9; return b }),
		"suite":     mut(func(b []byte) []byte { b[1], b[2] = 0x13, 0x09; return b }),
		"flags":     mut(func(b []byte) []byte { b[3] = 0x80; return b }),
		"tokens":    mut(func(b []byte) []byte { b[5] = keyUpdateBurst + 1; return b }),
		"secretLen": mut(func(b []byte) []byte { b[34] = 48; return b }),
		"bodyNoHdr": mut(func(b []byte) []byte {
			i := len(b) - 4
			b[i+3] = 1
			return append(b, 0)
		}),
		"hdrZeroes": mut(func(b []byte) []byte { b[len(b)-4-HeaderLen] = 1; return b }),
		"trailing":  mut(func(b []byte) []byte { return append(b, 0) }),
	} {
		if _, err := RestoreSession(b); err == nil {
			t.Errorf("%s: restored", name)
		}
	}
	// A complete record cannot be held as partial.
	if _, _, err := drain(t, s, rec[:len(rec)-1], 0); err != nil {
		t.Fatal(err)
	}
	st, _ := s.AppendState(nil)
	i := len(st) - (len(rec) - HeaderLen - 1) - 4
	st[i+3]++ // one more body byte announced ...
	st = append(st, 0)
	if _, err := RestoreSession(st); err == nil {
		t.Fatal("a complete record held as partial restored")
	}
	// A failed session is not exported.
	bad := append([]byte(nil), rec...)
	bad[len(bad)-1] ^= 1
	_, srv := pair(t, TLS_AES_128_GCM_SHA256)
	if _, _, err := drain(t, srv, bad, 0); err == nil {
		t.Fatal("a tampered record opened")
	}
	if _, err := srv.AppendState(nil); err == nil {
		t.Fatal("a failed session exported")
	}
}

// FuzzRestoreSession: any bytes either restore into a session that exports exactly those bytes
// again, or are refused; never a panic.
func FuzzRestoreSession(f *testing.F) {
	for _, s := range restoreSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := RestoreSession(data)
		if err != nil {
			return
		}
		defer s.Close()
		again, err := s.AppendState(nil)
		if err != nil {
			t.Fatalf("a restored session does not export: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("not canonical:\n in %x\nout %x", data, again)
		}
	})
}

type restoreSeed struct {
	name string
	data []byte
}

func restoreSeeds() []restoreSeed {
	var seeds []restoreSeed
	for _, suite := range allSuites {
		cs, ss := secretFor(suite, 1), secretFor(suite, 101)
		c, _ := NewSession(Keys{Suite: suite, ReadSecret: ss, WriteSecret: cs, Client: true})
		s, _ := NewSession(Keys{Suite: suite, ReadSecret: cs, WriteSecret: ss, ReadSeq: 3, WriteSeq: 5})
		idle, _ := s.AppendState(nil)
		seeds = append(seeds, restoreSeed{fmt.Sprintf("idle-%04x", suite), idle})
		rec, _ := c.Seal(nil, []byte("partial record"))
		s.Open(rec[:HeaderLen+4])
		part, _ := s.AppendState(nil)
		seeds = append(seeds, restoreSeed{fmt.Sprintf("partial-%04x", suite), part})
	}
	return seeds
}

// TestWriteRestoreSeeds regenerates testdata/fuzz/FuzzRestoreSession (run with
// WSGATE_WRITE_FUZZ_SEEDS=1 after changing the seeds above).
func TestWriteRestoreSeeds(t *testing.T) {
	if os.Getenv("WSGATE_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set WSGATE_WRITE_FUZZ_SEEDS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRestoreSession")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range restoreSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.data)
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
