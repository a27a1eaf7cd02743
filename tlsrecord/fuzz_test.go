package tlsrecord

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

const fuzzSuite = TLS_AES_128_GCM_SHA256

// fuzzPeers are the fixed keys every fuzz input is opened with, so seeds
// made of valid records reach past authentication into the inner parsing.
func fuzzPeers(client bool) (writer, reader *Session) {
	cs, ss := secretFor(fuzzSuite, 1), secretFor(fuzzSuite, 101)
	w, _ := NewSession(Keys{Suite: fuzzSuite, ReadSecret: ss, WriteSecret: cs, Client: true})
	r, _ := NewSession(Keys{Suite: fuzzSuite, ReadSecret: cs, WriteSecret: ss, Client: client})
	return w, r
}

// FuzzOpenRecord feeds arbitrary bytes, in chunks of an arbitrary size, to
// Session.Open: it must never panic, never consume more than it was given,
// never return more plaintext than it consumed, keep errors sticky, and
// always return the borrowed buffer by the final call.
func FuzzOpenRecord(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.data, s.chunk, s.client)
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16, client bool) {
		_, s := fuzzPeers(client)
		in := append([]byte(nil), data...)
		step := int(chunk)
		if step == 0 {
			step = len(in) + 1
		}
		consumed, plainTotal := 0, 0
		var failed error
		for off := 0; off < len(in); off += step {
			piece := in[off:min(off+step, len(in))]
			for {
				n, plain, _, err := s.Open(piece)
				if n < 0 || n > len(piece) {
					t.Fatalf("consumed %d of %d", n, len(piece))
				}
				if len(plain) > MaxPlaintext {
					t.Fatalf("%d bytes of plaintext from one record", len(plain))
				}
				consumed += n
				plainTotal += len(plain)
				if err != nil {
					if failed != nil && err != failed {
						t.Fatalf("error changed: %v then %v", failed, err)
					}
					failed = err
					if _, ok := AlertFor(err); !ok && !isPeerAlert(err) {
						t.Fatalf("error without an alert: %v", err)
					}
					break
				}
				piece = piece[n:]
				if n == 0 {
					break
				}
			}
			if failed != nil {
				break
			}
			if s.Holding() && !s.Partial() {
				t.Fatal("buffer held between reads without a partial record")
			}
		}
		if plainTotal > consumed {
			t.Fatalf("%d plaintext bytes from %d consumed", plainTotal, consumed)
		}
		if failed != nil && s.Holding() {
			t.Fatal("buffer held after a failure")
		}
		s.Close()
	})
}

func isPeerAlert(err error) bool {
	_, ok := err.(*PeerAlertError)
	return ok
}

// FuzzSealOpen: any content, padding and type the sealer accepts comes back
// out of Open unchanged whatever the chunking.
func FuzzSealOpen(f *testing.F) {
	f.Add([]byte("hello"), uint16(0), uint16(0))
	f.Add(bytes.Repeat([]byte{0}, 100), uint16(7), uint16(1))
	f.Add([]byte{}, uint16(3), uint16(5))
	f.Fuzz(func(t *testing.T, content []byte, pad uint16, chunk uint16) {
		if len(content) > MaxPlaintext {
			content = content[:MaxPlaintext]
		}
		w, r := fuzzPeers(false)
		p := int(pad) % (MaxPlaintext + 1 - len(content))
		rec := make([]byte, HeaderLen+len(content), HeaderLen+len(content)+1+p+tagLen)
		copy(rec[HeaderLen:], content)
		rec, err := w.w.SealRecord(rec, ApplicationData, len(content), p)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := drain(t, r, rec, int(chunk))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Fatalf("round trip changed %d bytes", len(content))
		}
	})
}

type fuzzSeed struct {
	name   string
	data   []byte
	chunk  uint16
	client bool
}

// fuzzSeeds are valid and near-valid streams under the fuzz keys.
func fuzzSeeds() []fuzzSeed {
	w, _ := fuzzPeers(false)
	app, _ := w.Seal(nil, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	big, _ := w.Seal(nil, bytes.Repeat([]byte("a"), MaxPlaintext+10))
	ku, _ := w.AppendKeyUpdate(nil, true)
	ku, _ = w.Seal(ku, []byte("after the update"))
	var ticket, bad State
	ticket.Init(fuzzSuite, secretFor(fuzzSuite, 1))
	ticket.SetSeq(w.w.Seq())
	nst, _ := ticket.AppendRecord(nil, Handshake, []byte{4, 0, 0, 4, 0, 0, 0, 1})
	bad.Init(fuzzSuite, secretFor(fuzzSuite, 1))
	alert, _ := bad.AppendRecord(nil, TypeAlert, []byte{2, 40})
	w2, _ := fuzzPeers(false)
	cn, _ := w2.Seal(nil, []byte("bye"))
	cn, _ = w2.AppendCloseNotify(cn)
	cn = append(cn, app...)
	tampered := append([]byte(nil), app...)
	tampered[10] ^= 1
	return []fuzzSeed{
		{"app", app, 0, false},
		{"app-bytewise", app, 1, false},
		{"big-split", big, 4096, false},
		{"keyupdate", ku, 3, false},
		{"ticket-client", nst, 0, true},
		{"ticket-server", nst, 0, false},
		{"fatal-alert", alert, 0, false},
		{"close-notify-then-more", cn, 0, false},
		{"tampered", tampered, 0, false},
		{"plaintext-handshake", []byte{22, 3, 1, 0, 4, 1, 0, 0, 0}, 0, false},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), 0, false},
		{"header-only", []byte{23, 3, 3, 0x40, 0x00}, 2, false},
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzOpenRecord (run with
// WSGATE_WRITE_FUZZ_SEEDS=1 after changing the seeds above).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("WSGATE_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set WSGATE_WRITE_FUZZ_SEEDS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzOpenRecord")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nuint16(%d)\nbool(%v)\n", s.data, s.chunk, s.client)
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
