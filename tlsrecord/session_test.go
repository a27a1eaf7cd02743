package tlsrecord

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"testing"
)

var allSuites = []uint16{TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256}

func secretFor(suite uint16, seed byte) []byte {
	s := make([]byte, suiteFor(suite).hashLen)
	for i := range s {
		s[i] = seed + byte(i)
	}
	return s
}

// pair returns a client and a server Session that talk to each other.
func pair(t testing.TB, suite uint16) (client, server *Session) {
	t.Helper()
	cs, ss := secretFor(suite, 1), secretFor(suite, 101)
	client, err := NewSession(Keys{Suite: suite, ReadSecret: ss, WriteSecret: cs, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	server, err = NewSession(Keys{Suite: suite, ReadSecret: cs, WriteSecret: ss})
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

// drain feeds in to s in chunks of the given size (0: all at once) and
// returns the concatenated plaintext and the events seen.
func drain(t testing.TB, s *Session, in []byte, chunk int) ([]byte, []Event, error) {
	t.Helper()
	var out []byte
	var evs []Event
	for len(in) > 0 {
		k := len(in)
		if chunk > 0 && chunk < k {
			k = chunk
		}
		piece := in[:k]
		in = in[k:]
		for {
			n, plain, ev, err := s.Open(piece)
			if err != nil {
				return out, evs, err
			}
			out = append(out, plain...)
			if ev != EventNone {
				evs = append(evs, ev)
			}
			piece = piece[n:]
			if n == 0 {
				break
			}
		}
		if s.Holding() && !s.Partial() {
			t.Fatal("buffer still borrowed after the final Open call")
		}
	}
	return out, evs, nil
}

func TestRoundTripAllSuitesAllSplits(t *testing.T) {
	for _, suite := range allSuites {
		for _, size := range []int{0, 1, 100, MaxPlaintext - 1, MaxPlaintext, MaxPlaintext + 1, 3*MaxPlaintext + 7} {
			for _, chunk := range []int{0, 1, 3, 5, 6, 1000, MaxRecord} {
				if chunk == 1 && size > 2*MaxPlaintext {
					continue
				}
				t.Run(fmt.Sprintf("%s/%d/%d", SuiteName(suite), size, chunk), func(t *testing.T) {
					c, s := pair(t, suite)
					msg := make([]byte, size)
					rand.Read(msg)
					wire, err := c.Seal(nil, msg)
					if err != nil {
						t.Fatal(err)
					}
					if want := size + (size+MaxPlaintext-1)/MaxPlaintext*Overhead; len(wire) != want {
						t.Fatalf("wire %d bytes, want %d", len(wire), want)
					}
					got, evs, err := drain(t, s, wire, chunk)
					if err != nil || !bytes.Equal(got, msg) || len(evs) != 0 {
						t.Fatalf("got %d bytes (want %d) evs %v err %v", len(got), size, evs, err)
					}
					if s.Partial() || s.Holding() {
						t.Fatal("state left after complete records")
					}
				})
			}
		}
	}
}

// sealRaw builds a record with arbitrary inner plaintext (content, type,
// padding), bypassing SealRecord's checks, to test what Open rejects.
func sealRaw(t testing.TB, st *State, inner []byte) []byte {
	t.Helper()
	if err := st.ready(); err != nil {
		t.Fatal(err)
	}
	if err := st.nextNonce(); err != nil {
		t.Fatal(err)
	}
	n := len(inner) + tagLen
	hdr := []byte{23, 3, 3, byte(n >> 8), byte(n)}
	return st.aead.Seal(hdr, st.nonce[:], inner, hdr)
}

func TestOpenRejects(t *testing.T) {
	suite := TLS_AES_128_GCM_SHA256
	good := func() (*Session, *State) {
		_, s := pair(t, suite)
		var w State
		w.Init(suite, secretFor(suite, 1))
		return s, &w
	}
	cases := []struct {
		name  string
		rec   func(w *State) []byte
		want  error
		alert Alert
	}{
		{"outer type handshake", func(w *State) []byte { r := sealRaw(t, w, []byte{1, 23}); r[0] = 22; return r }, ErrBadRecordType, AlertUnexpectedMessage},
		{"outer type change_cipher_spec", func(*State) []byte { return []byte{20, 3, 3, 0, 1, 1} }, ErrBadRecordType, AlertUnexpectedMessage},
		{"version 0x0301", func(w *State) []byte { r := sealRaw(t, w, []byte{1, 23}); r[2] = 1; return r }, ErrBadRecordVersion, AlertDecodeError},
		{"length 2^14+257", func(*State) []byte { return []byte{23, 3, 3, 0x41, 0x01} }, ErrRecordOverflow, AlertRecordOverflow},
		{"length 16", func(*State) []byte { return append([]byte{23, 3, 3, 0, 16}, make([]byte, 16)...) }, ErrShortRecord, AlertDecodeError},
		{"bad tag", func(w *State) []byte { r := sealRaw(t, w, []byte("hello\x17")); r[len(r)-1] ^= 1; return r }, ErrBadRecordMAC, AlertBadRecordMAC},
		{"bad header byte (AAD)", func(w *State) []byte {
			r := sealRaw(t, w, []byte("hello\x17"))
			r = append(r, 0)
			r[4]++ // the length is authenticated too
			return r
		}, ErrBadRecordMAC, AlertBadRecordMAC},
		{"all zeros", func(w *State) []byte { return sealRaw(t, w, make([]byte, 40)) }, ErrNoContentType, AlertUnexpectedMessage},
		{"inner 2^14+2", func(w *State) []byte {
			in := make([]byte, MaxPlaintext+2)
			in[MaxPlaintext+1] = 23
			return sealRaw(t, w, in)
		}, ErrInnerOverflow, AlertRecordOverflow},
		{"change_cipher_spec inside", func(w *State) []byte { return sealRaw(t, w, []byte{1, 20}) }, nil, AlertUnexpectedMessage},
		{"empty handshake", func(w *State) []byte { return sealRaw(t, w, []byte{22}) }, errEmptyHandshake, AlertUnexpectedMessage},
		{"fragmented KeyUpdate", func(w *State) []byte { return sealRaw(t, w, []byte{24, 0, 0, 1, 22}) }, errHandshakeFragment, AlertUnexpectedMessage},
		{"KeyUpdate then more", func(w *State) []byte { return sealRaw(t, w, []byte{24, 0, 0, 1, 0, 24, 0, 0, 1, 0, 22}) }, errKeyUpdateAlign, AlertUnexpectedMessage},
		{"KeyUpdate value 2", func(w *State) []byte { return sealRaw(t, w, []byte{24, 0, 0, 1, 2, 22}) }, errKeyUpdateValue, AlertIllegalParameter},
		{"KeyUpdate long", func(w *State) []byte { return sealRaw(t, w, []byte{24, 0, 0, 2, 0, 0, 22}) }, errKeyUpdateLen, AlertDecodeError},
		{"NewSessionTicket to a server", func(w *State) []byte { return sealRaw(t, w, []byte{4, 0, 0, 0, 22}) }, errTicketAtServer, AlertUnexpectedMessage},
		{"Finished after the handshake", func(w *State) []byte { return sealRaw(t, w, []byte{20, 0, 0, 0, 22}) }, nil, AlertUnexpectedMessage},
		{"alert of 3 bytes", func(w *State) []byte { return sealRaw(t, w, []byte{2, 40, 0, 21}) }, errAlertLen, AlertDecodeError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, w := good()
			rec := tc.rec(w)
			for _, chunk := range []int{0, 1} {
				s, _ = good()
				_, _, err := drain(t, s, append([]byte(nil), rec...), chunk)
				if err == nil {
					t.Fatalf("chunk %d: accepted", chunk)
				}
				if tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("chunk %d: err %v, want %v", chunk, err, tc.want)
				}
				if a, ok := AlertFor(err); !ok || a != tc.alert {
					t.Fatalf("chunk %d: alert %v %v, want %v", chunk, a, ok, tc.alert)
				}
				if s.Holding() {
					t.Fatal("buffer kept after a failure")
				}
				// Sticky: the next call fails the same way and consumes nothing.
				if n, _, _, err2 := s.Open([]byte{23}); err2 != err || n != 0 {
					t.Fatalf("not sticky: n=%d %v", n, err2)
				}
			}
		})
	}
}

// Nothing of a record that fails authentication is delivered, even when the
// records before it in the same read were good.
func TestBadTagDeliversNothingOfThatRecord(t *testing.T) {
	c, s := pair(t, TLS_CHACHA20_POLY1305_SHA256)
	wire, _ := c.Seal(nil, []byte("first"))
	wire, _ = c.Seal(wire, []byte("second"))
	wire[len(wire)-3] ^= 0x80
	got, _, err := drain(t, s, wire, 0)
	if !errors.Is(err, ErrBadRecordMAC) || string(got) != "first" {
		t.Fatalf("got %q err %v", got, err)
	}
	out, err := s.AppendAlert(nil, AlertBadRecordMAC)
	if err != nil {
		t.Fatal(err)
	}
	_, evs, err := drain(t, c, out, 0)
	var pe *PeerAlertError
	if !errors.As(err, &pe) || pe.Alert != AlertBadRecordMAC || len(evs) != 0 {
		t.Fatalf("client saw %v %v", evs, err)
	}
	if _, ok := AlertFor(err); ok {
		t.Fatal("a peer's fatal alert must not be answered")
	}
}

func TestPaddingAndEmptyRecords(t *testing.T) {
	c, s := pair(t, TLS_AES_256_GCM_SHA384)
	var wire []byte
	for _, pad := range []int{0, 1, 100, MaxPlaintext - 5} {
		rec := make([]byte, HeaderLen+5, HeaderLen+5+1+pad+tagLen)
		copy(rec[HeaderLen:], "hello")
		r, err := c.w.SealRecord(rec, ApplicationData, 5, pad)
		if err != nil {
			t.Fatal(err)
		}
		wire = append(wire, r...)
	}
	// Too much padding is refused at seal time.
	if _, err := c.w.SealRecord(make([]byte, 10, MaxRecord+100), ApplicationData, 5, MaxPlaintext); err == nil {
		t.Fatal("sealed 2^14+6 inner bytes")
	}
	// Empty application_data records are legal, up to a limit.
	for i := 0; i < maxUseless; i++ {
		wire, _ = c.w.AppendRecord(wire, ApplicationData, nil)
	}
	got, _, err := drain(t, s, wire, 7)
	if err != nil || string(got) != "hellohellohellohello" {
		t.Fatalf("got %q err %v", got, err)
	}
	wire, _ = c.w.AppendRecord(nil, ApplicationData, nil)
	if _, _, err := drain(t, s, wire, 0); !errors.Is(err, errUseless) {
		t.Fatalf("17th empty record in a row: %v", err)
	}
}

func TestCloseNotifyHalfClose(t *testing.T) {
	c, s := pair(t, TLS_AES_128_GCM_SHA256)
	wire, _ := c.Seal(nil, []byte("request"))
	wire, _ = c.AppendCloseNotify(wire)
	wire, _ = c.w.AppendRecord(wire, ApplicationData, []byte("after close_notify")) // must be ignored
	got, evs, err := drain(t, s, wire, 0)
	if err != nil || string(got) != "request" || len(evs) != 1 || evs[0] != EventCloseNotify {
		t.Fatalf("got %q evs %v err %v", got, evs, err)
	}
	// The server can still answer, then closes its side.
	out, err := s.Seal(nil, []byte("response"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ = s.AppendCloseNotify(out)
	got, evs, err = drain(t, c, out, 0)
	if err != nil || string(got) != "response" || len(evs) != 1 || evs[0] != EventCloseNotify {
		t.Fatalf("client got %q evs %v err %v", got, evs, err)
	}
	if _, err := s.AppendAlert(nil, AlertInternalError); err != ErrWriteClosed {
		t.Fatalf("alert after close_notify: %v", err)
	}
}

func TestKeyUpdate(t *testing.T) {
	for _, suite := range allSuites {
		t.Run(SuiteName(suite), func(t *testing.T) {
			c, s := pair(t, suite)
			old := append([]byte(nil), c.w.Secret()...)
			wire, _ := c.Seal(nil, []byte("a"))
			wire, err := c.AppendKeyUpdate(wire, true)
			if err != nil {
				t.Fatal(err)
			}
			next, _ := NextSecret(suite, old)
			if !bytes.Equal(c.w.Secret(), next) || c.w.Seq() != 0 {
				t.Fatal("writer did not move to the next secret at sequence 0")
			}
			wire, _ = c.Seal(wire, []byte("b"))
			got, evs, err := drain(t, s, wire, 0)
			if err != nil || string(got) != "ab" || len(evs) != 1 || evs[0] != EventKeyUpdateRequested {
				t.Fatalf("got %q evs %v err %v", got, evs, err)
			}
			if !s.KeyUpdatePending() {
				t.Fatal("no KeyUpdate owed")
			}
			// Our KeyUpdate goes out before our next data, exactly once.
			out, _ := s.Seal(nil, []byte("c"))
			out, _ = s.Seal(out, []byte("d"))
			got, evs, err = drain(t, c, out, 0)
			if err != nil || string(got) != "cd" || len(evs) != 1 || evs[0] != EventKeyUpdate {
				t.Fatalf("client got %q evs %v err %v", got, evs, err)
			}
			if s.KeyUpdatesIn != 1 || s.KeyUpdatesOut != 1 || c.KeyUpdatesIn != 1 || c.KeyUpdatesOut != 1 {
				t.Fatalf("counters %d/%d %d/%d", s.KeyUpdatesIn, s.KeyUpdatesOut, c.KeyUpdatesIn, c.KeyUpdatesOut)
			}
			// Flush sends an owed KeyUpdate with no data.
			wire, _ = c.AppendKeyUpdate(nil, true)
			drain(t, s, wire, 0)
			out, err = s.Flush(nil)
			if err != nil || len(out) != Overhead+5 {
				t.Fatalf("flush: %d bytes %v", len(out), err)
			}
			if _, evs, err = drain(t, c, out, 0); err != nil || len(evs) != 1 || evs[0] != EventKeyUpdate {
				t.Fatalf("flushed update: %v %v", evs, err)
			}
			if out, _ = s.Flush(nil); len(out) != 0 {
				t.Fatal("flushed twice")
			}
		})
	}
}

func TestKeyUpdateRateLimit(t *testing.T) {
	c, s := pair(t, TLS_AES_128_GCM_SHA256)
	// A burst of keyUpdateBurst is honoured, with some data in between.
	var wire []byte
	for i := 0; i < keyUpdateBurst; i++ {
		wire, _ = c.AppendKeyUpdate(wire, false)
		wire, _ = c.Seal(wire, []byte{'x'})
	}
	if _, _, err := drain(t, s, wire, 0); err != nil {
		t.Fatal(err)
	}
	// The next one needs 16 KiB of data first.
	wire, _ = c.AppendKeyUpdate(nil, false)
	if _, _, err := drain(t, s, wire, 0); !errors.Is(err, errKeyUpdateFlood) {
		t.Fatalf("9th KeyUpdate without data: %v", err)
	}
	c, s = pair(t, TLS_AES_128_GCM_SHA256)
	wire = nil
	for i := 0; i < keyUpdateBurst; i++ {
		wire, _ = c.AppendKeyUpdate(wire, false)
	}
	wire, _ = c.Seal(wire, make([]byte, 2*keyUpdateRefill))
	wire, _ = c.AppendKeyUpdate(wire, false)
	wire, _ = c.AppendKeyUpdate(wire, false)
	if _, _, err := drain(t, s, wire, 0); err != nil {
		t.Fatalf("KeyUpdates earned by data refused: %v", err)
	}
	// KeyUpdates alone also count as records without data.
	c, s = pair(t, TLS_AES_128_GCM_SHA256)
	s.kuTokens = 255
	wire = nil
	for i := 0; i <= maxUseless; i++ {
		wire, _ = c.AppendKeyUpdate(wire, false)
	}
	if _, _, err := drain(t, s, wire, 0); !errors.Is(err, errUseless) {
		t.Fatalf("17 KeyUpdates in a row: %v", err)
	}
}

// AES-GCM keys are retired after 2^24 records: Seal puts our own KeyUpdate
// in front of the next record.
func TestRekeyAfterGCMLimit(t *testing.T) {
	c, s := pair(t, TLS_AES_128_GCM_SHA256)
	c.w.SetSeq(1<<24 - 1)
	s.r.SetSeq(1<<24 - 1)
	wire, _ := c.Seal(nil, []byte("last"))
	wire, _ = c.Seal(wire, []byte("first under the new key"))
	got, evs, err := drain(t, s, wire, 0)
	if err != nil || string(got) != "lastfirst under the new key" || len(evs) != 1 || evs[0] != EventKeyUpdate || c.w.Seq() != 1 {
		t.Fatalf("got %q evs %v err %v seq %d", got, evs, err, c.w.Seq())
	}
	// ChaCha20-Poly1305 keeps its key.
	c, _ = pair(t, TLS_CHACHA20_POLY1305_SHA256)
	c.w.SetSeq(1 << 30)
	c.Seal(nil, []byte("x"))
	if c.KeyUpdatesOut != 0 {
		t.Fatal("ChaCha20 rekeyed")
	}
}

func TestSequenceNeverWraps(t *testing.T) {
	var st State
	st.Init(TLS_CHACHA20_POLY1305_SHA256, secretFor(TLS_CHACHA20_POLY1305_SHA256, 9))
	st.SetSeq(math.MaxUint64 - 1)
	if _, err := st.AppendRecord(nil, ApplicationData, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AppendRecord(nil, ApplicationData, []byte("x")); !errors.Is(err, ErrSeqExhausted) {
		t.Fatalf("seal at 2^64-1: %v", err)
	}
	if st.Seq() != math.MaxUint64 {
		t.Fatal("sequence moved")
	}
	var rd State
	rd.Init(TLS_CHACHA20_POLY1305_SHA256, secretFor(TLS_CHACHA20_POLY1305_SHA256, 9))
	rd.SetSeq(math.MaxUint64)
	if _, _, _, err := rd.Open([]byte{23, 3, 3, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}); !errors.Is(err, ErrSeqExhausted) {
		t.Fatalf("open at 2^64-1: %v", err)
	}
}

func TestShrinkRebuilds(t *testing.T) {
	for _, suite := range allSuites {
		c, s := pair(t, suite)
		wire, _ := c.Seal(nil, []byte("one"))
		drain(t, s, wire, 0)
		s.Shrink()
		c.Shrink()
		if !s.r.Dropped() || !s.w.Dropped() {
			t.Fatal("AEADs kept")
		}
		wire, _ = c.Seal(nil, []byte("two"))
		got, _, err := drain(t, s, wire, 0)
		if err != nil || string(got) != "two" {
			t.Fatalf("%s after Shrink: %q %v", SuiteName(suite), got, err)
		}
	}
	// Not while a record is half in.
	c, s := pair(t, TLS_AES_128_GCM_SHA256)
	wire, _ := c.Seal(nil, make([]byte, 100))
	s.Open(wire[:50])
	s.Shrink()
	if s.r.Dropped() {
		t.Fatal("dropped with a partial record")
	}
}

// The property: no (key, nonce) pair is ever sealed twice, across seals,
// KeyUpdates both ways, Shrink, and sessions created from the same secrets
// whose write sequence was established after records someone else sealed
// under the same key (crypto/tls's NewSessionTicket). Every seal of every
// State is observed through sealHook.
func TestNoNonceReuse(t *testing.T) {
	for _, suite := range allSuites {
		t.Run(SuiteName(suite), func(t *testing.T) {
			seen := map[string]int{}
			total := 0
			hook := func(key, nonce []byte) {
				seen[string(key)+"|"+string(nonce)]++
				total++
			}
			rng := mrand.New(mrand.NewPCG(uint64(suite), 7))
			cs, ss := secretFor(suite, 1), secretFor(suite, 101)
			for conn := 0; conn < 4; conn++ {
				// crypto/tls's part: it seals k tickets under the server's
				// application key, then the session takes over at sequence k.
				if conn > 0 {
					// Every connection has its own secrets, as TLS does.
					cs, ss = secretFor(suite, byte(conn*7+1)), secretFor(suite, byte(conn*7+101))
				}
				k := rng.IntN(3)
				var tls State
				tls.sealHook = hook
				tls.Init(suite, ss)
				for i := 0; i < k; i++ {
					tls.AppendRecord(nil, Handshake, []byte{4, 0, 0, 0})
				}
				var c, s Session
				if err := c.Init(Keys{Suite: suite, ReadSecret: ss, WriteSecret: cs, ReadSeq: uint64(k), Client: true}); err != nil {
					t.Fatal(err)
				}
				if err := s.Init(Keys{Suite: suite, ReadSecret: cs, WriteSecret: ss, WriteSeq: uint64(k)}); err != nil {
					t.Fatal(err)
				}
				c.r.sealHook, c.w.sealHook, s.r.sealHook, s.w.sealHook = hook, hook, hook, hook
				for op := 0; op < 400; op++ {
					a, b := &c, &s
					if rng.IntN(2) == 0 {
						a, b = b, a
					}
					var wire []byte
					var err error
					switch rng.IntN(10) {
					case 0:
						wire, err = a.AppendKeyUpdate(nil, rng.IntN(2) == 0)
					case 1:
						a.Shrink()
						continue
					default:
						wire, err = a.Seal(nil, make([]byte, rng.IntN(40000)))
					}
					if err != nil {
						t.Fatal(err)
					}
					b.kuTokens = keyUpdateBurst // this test is not about the rate limit
					b.useless = 0
					if _, _, err := drain(t, b, wire, rng.IntN(3)*rng.IntN(5000)); err != nil {
						t.Fatalf("conn %d op %d: %v", conn, op, err)
					}
				}
			}
			for k, n := range seen {
				if n > 1 {
					t.Fatalf("(key, nonce) %x sealed %d times", k, n)
				}
			}
			if total < 1000 {
				t.Fatalf("only %d seals observed", total)
			}
		})
	}
}

// The tracker above can fail: a session that assumes write sequence 0 after
// a ticket reuses the ticket's nonce, and the hook sees it.
func TestNoNonceReuseDetectsAssumedZero(t *testing.T) {
	suite := TLS_AES_128_GCM_SHA256
	seen := map[string]int{}
	hook := func(key, nonce []byte) { seen[string(key)+"|"+string(nonce)]++ }
	var tls State
	tls.sealHook = hook
	tls.Init(suite, secretFor(suite, 5))
	tls.AppendRecord(nil, Handshake, []byte{4, 0, 0, 0})
	var s Session
	s.Init(Keys{Suite: suite, ReadSecret: secretFor(suite, 6), WriteSecret: secretFor(suite, 5)}) // WriteSeq wrongly 0
	s.w.sealHook = hook
	s.Seal(nil, []byte("x"))
	reused := false
	for _, n := range seen {
		reused = reused || n > 1
	}
	if !reused {
		t.Fatal("reuse not detected")
	}
}
