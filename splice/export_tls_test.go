package splice

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"

	"io"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/tlsrecord"
)

// A WSS tunnel (TLS 1.3 client end) moves between planes with its session: a record
// half-received at the move is completed in the new plane (its timeout gauge moves along), data
// flows both ways at the next sequence numbers, a KeyUpdate asked for after the move is answered,
// it moves back again, and its byte counts carry on. Each suite.
func TestExportAdoptTLS(t *testing.T) {
	for _, suite := range []uint16{tlsrecord.TLS_AES_128_GCM_SHA256, tlsrecord.TLS_AES_256_GCM_SHA384, tlsrecord.TLS_CHACHA20_POLY1305_SHA256} {
		t.Run(tlsrecord.SuiteName(suite), func(t *testing.T) {
			cfg := Config{Loops: 1, RecordTimeout: 20 * time.Second}
			a, b := newPlane(t, cfg), newPlane(t, cfg)
			tt := openTLSTunnel(t, a, listen(t), suite)
			results := make(chan TunnelResult, 8)
			tt.send(t, []byte("hello"))
			if got := readN(t, tt.backend, 5, 5*time.Second); string(got) != "hello" {
				t.Fatalf("before: %q", got)
			}
			rec, _ := tt.cli.Seal(nil, []byte("partial-record"))
			tt.client.Write(rec[:len(rec)-3])
			if !waitFor(5*time.Second, func() bool { return a.Stats().TLSPartial == 1 }) {
				t.Fatalf("the half record did not reach the plane: %+v", a.Stats())
			}
			if n, _ := passAll(t, a, b, results); n != 1 {
				t.Fatalf("%d tunnels moved", n)
			}
			if r := tt.result(t, 5*time.Second); !errors.Is(r.Err, ErrPassed) || r.ClientToBackend != 5 {
				t.Fatalf("the old plane's OnClose: %+v", r)
			}
			gauges := func() bool {
				sa, sb := a.Stats(), b.Stats()
				return sa.TLSTunnels == 0 && sa.TLSPartial == 0 && sb.TLSTunnels == 1 && sb.TLSPartial == 1 && sb.TLSStaying == 0
			}
			if !waitFor(5*time.Second, gauges) { // the adopting loop attaches it on its own time
				t.Fatalf("gauges after the move: old %+v, new %+v", a.Stats(), b.Stats())
			}
			tt.client.Write(rec[len(rec)-3:])
			if got := readN(t, tt.backend, 14, 5*time.Second); string(got) != "partial-record" {
				t.Fatalf("the record completed in the new plane: %q", got)
			}
			tt.backend.Write([]byte("reply"))
			if got := tt.recv(t, 5, 5*time.Second); string(got) != "reply" {
				t.Fatalf("client got %q (%v)", got, tt.err)
			}
			ku, _ := tt.cli.AppendKeyUpdate(nil, true)
			ku, _ = tt.cli.Seal(ku, []byte("after-ku"))
			tt.client.Write(ku)
			if got := readN(t, tt.backend, 8, 5*time.Second); string(got) != "after-ku" {
				t.Fatalf("after the KeyUpdate: %q", got)
			}
			tt.backend.Write([]byte("x"))
			if got := tt.recv(t, 1, 5*time.Second); string(got) != "x" || len(tt.evs) != 1 || tt.evs[0] != tlsrecord.EventKeyUpdate {
				t.Fatalf("after the KeyUpdate: client got %q, events %v (%v)", got, tt.evs, tt.err)
			}
			if n, _ := passAll(t, b, a, results); n != 1 {
				t.Fatalf("%d tunnels moved back", n)
			}
			<-results
			tt.send(t, []byte("back"))
			if got := readN(t, tt.backend, 4, 5*time.Second); string(got) != "back" {
				t.Fatalf("moved back: %q", got)
			}
			cn, _ := tt.cli.AppendCloseNotify(nil)
			tt.client.Write(cn)
			if _, err := expectEOF(t, tt.backend, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			tt.backend.CloseWrite()
			tt.recv(t, 1, 5*time.Second)
			select {
			case r := <-results:
				if r.Err != nil || r.ClientToBackend != 5+14+8+4 || r.BackendToClient == 0 {
					t.Fatalf("the tunnel's end: %+v", r)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the tunnel did not end")
			}
			if st := a.Stats(); st.TLSTunnels != 0 || st.TLSPartial != 0 || st.Tunnels != 0 {
				t.Fatalf("gauges at the end: %+v", st)
			}
		})
	}
}

// legacyLayer stands for a TLS 1.2 record layer (tlsterm's adapter): anything but a
// *tlsrecord.Session cannot be exported.
type legacyLayer struct{ *tlsrecord.Session }

// A TLS 1.2 tunnel stays where it is (Stats.TLSStaying) and carries on; a TLS 1.3 one given back
// by the hand-off carries on too, with its record timeout still running.
func TestExportTLSStaysOrComesBack(t *testing.T) {
	p := newPlane(t, Config{Loops: 1, RecordTimeout: 20 * time.Second})
	ln := listen(t)
	legacy := &tlsTunnel{tunnelEnds: &tunnelEnds{res: make(chan TunnelResult, 1)}}
	legacy.srv, legacy.cli = tlsSessions(t, tlsrecord.TLS_AES_128_GCM_SHA256)
	var cfd, bfd int
	legacy.client, cfd = tcpPair(t, ln)
	legacy.backend, bfd = tcpPair(t, ln)
	if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, ClientTLS: legacyLayer{legacy.srv}, OnClose: func(r TunnelResult) { legacy.res <- r }}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(legacy.close)
	modern := openTLSTunnel(t, p, ln, tlsrecord.TLS_AES_128_GCM_SHA256)
	rec, _ := modern.cli.Seal(nil, []byte("half"))
	modern.client.Write(rec[:4])
	if !waitFor(5*time.Second, func() bool { st := p.Stats(); return st.TLSPartial == 1 && st.TLSTunnels == 2 }) {
		t.Fatalf("%+v", p.Stats())
	}
	if st := p.Stats(); st.TLSStaying != 1 {
		t.Fatalf("TLSStaying %d, want the legacy tunnel", st.TLSStaying)
	}
	ex := p.ExportTunnels(10)
	if len(ex) != 1 || ex[0].State[0] != tlsTunnelStateVersion {
		t.Fatalf("exported %d tunnels, want the TLS 1.3 one only", len(ex))
	}
	p.ExportDone(ex[0], errors.New("refused"))
	if !waitFor(5*time.Second, func() bool {
		st := p.Stats()
		return st.TLSTunnels == 2 && st.TLSPartial == 1 && st.TLSStaying == 1 && st.Tunnels == 2
	}) {
		t.Fatalf("after the given-back tunnel returned: %+v", p.Stats())
	}
	modern.client.Write(rec[4:])
	if got := readN(t, modern.backend, 4, 5*time.Second); string(got) != "half" {
		t.Fatalf("given back: %q", got)
	}
	legacy.send(t, []byte("legacy"))
	if got := readN(t, legacy.backend, 6, 5*time.Second); string(got) != "legacy" {
		t.Fatalf("the staying tunnel: %q", got)
	}
}

// TLS tunnels streaming both ways as fast as they can move between planes several times: every
// byte arrives once and in order, plaintext held toward the backend and records held toward the
// client at the moment of a move go first.
func TestExportAdoptTLSUnderTraffic(t *testing.T) {
	cfg := Config{Loops: 2}
	a, b := newPlane(t, cfg), newPlane(t, cfg)
	ln := listen(t)
	const n, size = 3, 24 << 20
	results := make(chan TunnelResult, 64)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c2s, s2c := make([]byte, 32), make([]byte, 32)
		rand.Read(c2s)
		rand.Read(s2c)
		other := make([]byte, 32)
		srv, _ := tlsrecord.NewSession(tlsrecord.Keys{Suite: tlsrecord.TLS_AES_128_GCM_SHA256, ReadSecret: c2s, WriteSecret: s2c})
		// The client's two directions on two goroutines: one session each (a Session is one
		// goroutine's).
		cw, _ := tlsrecord.NewSession(tlsrecord.Keys{Suite: tlsrecord.TLS_AES_128_GCM_SHA256, ReadSecret: other, WriteSecret: c2s, Client: true})
		cr, _ := tlsrecord.NewSession(tlsrecord.Keys{Suite: tlsrecord.TLS_AES_128_GCM_SHA256, ReadSecret: s2c, WriteSecret: other, Client: true})
		client, cfd := tcpPair(t, ln)
		backend, bfd := tcpPair(t, ln)
		t.Cleanup(func() { client.Close(); backend.Close() })
		if err := a.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, ClientTLS: srv, OnClose: func(r TunnelResult) { results <- r }}); err != nil {
			t.Fatal(err)
		}
		up, down := make([]byte, size), make([]byte, size)
		rand.Read(up)
		rand.Read(down)
		wg.Add(4)
		go func() { // client -> plane: records of every size
			defer wg.Done()
			for off := 0; off < size; {
				k := min(size-off, 1+(off*7919)%40000)
				r, _ := cw.Seal(nil, up[off:off+k])
				if _, err := client.Write(r); err != nil {
					t.Errorf("tunnel %d: client write: %v", i, err)
					return
				}
				off += k
			}
		}()
		go func() { // backend: the plaintext, whole and in order
			defer wg.Done()
			backend.SetReadDeadline(time.Now().Add(60 * time.Second))
			h := sha256.New()
			if _, err := io.CopyN(h, backend, size); err != nil || !bytes.Equal(h.Sum(nil), sumOf(up)) {
				t.Errorf("tunnel %d: client -> backend: %v, equal %v", i, err, err == nil && bytes.Equal(h.Sum(nil), sumOf(up)))
			}
		}()
		go func() { // backend -> plane
			defer wg.Done()
			if _, err := backend.Write(down); err != nil {
				t.Errorf("tunnel %d: backend write: %v", i, err)
			}
		}()
		go func() { // client: open the records
			defer wg.Done()
			client.SetReadDeadline(time.Now().Add(60 * time.Second))
			h := sha256.New()
			var in []byte
			buf := make([]byte, 64<<10)
			got := 0
			for got < size {
				k, err := client.Read(buf)
				in = append(in, buf[:k]...)
				for len(in) > 0 {
					m, plain, _, oerr := cr.Open(in)
					if oerr != nil {
						t.Errorf("tunnel %d: client open: %v", i, oerr)
						return
					}
					in = in[m:]
					h.Write(plain)
					got += len(plain)
					if m == 0 {
						break
					}
				}
				if err != nil {
					t.Errorf("tunnel %d: client read after %d bytes: %v", i, got, err)
					return
				}
			}
			if !bytes.Equal(h.Sum(nil), sumOf(down)) {
				t.Errorf("tunnel %d: backend -> client bytes differ", i)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	planes := [2]*Plane{a, b}
	moves := 0
moving:
	for moves < 8 {
		select {
		case <-done:
			break moving
		case <-time.After(20 * time.Millisecond):
		}
		if got, _ := passAll(t, planes[moves%2], planes[(moves+1)%2], results); got != n {
			t.Fatalf("move %d: %d of %d TLS tunnels moved", moves, got, n)
		}
		moves++
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the streams did not finish")
	}
	t.Logf("%d moves of %d TLS tunnels streaming %d MiB each way", moves, n, size>>20)
	if moves < 2 {
		t.Fatalf("the streams ended after %d moves: too fast to test", moves)
	}
}

func sumOf(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
