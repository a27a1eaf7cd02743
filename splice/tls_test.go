package splice

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/tlsrecord"
)

// TLS ends in the plane: a tunnel whose client speaks TLS 1.3 records (the test holds the client's
// side of a session pair made from random secrets; no handshake is needed to drive the plane).

func tlsSessions(t testing.TB, suite uint16) (server, client *tlsrecord.Session) {
	n := 32
	if suite == tlsrecord.TLS_AES_256_GCM_SHA384 {
		n = 48
	}
	c2s, s2c := make([]byte, n), make([]byte, n)
	rand.Read(c2s)
	rand.Read(s2c)
	var err error
	if server, err = tlsrecord.NewSession(tlsrecord.Keys{Suite: suite, ReadSecret: c2s, WriteSecret: s2c}); err != nil {
		t.Fatal(err)
	}
	if client, err = tlsrecord.NewSession(tlsrecord.Keys{Suite: suite, ReadSecret: s2c, WriteSecret: c2s, Client: true}); err != nil {
		t.Fatal(err)
	}
	return server, client
}

type tlsTunnel struct {
	*tunnelEnds
	srv, cli *tlsrecord.Session
	in       []byte // ciphertext from the plane not opened yet
	app      []byte // plaintext from the plane
	evs      []tlsrecord.Event
	err      error
}

func openTLSTunnel(t testing.TB, p *Plane, ln net.Listener, suite uint16) *tlsTunnel {
	t.Helper()
	tt := &tlsTunnel{tunnelEnds: &tunnelEnds{res: make(chan TunnelResult, 1)}}
	tt.srv, tt.cli = tlsSessions(t, suite)
	var cfd, bfd int
	tt.client, cfd = tcpPair(t, ln)
	tt.backend, bfd = tcpPair(t, ln)
	if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, ClientTLS: tt.srv, OnClose: func(r TunnelResult) { tt.res <- r }}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tt.close)
	return tt
}

// send seals p as the client and writes it.
func (tt *tlsTunnel) send(t testing.TB, p []byte) {
	t.Helper()
	rec, err := tt.cli.Seal(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tt.client.Write(rec); err != nil {
		t.Fatal(err)
	}
}

// recv reads records from the plane until n plaintext bytes arrived (or an event / error / EOF).
func (tt *tlsTunnel) recv(t testing.TB, n int, d time.Duration) []byte {
	t.Helper()
	tt.client.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 64<<10)
	for len(tt.app) < n && tt.err == nil {
		k, err := tt.client.Read(buf)
		tt.in = append(tt.in, buf[:k]...)
		for len(tt.in) > 0 {
			m, plain, ev, oerr := tt.cli.Open(tt.in)
			tt.in = tt.in[m:]
			tt.app = append(tt.app, plain...)
			if ev != tlsrecord.EventNone {
				tt.evs = append(tt.evs, ev)
			}
			if oerr != nil {
				tt.err = oerr
				break
			}
			if m == 0 {
				break
			}
		}
		if err != nil {
			if tt.err == nil {
				tt.err = err
			}
			break
		}
	}
	out := tt.app
	tt.app = nil
	return out
}

// A TLS tunnel carries bulk both ways byte-exact, each TLS 1.3 suite, records opened and sealed in
// the plane.
func TestTLSTunnelBulk(t *testing.T) {
	for _, suite := range []uint16{tlsrecord.TLS_AES_128_GCM_SHA256, tlsrecord.TLS_AES_256_GCM_SHA384, tlsrecord.TLS_CHACHA20_POLY1305_SHA256} {
		t.Run(tlsrecord.SuiteName(suite), func(t *testing.T) {
			p := newPlane(t, Config{Splice: true, Loops: 1})
			tt := openTLSTunnel(t, p, listen(t), suite)
			const n = 3 << 20
			up := make([]byte, n)
			rand.Read(up)
			done := make(chan [32]byte, 1)
			go func() {
				h := sha256.New()
				io.CopyN(h, tt.backend, n)
				var s [32]byte
				copy(s[:], h.Sum(nil))
				done <- s
			}()
			for off := 0; off < n; {
				k := min(n-off, 1+(off*7919)%70000) // records of every size
				tt.send(t, up[off:off+k])
				off += k
			}
			if got := <-done; got != sha256.Sum256(up) {
				t.Fatal("client -> backend bytes differ")
			}
			down := make([]byte, n)
			rand.Read(down)
			go tt.backend.Write(down)
			if got := tt.recv(t, n, 30*time.Second); !bytes.Equal(got, down) {
				t.Fatalf("backend -> client: %d bytes, equal %v, err %v", len(got), bytes.Equal(got, down), tt.err)
			}
		})
	}
}

// An idle TLS tunnel holds no buffer and, after a second, no AEAD either: the session shrinks,
// and the next record rebuilds it. The data path allocates nothing per record once warm.
func TestTLSTunnelIdleShrinksAndNoAllocs(t *testing.T) {
	p := newPlane(t, Config{Splice: true, Loops: 1})
	tt := openTLSTunnel(t, p, listen(t), tlsrecord.TLS_AES_128_GCM_SHA256)
	msg := make([]byte, 16<<10)
	rec := make([]byte, 0, 32<<10)
	buf := make([]byte, 16<<10)
	in := make([]byte, 0, 64<<10)
	round := func() {
		r, _ := tt.cli.Seal(rec[:0], msg)
		tt.client.Write(r)
		io.ReadFull(tt.backend, buf)
		tt.backend.Write(msg)
		in = in[:0]
		for {
			k, _ := tt.client.Read(in[len(in):cap(in)])
			in = in[:len(in)+k]
			if n, _ := tlsrecord.RecordLen(in); n > 0 && len(in) >= n {
				break
			}
		}
		tt.cli.Open(in)
	}
	for i := 0; i < 10; i++ {
		round()
	}
	if allocs := testing.AllocsPerRun(100, round); allocs > 0 && !tlsRaceOn {
		t.Fatalf("%.1f allocations per 16 KiB round trip through a TLS tunnel", allocs)
	}
	if !waitFor(5*time.Second, func() bool { return p.Stats().TLSShrunk == 1 }) {
		t.Fatalf("the idle tunnel's session kept its AEADs: %+v", p.Stats())
	}
	if st := p.Stats(); st.TLSTunnels != 1 || st.TLSPartial != 0 || st.BuffersIdle > 2 {
		t.Fatalf("idle TLS tunnel: %+v", st)
	}
	round() // rebuilt on use
	if st := p.Stats(); st.TLSShrunk != 0 {
		t.Fatalf("the session was not rebuilt by the next record: %+v", st)
	}
	tt.close()
	if !waitFor(5*time.Second, func() bool { st := p.Stats(); return st.TLSTunnels == 0 && st.Tunnels == 0 }) {
		t.Fatalf("gauges after the end: %+v", p.Stats())
	}
}

// A record half-received longer than RecordTimeout closes the tunnel (the partial record pins a
// 16 KiB buffer); close_notify from the client half-closes toward the backend; the backend's EOF
// becomes our close_notify.
func TestTLSTunnelRecordTimeoutAndHalfClose(t *testing.T) {
	t.Run("record-timeout", func(t *testing.T) {
		p := newPlane(t, Config{Loops: 1, RecordTimeout: 300 * time.Millisecond})
		tt := openTLSTunnel(t, p, listen(t), tlsrecord.TLS_AES_128_GCM_SHA256)
		r, _ := tt.cli.Seal(nil, []byte("never finished"))
		tt.client.Write(r[:len(r)-3])
		res := tt.result(t, 10*time.Second)
		if !errors.Is(res.Err, ErrRecordTimeout) {
			t.Fatalf("tunnel ended with %v, want the record timeout", res.Err)
		}
	})
	t.Run("close_notify", func(t *testing.T) {
		p := newPlane(t, Config{Loops: 1})
		tt := openTLSTunnel(t, p, listen(t), tlsrecord.TLS_CHACHA20_POLY1305_SHA256)
		tt.send(t, []byte("bye"))
		cn, _ := tt.cli.AppendCloseNotify(nil)
		tt.client.Write(cn)
		if got := readN(t, tt.backend, 3, 5*time.Second); string(got) != "bye" {
			t.Fatalf("backend got %q", got)
		}
		if _, err := expectEOF(t, tt.backend, 5*time.Second); err != nil {
			t.Fatalf("backend: %v", err)
		}
		tt.backend.Write([]byte("after"))
		tt.backend.CloseWrite()
		if got := tt.recv(t, 5, 5*time.Second); string(got) != "after" {
			t.Fatalf("client got %q (err %v)", got, tt.err)
		}
		tt.recv(t, 1, 5*time.Second)
		if len(tt.evs) == 0 || tt.evs[len(tt.evs)-1] != tlsrecord.EventCloseNotify {
			t.Fatalf("no close_notify from the plane: %v (err %v)", tt.evs, tt.err)
		}
		if r := tt.result(t, 10*time.Second); r.Err != nil {
			t.Fatalf("tunnel ended with %v", r.Err)
		}
	})
}

// TestUpgradeToClientFirst: bytes the HTTP plane still had queued toward the client (Upgrade.ToClient,
// 2 MiB here, more than the client's kernel takes while it does not read) reach the client whole
// and before the switch answer.
func TestUpgradeToClientFirst(t *testing.T) {
	be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		c.Write([]byte(answer101("k")))
		io.Copy(c, br)
	})
	p := newPlane(t, Config{Loops: 1})
	queued := make([]byte, 2<<20)
	rand.Read(queued)
	e := startUpgrade(t, p, listen(t), be.addr, &testJudge{key: "k"}, nil, nil, func(u *Upgrade) { u.ToClient = queued })
	if r := e.result(t, 5*time.Second); r.Outcome != UpgradeSwitched {
		t.Fatalf("result %+v", r)
	}
	if got := readN(t, e.client, len(queued), 10*time.Second); !bytes.Equal(got, queued) {
		t.Fatal("the queued bytes did not arrive first and whole")
	}
	want := "HTTP/1.1 101 Switching Protocols\r\n"
	if got := readN(t, e.client, len(want), 5*time.Second); string(got) != want {
		t.Fatalf("then %q", got)
	}
}

// TestUpgradeTLSClient: an upgrade from a TLS client (Upgrade.ClientTLS): the switch answer and the
// backend's bytes glued to it arrive as records, the held plaintext goes to the backend, then the
// tunnel opens and seals both ways; a refusal is sealed too and ends with close_notify.
func TestUpgradeTLSClient(t *testing.T) {
	be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		h, err := readHead(br)
		if err != nil {
			return
		}
		if strings.Contains(h, "refuse") {
			c.Write([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"))
			return
		}
		c.Write([]byte(answer101("k") + "glued|"))
		io.Copy(c, br) // echo
	})
	p := newPlane(t, Config{Loops: 1})
	srv, cli := tlsSessions(t, tlsrecord.TLS_AES_128_GCM_SHA256)
	e := startUpgrade(t, p, listen(t), be.addr, &testJudge{key: "k"}, nil, []byte("held|"), func(u *Upgrade) { u.ClientTLS = srv })
	if r := e.result(t, 5*time.Second); r.Outcome != UpgradeSwitched {
		t.Fatalf("result %+v", r)
	}
	tt := &tlsTunnel{tunnelEnds: &tunnelEnds{client: e.client}, srv: srv, cli: cli}
	want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Accept: k\r\nX-Judged: yes\r\n\r\nglued|held|"
	if got := tt.recv(t, len(want), 5*time.Second); string(got) != want {
		t.Fatalf("client read %q (err %v)", got, tt.err)
	}
	tt.send(t, []byte("sealed by the client"))
	if got := tt.recv(t, 20, 5*time.Second); string(got) != "sealed by the client" {
		t.Fatalf("echo %q (err %v)", got, tt.err)
	}
	if st := p.Stats(); st.TLSTunnels != 1 {
		t.Fatalf("stats %+v", st)
	}

	t.Run("refused", func(t *testing.T) {
		srv, cli := tlsSessions(t, tlsrecord.TLS_CHACHA20_POLY1305_SHA256)
		e := startUpgrade(t, p, listen(t), be.addr, &testJudge{key: "k"}, nil, nil, func(u *Upgrade) {
			u.ClientTLS = srv
			u.Head = []byte("GET /refuse HTTP/1.1\r\nHost: test\r\n\r\n")
		})
		if r := e.result(t, 5*time.Second); r.Outcome != UpgradeRefused {
			t.Fatalf("result %+v", r)
		}
		tt := &tlsTunnel{tunnelEnds: &tunnelEnds{client: e.client}, srv: srv, cli: cli}
		got := tt.recv(t, 1<<20, 5*time.Second) // until the close
		if !strings.HasPrefix(string(got), "HTTP/1.1 403 Forbidden\r\n") || !strings.HasSuffix(string(got), "\r\n\r\nno") {
			t.Fatalf("refusal as read by the TLS client: %q", got)
		}
		if len(tt.evs) == 0 || tt.evs[len(tt.evs)-1] != tlsrecord.EventCloseNotify {
			t.Fatalf("no close_notify after the refusal: %v (err %v)", tt.evs, tt.err)
		}
	})
}
