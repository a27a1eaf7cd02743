package splice

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/fdbudget"
)

// Plane.Upgrade through real loopback sockets, with a small HTTP-ish judge
// (testJudge) so the plane is checked against the Handshake contract and
// not against the HTTP plane's implementation of it.

// testJudge: an answer head ends at CRLFCRLF; "HTTP/1.1 101" with the line
// "X-Accept: <key>" switches (anything else that is a 101 is rejected with
// a 502), other 1xx are interim, the rest are refusals framed by
// Content-Length, "Transfer-Encoding: chunked" or the close. ToClient heads
// are built in the loop's Scratch, as the HTTP plane's judge does.
type testJudge struct {
	key    string
	framer chunkFramer
	calls  atomic.Int32
}

type judgeScratch struct {
	buf  []byte
	gets int
}

func (j *testJudge) Judge(s *Scratch, ans []byte) Verdict {
	j.calls.Add(1)
	js, _ := s.Value.(*judgeScratch)
	if js == nil {
		js = &judgeScratch{buf: make([]byte, 0, 4096)}
		s.Value = js
	}
	js.gets++
	i := bytes.Index(ans, []byte("\r\n\r\n"))
	if i < 0 {
		if len(ans) > 16<<10 {
			return Verdict{Action: Reject, ToClient: []byte(answer502), Status: 502}
		}
		return Verdict{Action: NeedMore}
	}
	head := ans[:i+4]
	if len(head) < 12 || !bytes.HasPrefix(head, []byte("HTTP/1.1 ")) {
		return Verdict{Action: Reject, ToClient: []byte(answer502), Status: 502}
	}
	status, err := strconv.Atoi(string(head[9:12]))
	if err != nil {
		return Verdict{Action: Reject, ToClient: []byte(answer502), Status: 502}
	}
	b := js.buf[:0]
	switch {
	case status == 101:
		if !bytes.Contains(head, []byte("\r\nX-Accept: "+j.key+"\r\n")) {
			return Verdict{Action: Reject, ToClient: []byte(answer502), Status: 502}
		}
		b = append(b, head[:len(head)-2]...)
		b = append(b, "X-Judged: yes\r\n\r\n"...)
		js.buf = b
		return Verdict{Action: Switch, Consumed: len(head), ToClient: b, Status: 101}
	case status < 200:
		b = append(b, head...)
		js.buf = b
		return Verdict{Action: Interim, Consumed: len(head), ToClient: b, Status: status}
	}
	b = append(b, head[:len(head)-2]...)
	b = append(b, "Connection: close\r\n\r\n"...)
	js.buf = b
	v := Verdict{Action: Refuse, Consumed: len(head), ToClient: b, Status: status, Body: BodyUntilClose}
	if k := bytes.Index(head, []byte("\r\nContent-Length: ")); k >= 0 {
		e := bytes.IndexByte(head[k+2:], '\r')
		n, _ := strconv.Atoi(string(head[k+18 : k+2+e]))
		v.Body = int64(n)
	} else if bytes.Contains(head, []byte("\r\nTransfer-Encoding: chunked\r\n")) {
		v.Body, v.Framer = BodyChunked, &j.framer
	}
	return v
}

const (
	answer502 = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	answer504 = "HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	answer503 = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)

func (j *testJudge) Failed(s *Scratch, why UpgradeOutcome) ([]byte, int) {
	switch why {
	case UpgradeDialTimeout, UpgradeResponseTimeout:
		return []byte(answer504), 504
	case UpgradeNoFD:
		return []byte(answer503), 503
	}
	return []byte(answer502), 502
}

// upBackend is a scripted raw TCP backend: each accepted conn runs serve.
type upBackend struct {
	ln    net.Listener
	addr  netip.AddrPort
	conns atomic.Int64
}

func newUpBackend(t testing.TB, serve func(c *net.TCPConn, br *bufio.Reader)) *upBackend {
	t.Helper()
	ln := listen(t)
	b := &upBackend{ln: ln, addr: netip.MustParseAddrPort(ln.Addr().String())}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				serve(c.(*net.TCPConn), bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return b
}

// readHead reads a request or answer head up to and including CRLFCRLF.
func readHead(br *bufio.Reader) (string, error) {
	var sb bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			return sb.String(), err
		}
		if line == "\r\n" {
			return sb.String(), nil
		}
	}
}

const testHead = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

type upEnds struct {
	client *net.TCPConn
	res    chan UpgradeResult
	closed chan TunnelResult
}

func (e *upEnds) result(t testing.TB, d time.Duration) UpgradeResult {
	t.Helper()
	select {
	case r := <-e.res:
		return r
	case <-time.After(d):
		t.Fatalf("no upgrade result within %v", d)
	}
	return UpgradeResult{}
}

// startUpgrade opens a client pair on ln and hands its server end to the
// plane as an upgrade toward backend. before is written by the client before
// the hand-off (it waits in the kernel), pending is passed as Upgrade.Pending.
func startUpgrade(t testing.TB, p *Plane, ln net.Listener, backend netip.AddrPort, j Handshake, before, pending []byte, mod func(*Upgrade)) *upEnds {
	t.Helper()
	e := &upEnds{res: make(chan UpgradeResult, 1), closed: make(chan TunnelResult, 1)}
	var cfd int
	e.client, cfd = tcpPair(t, ln)
	t.Cleanup(func() { e.client.Close() })
	if len(before) > 0 {
		if _, err := e.client.Write(before); err != nil {
			t.Fatal(err)
		}
	}
	u := Upgrade{ClientFD: cfd, Backend: backend, Head: []byte(testHead), Pending: pending, Judge: j,
		OnResult: func(r UpgradeResult) { e.res <- r },
		OnClose:  func(r TunnelResult) { e.closed <- r }}
	if mod != nil {
		mod(&u)
	}
	if err := p.Upgrade(u); err != nil {
		t.Fatal(err)
	}
	return e
}

func answer101(key string) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Accept: " + key + "\r\n\r\n"
}

// TestUpgradeSwitch: the backend gets the head, then (after its 101) the
// held pending bytes, then what the client sent before and after; the client
// gets the judged 101, then the backend's bytes glued behind it; then the
// tunnel carries bytes both ways and reports like any tunnel.
func TestUpgradeSwitch(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		got := make(chan string, 4)
		be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
			h, err := readHead(br)
			got <- h
			if err != nil {
				return
			}
			c.Write([]byte(answer101("k1") + "glued-frame|"))
			b := make([]byte, len("pending|before|after"))
			if _, err := io.ReadFull(br, b); err != nil {
				got <- "error: " + err.Error()
				return
			}
			got <- string(b)
			c.Write([]byte("echo:" + string(b)))
			io.Copy(io.Discard, br)
		})
		p := newPlane(t, Config{Splice: on, Loops: 1})
		j := &testJudge{key: "k1"}
		e := startUpgrade(t, p, listen(t), be.addr, j, []byte("before|"), []byte("pending|"), nil)
		if h := <-got; h != testHead {
			t.Fatalf("backend got head %q", h)
		}
		r := e.result(t, 5*time.Second)
		if r.Outcome != UpgradeSwitched || r.Status != 101 || !r.Connected || r.Err != nil || r.Connect <= 0 {
			t.Fatalf("result %+v", r)
		}
		want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Accept: k1\r\nX-Judged: yes\r\n\r\nglued-frame|"
		if got := readN(t, e.client, len(want), 5*time.Second); string(got) != want {
			t.Fatalf("client got %q", got)
		}
		e.client.Write([]byte("after"))
		if s := <-got; s != "pending|before|after" {
			t.Fatalf("backend got %q after the switch", s)
		}
		if got := readN(t, e.client, 25, 5*time.Second); string(got) != "echo:pending|before|after" {
			t.Fatalf("client got %q", got)
		}
		e.client.Close()
		select {
		case tr := <-e.closed:
			if tr.ClientToBackend != 20 || tr.BackendToClient != int64(len(want)+25) {
				t.Fatalf("tunnel result %+v", tr)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("tunnel did not end")
		}
		if s := p.Stats(); s.Handshakes != 0 || s.Tunnels != 0 || s.TunnelsTotal != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// TestUpgradeBytesBeforeSwitch: a client that sends 1 MiB of frames before
// the backend's 101 (delayed) is not read: the backend gets nothing but the
// head until its 101 has gone out, then every byte in order.
func TestUpgradeBytesBeforeSwitch(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		const n = 1 << 20
		early := make(chan int, 1)
		sums := make(chan [32]byte, 1)
		be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
			if _, err := readHead(br); err != nil {
				return
			}
			time.Sleep(300 * time.Millisecond)
			c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			k, _ := br.Read(make([]byte, 64<<10))
			early <- k
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			c.Write([]byte(answer101("k")))
			s, m, err := drain(io.LimitReader(br, n))
			if err != nil || m != n {
				t.Errorf("backend drained %d bytes: %v", m, err)
			}
			sums <- s
		})
		p := newPlane(t, Config{Splice: on, Loops: 1})
		e := startUpgrade(t, p, listen(t), be.addr, &testJudge{key: "k"}, nil, nil, nil)
		sent := make(chan [32]byte, 1)
		go func() {
			s, err := streamNoClose(e.client, 9, n)
			if err != nil {
				t.Errorf("client write: %v", err)
			}
			sent <- s
		}()
		if k := <-early; k != 0 {
			t.Fatalf("the backend got %d client bytes before its 101", k)
		}
		if r := e.result(t, 5*time.Second); r.Outcome != UpgradeSwitched {
			t.Fatalf("result %+v", r)
		}
		readN(t, e.client, len(answer101("k"))+len("X-Judged: yes\r\n"), 5*time.Second)
		if <-sums != <-sent {
			t.Fatal("the frames sent before the 101 arrived changed")
		}
	})
}

// TestUpgradeRefused: a refusal is relayed with its body (Content-Length,
// chunked, until close), the client then sees EOF, and of the 1 MiB the
// client sent meanwhile not one byte reaches the backend.
func TestUpgradeRefused(t *testing.T) {
	for _, tc := range []struct {
		name, answer, body string
	}{
		{"length", "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\n", "forbidden"},
		{"chunked", "HTTP/1.1 426 Upgrade Required\r\nTransfer-Encoding: chunked\r\n\r\n", "4\r\nno s\r\n7\r\nwitch!!\r\n0\r\n\r\n"},
		{"close", "HTTP/1.1 200 OK\r\n\r\n", "plain page until close"},
		{"length-split", "HTTP/1.1 403 Forbidden\r\nContent-Length: 20000\r\n\r\n", string(bytes.Repeat([]byte{'z'}, 20000))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			modes(t, func(t *testing.T, on bool) {
				leaked := make(chan int64, 1)
				be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
					if _, err := readHead(br); err != nil {
						return
					}
					time.Sleep(100 * time.Millisecond) // the client's bytes are there by now
					c.Write([]byte(tc.answer))
					if tc.name == "length-split" {
						c.Write([]byte(tc.body[:100]))
						time.Sleep(50 * time.Millisecond)
						c.Write([]byte(tc.body[100:]))
					} else {
						c.Write([]byte(tc.body))
					}
					if tc.name == "close" {
						c.CloseWrite()
					}
					c.SetReadDeadline(time.Now().Add(time.Second))
					k, _ := io.Copy(io.Discard, br)
					leaked <- k
				})
				p := newPlane(t, Config{Splice: on, Loops: 1})
				e := startUpgrade(t, p, listen(t), be.addr, &testJudge{}, bytes.Repeat([]byte{'f'}, 1000), []byte("held"), nil)
				go e.client.Write(bytes.Repeat([]byte{'F'}, 1<<20)) // blocks: nobody reads it
				r := e.result(t, 5*time.Second)
				status, _ := strconv.Atoi(tc.answer[9:12])
				if r.Outcome != UpgradeRefused || r.Status != status || !r.Connected {
					t.Fatalf("result %+v", r)
				}
				want := tc.answer[:len(tc.answer)-2] + "Connection: close\r\n\r\n" + tc.body
				e.client.SetReadDeadline(time.Now().Add(5 * time.Second))
				got, err := io.ReadAll(e.client)
				if string(got) != want {
					t.Fatalf("client got %q (%v), want %q", trunc(got), err, trunc([]byte(want)))
				}
				if err != nil {
					t.Fatalf("after the refusal: %v, want a clean EOF (lingering close)", err)
				}
				if k := <-leaked; k != 0 {
					t.Fatalf("%d client bytes reached the backend after a refusal", k)
				}
				if !waitFor(5*time.Second, func() bool { return p.Stats().Handshakes == 0 }) {
					t.Fatalf("stats %+v", p.Stats())
				}
			})
		})
	}
}

func trunc(b []byte) []byte {
	if len(b) > 200 {
		return append(append([]byte(nil), b[:200]...), "..."...)
	}
	return b
}

// TestUpgradeRejected: a 101 the judge does not accept becomes the judge's
// 502; nothing of either side crosses.
func TestUpgradeRejected(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		leaked := make(chan int64, 1)
		be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
			readHead(br)
			c.Write([]byte(answer101("not-the-key") + "backend frame"))
			c.SetReadDeadline(time.Now().Add(time.Second))
			k, _ := io.Copy(io.Discard, br)
			leaked <- k
		})
		p := newPlane(t, Config{Splice: on, Loops: 1})
		e := startUpgrade(t, p, listen(t), be.addr, &testJudge{key: "k"}, []byte("client frame"), []byte("held"), nil)
		r := e.result(t, 5*time.Second)
		if r.Outcome != UpgradeRejected || r.Status != 502 || r.Err == nil {
			t.Fatalf("result %+v", r)
		}
		e.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(e.client)
		if string(got) != answer502 || err != nil {
			t.Fatalf("client got %q, %v", got, err)
		}
		if k := <-leaked; k != 0 {
			t.Fatalf("%d client bytes reached the backend", k)
		}
	})
}

// TestUpgradeInterim: interim answers before the 101 are relayed in order.
func TestUpgradeInterim(t *testing.T) {
	be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		readHead(br)
		c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
		time.Sleep(20 * time.Millisecond)
		c.Write([]byte("HTTP/1.1 102 Processing\r\n\r\n" + answer101("k")))
		io.Copy(c, br)
	})
	p := newPlane(t, Config{Splice: true, Loops: 1})
	e := startUpgrade(t, p, listen(t), be.addr, &testJudge{key: "k"}, nil, nil, nil)
	if r := e.result(t, 5*time.Second); r.Outcome != UpgradeSwitched {
		t.Fatalf("result %+v", r)
	}
	want := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + answer101("k")[:len(answer101("k"))-2] + "X-Judged: yes\r\n\r\n"
	if got := readN(t, e.client, len(want), 5*time.Second); string(got) != want {
		t.Fatalf("client got %q", got)
	}
	e.client.Write([]byte("ping"))
	if got := readN(t, e.client, 4, 5*time.Second); string(got) != "ping" {
		t.Fatalf("echo %q", got)
	}
}

// TestUpgradeSplitAnswer: an answer head that arrives a few bytes at a time
// is judged when complete.
func TestUpgradeSplitAnswer(t *testing.T) {
	be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		readHead(br)
		a := answer101("k") + "frame"
		for i := 0; i < len(a); i += 7 {
			c.Write([]byte(a[i:min(i+7, len(a))]))
			time.Sleep(2 * time.Millisecond)
		}
		io.Copy(io.Discard, br)
	})
	p := newPlane(t, Config{Splice: true, Loops: 1})
	j := &testJudge{key: "k"}
	e := startUpgrade(t, p, listen(t), be.addr, j, nil, nil, nil)
	if r := e.result(t, 5*time.Second); r.Outcome != UpgradeSwitched {
		t.Fatalf("result %+v", r)
	}
	want := answer101("k")[:len(answer101("k"))-2] + "X-Judged: yes\r\n\r\nframe"
	if got := readN(t, e.client, len(want), 5*time.Second); string(got) != want {
		t.Fatalf("client got %q", got)
	}
	if j.calls.Load() < 2 {
		t.Fatalf("judge called %d times for a split answer", j.calls.Load())
	}
}

// TestUpgradeFailures: the plane's own endings answer with the judge's
// Failed answer and report the outcome: refused connect (502), connect that
// never completes (504), backend silent (504), backend closing (502).
func TestUpgradeFailures(t *testing.T) {
	p := newPlane(t, Config{Splice: true, Loops: 1})
	ln := listen(t)
	check := func(t *testing.T, e *upEnds, want UpgradeOutcome, answer string, within time.Duration) {
		t.Helper()
		start := time.Now()
		r := e.result(t, within)
		if r.Outcome != want || r.Err == nil {
			t.Fatalf("result %+v (%v), want %v", r, r.Err, want)
		}
		e.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(e.client)
		if string(got) != answer || err != nil {
			t.Fatalf("client got %q, %v; want %q", got, err, answer)
		}
		t.Logf("%v after %v: %v", r.Outcome, time.Since(start).Round(time.Millisecond), r.Err)
	}
	t.Run("refused", func(t *testing.T) {
		dead := listen(t)
		addr := netip.MustParseAddrPort(dead.Addr().String())
		dead.Close()
		e := startUpgrade(t, p, ln, addr, &testJudge{}, []byte("x"), nil, nil)
		check(t, e, UpgradeDialFailed, answer502, 5*time.Second)
	})
	t.Run("dial-timeout", func(t *testing.T) {
		addr := fullBacklog(t)
		e := startUpgrade(t, p, ln, addr, &testJudge{}, nil, nil, func(u *Upgrade) { u.DialTimeout = 300 * time.Millisecond })
		check(t, e, UpgradeDialTimeout, answer504, 5*time.Second)
	})
	t.Run("response-timeout", func(t *testing.T) {
		be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
			readHead(br)
			io.Copy(io.Discard, br)
		})
		e := startUpgrade(t, p, ln, be.addr, &testJudge{}, nil, nil, func(u *Upgrade) { u.ResponseTimeout = 300 * time.Millisecond })
		check(t, e, UpgradeResponseTimeout, answer504, 5*time.Second)
	})
	t.Run("backend-closes", func(t *testing.T) {
		be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
			readHead(br)
			c.Write([]byte("HTTP/1.1 101 Swi"))
		})
		e := startUpgrade(t, p, ln, be.addr, &testJudge{}, nil, nil, nil)
		check(t, e, UpgradeBackendClosed, answer502, 5*time.Second)
	})
	if !waitFor(5*time.Second, func() bool { return p.Stats().Handshakes == 0 }) {
		t.Fatalf("stats %+v", p.Stats())
	}
}

// fullBacklog returns the address of a listener whose accept queue is full
// and never drained: a connect to it gets no answer (its SYN is dropped).
func fullBacklog(t testing.TB) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the queue: connects that complete until one does not.
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the backlog never filled")
	return addr
}

// TestUpgradeClientGone: a client that closes while its handshake is
// pending is noticed at once (no wait for the backend): the backend conn
// is closed, the result says so, and every fd is released.
func TestUpgradeClientGone(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		backendSaw := make(chan error, 1)
		be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
			readHead(br)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := br.ReadByte()
			backendSaw <- err
		})
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)
		base := countFDs(t)
		e := startUpgrade(t, p, ln, be.addr, &testJudge{}, nil, nil, nil)
		time.Sleep(50 * time.Millisecond)
		e.client.Close()
		r := e.result(t, 5*time.Second)
		if r.Outcome != UpgradeClientGone || r.Status != 0 {
			t.Fatalf("result %+v", r)
		}
		select {
		case err := <-backendSaw:
			if err != io.EOF {
				t.Fatalf("backend read %v, want EOF", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the backend conn was not closed")
		}
		if !waitFor(2*time.Second, func() bool { return countFDs(t) <= base }) {
			t.Fatalf("fds: %d before, %d after", base, countFDs(t))
		}
	})
}

// TestUpgradePlaneClose: pending handshakes end with UpgradeClosed and
// their fds closed when the plane closes.
func TestUpgradePlaneClose(t *testing.T) {
	be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		readHead(br)
		io.Copy(io.Discard, br)
	})
	ln := listen(t)
	base := countFDs(t)
	p, err := NewPlane(Config{Splice: true, Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	var es []*upEnds
	for i := 0; i < 10; i++ {
		es = append(es, startUpgrade(t, p, ln, be.addr, &testJudge{}, nil, nil, nil))
	}
	waitFor(2*time.Second, func() bool { return be.conns.Load() == 10 })
	p.Close()
	for _, e := range es {
		if r := e.result(t, 5*time.Second); r.Outcome != UpgradeClosed {
			t.Fatalf("result %+v", r)
		}
		e.client.Close()
	}
	if !waitFor(2*time.Second, func() bool { return countFDs(t) <= base }) {
		t.Fatalf("fds: %d before, %d after", base, countFDs(t))
	}
	if err := p.Upgrade(Upgrade{ClientFD: 1 << 20, Backend: be.addr, Judge: &testJudge{}}); err == nil {
		t.Fatal("Upgrade on a closed plane succeeded")
	}
}

// TestUpgradeStorm: 2,000 clients hand their upgrades to the plane at once;
// every one switches and echoes, and the process's OS threads do not grow
// with the dial count (no thread or goroutine per dial). The backend runs in
// a child process, so the threads counted here are the plane's and the
// runtime's.
func TestUpgradeStorm(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 500
	}
	addr := childBackend(t)
	p := newPlane(t, Config{Splice: true})
	ln := listen(t)
	type pair struct {
		c  *net.TCPConn
		fd int
	}
	ps := make([]pair, n)
	for i := range ps {
		ps[i].c, ps[i].fd = tcpPair(t, ln)
		defer ps[i].c.Close()
	}
	runtime.GC()
	threads0 := threadCount()
	var switched, other atomic.Int64
	done := make(chan struct{}, n)
	j := &testJudge{key: "k"}
	for i := range ps {
		err := p.Upgrade(Upgrade{ClientFD: ps[i].fd, Backend: addr, Head: []byte(testHead), Judge: j,
			OnResult: func(r UpgradeResult) {
				if r.Outcome == UpgradeSwitched {
					switched.Add(1)
				} else {
					other.Add(1)
				}
				done <- struct{}{}
			}})
		if err != nil {
			t.Fatal(err)
		}
	}
	maxThreads := threads0
	for i := 0; i < n; i++ {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d upgrades decided", i, n)
		}
		if i%100 == 0 {
			maxThreads = max(maxThreads, threadCount())
		}
	}
	maxThreads = max(maxThreads, threadCount())
	if switched.Load() != int64(n) {
		t.Fatalf("%d switched, %d other", switched.Load(), other.Load())
	}
	want := answer101("k")[:len(answer101("k"))-2] + "X-Judged: yes\r\n\r\n"
	for i, pr := range ps {
		if got := readN(t, pr.c, len(want), 10*time.Second); string(got) != want {
			t.Fatalf("client %d got %q", i, got)
		}
		pr.c.Write([]byte("echo"))
		if got := readN(t, pr.c, 4, 10*time.Second); string(got) != "echo" {
			t.Fatalf("client %d echo %q", i, got)
		}
	}
	t.Logf("%d upgrades: OS threads %d before, at most %d during", n, threads0, maxThreads)
	// The runtime may start a thread for its own reasons (a GC worker, a
	// hand-off); one thread per dial would be hundreds.
	if maxThreads > threads0+2 {
		t.Fatalf("threads grew from %d to %d during %d upgrades", threads0, maxThreads, n)
	}
	if s := p.Stats(); s.Tunnels != int64(n) || s.Handshakes != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// childBackend starts this test binary as a backend process (see
// TestMain): it answers every request head with answer101("k") and then
// echoes. It returns the child's address; the child exits when the test ends.
func childBackend(t testing.TB) netip.AddrPort {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "SPLICE_TEST_BACKEND=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child backend: %v", err)
	}
	return netip.MustParseAddrPort(strings.TrimSpace(line))
}

// backendChild is the child process's main: serve until stdin closes.
func backendChild() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			if _, err := readHead(br); err != nil {
				return
			}
			c.Write([]byte(answer101("k")))
			io.Copy(c, br)
		}()
	}
}

func threadCount() int {
	n, _ := runtime.ThreadCreateProfile(nil)
	return n
}

// TestUpgradeSource: a dial from a source address (IP_BIND_ADDRESS_NO_PORT
// on Linux) reaches the backend from that address.
func TestUpgradeSource(t *testing.T) {
	from := make(chan string, 1)
	be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		readHead(br)
		c.Write([]byte(answer101("k")))
		io.Copy(c, br)
	})
	p := newPlane(t, Config{Splice: true, Loops: 1})
	e := startUpgrade(t, p, listen(t), be.addr, &testJudge{key: "k"}, nil, nil, func(u *Upgrade) { u.Source = netip.MustParseAddr("127.0.0.7") })
	if r := e.result(t, 5*time.Second); r.Outcome != UpgradeSwitched {
		t.Fatalf("result %+v", r)
	}
	if got := <-from; got != "127.0.0.7" {
		t.Fatalf("backend saw the dial from %s", got)
	}
	// A source of the other family is refused at once.
	e = startUpgrade(t, p, listen(t), be.addr, &testJudge{key: "k"}, nil, nil, func(u *Upgrade) { u.Source = netip.MustParseAddr("::1") })
	if r := e.result(t, 5*time.Second); r.Outcome != UpgradeDialFailed {
		t.Fatalf("result %+v", r)
	}
}

// TestUpgradeLargePending: held client bytes far bigger than the socket
// buffers reach the backend after the switch, in order, before what the
// client sends later, although the backend is slow to read.
func TestUpgradeLargePending(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		pend := bytes.Repeat([]byte("0123456789abcdef"), (8<<20)/16)
		sums := make(chan [32]byte, 1)
		be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
			readHead(br)
			c.Write([]byte(answer101("k")))
			time.Sleep(200 * time.Millisecond)
			s, _, _ := drain(io.LimitReader(br, int64(len(pend))+5))
			sums <- s
		})
		p := newPlane(t, Config{Splice: on, Loops: 1})
		e := startUpgrade(t, p, listen(t), be.addr, &testJudge{key: "k"}, nil, pend, nil)
		if r := e.result(t, 5*time.Second); r.Outcome != UpgradeSwitched {
			t.Fatalf("result %+v", r)
		}
		e.client.Write([]byte("later"))
		want, _, _ := drain(io.MultiReader(bytes.NewReader(pend), bytes.NewReader([]byte("later"))))
		select {
		case got := <-sums:
			if got != want {
				t.Fatal("the backend got a different stream")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("backend still reading")
		}
	})
}

// TestUpgradeAllocs: what a switched upgrade allocates in the plane (the
// conn that becomes the tunnel, its handshake state), measured over a batch
// of upgrades whose client sockets exist beforehand and whose backend is a
// child process.
func TestUpgradeAllocs(t *testing.T) {
	const n = hsSlabSize // a batch the slab covers
	addr := childBackend(t)
	p := newPlane(t, Config{Splice: true, Loops: 1})
	ln := listen(t)
	run := func() float64 {
		fds := make([]int, n)
		cs := make([]*net.TCPConn, n)
		for i := range fds {
			cs[i], fds[i] = tcpPair(t, ln)
		}
		done := make(chan struct{}, n)
		onResult := func(UpgradeResult) { done <- struct{}{} }
		onClose := func(TunnelResult) {}
		j := &testJudge{key: "k"}
		head := []byte(testHead)
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for i := range fds {
			if err := p.Upgrade(Upgrade{ClientFD: fds[i], Backend: addr, Head: head, Judge: j, OnResult: onResult, OnClose: onClose}); err != nil {
				t.Fatal(err)
			}
		}
		timeout := time.NewTimer(20 * time.Second)
		for i := 0; i < n; i++ {
			select {
			case <-done:
			case <-timeout.C:
				t.Fatalf("%d of %d decided", i, n)
			}
		}
		runtime.ReadMemStats(&m1)
		timeout.Stop()
		for _, c := range cs {
			c.Close()
		}
		waitFor(5*time.Second, func() bool { return p.Stats().Tunnels == 0 })
		return float64(m1.Mallocs-m0.Mallocs) / n
	}
	run() // warm the pools
	per := run()
	t.Logf("%.2f allocations per upgrade", per)
	// The conn that becomes the tunnel; the handshake state comes from the
	// slab.
	if per > 1.5 {
		t.Fatalf("%.2f allocations per upgrade, want 1 (the conn)", per)
	}
}

// TestUpgradeCountsFDs: the fd budget counts an upgrade's client socket from
// Upgrade on and its backend socket from the dial on, the tunnel a switch
// makes holds two, and every other ending gives both back; OpenTunnels
// counts the upgrade as a connection throughout. With no room for the
// backend socket the client gets the judge's UpgradeNoFD answer.
func TestUpgradeCountsFDs(t *testing.T) {
	be := newUpBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		h, _ := readHead(br)
		if bytes.Contains([]byte(h), []byte("refuse")) {
			c.Write([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"))
			return
		}
		c.Write([]byte(answer101("k")))
		io.Copy(c, br)
	})
	b := fdbudget.New(1 << 20)
	p := newPlane(t, Config{Splice: true, Loops: 1, FDs: b, PipePoolMax: -1})
	ln := listen(t)
	sw := startUpgrade(t, p, ln, be.addr, &testJudge{key: "k"}, nil, nil, nil)
	if r := sw.result(t, 5*time.Second); r.Outcome != UpgradeSwitched {
		t.Fatalf("result %+v", r)
	}
	if !waitFor(2*time.Second, func() bool { return b.Used() == 2 && p.OpenTunnels() == 1 }) {
		t.Fatalf("a switched upgrade: budget %d, open %d; want 2 and 1", b.Used(), p.OpenTunnels())
	}
	ref := startUpgrade(t, p, ln, be.addr, &testJudge{key: "k"}, nil, nil, func(u *Upgrade) { u.Head = []byte("GET /refuse HTTP/1.1\r\n\r\n") })
	if r := ref.result(t, 5*time.Second); r.Outcome != UpgradeRefused {
		t.Fatalf("result %+v", r)
	}
	ref.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(ref.client)
	ref.client.Close()
	dead := listen(t)
	deadAddr := netip.MustParseAddrPort(dead.Addr().String())
	dead.Close()
	df := startUpgrade(t, p, ln, deadAddr, &testJudge{}, nil, nil, nil)
	if r := df.result(t, 5*time.Second); r.Outcome != UpgradeDialFailed {
		t.Fatalf("result %+v", r)
	}
	df.client.Close()
	if !waitFor(5*time.Second, func() bool { return b.Used() == 2 && p.OpenTunnels() == 1 }) {
		t.Fatalf("after a refusal and a failed dial: budget %d, open %d; want 2 and 1", b.Used(), p.OpenTunnels())
	}
	sw.client.Close()
	if !waitFor(5*time.Second, func() bool { return b.Used() == 0 && p.OpenTunnels() == 0 }) {
		t.Fatalf("all ended: budget %d, open %d", b.Used(), p.OpenTunnels())
	}

	// A budget with room for the client socket only.
	full := fdbudget.New(1)
	p2 := newPlane(t, Config{Splice: true, Loops: 1, FDs: full})
	e := startUpgrade(t, p2, ln, be.addr, &testJudge{key: "k"}, nil, nil, nil)
	r := e.result(t, 5*time.Second)
	if r.Outcome != UpgradeNoFD || r.Status != 503 {
		t.Fatalf("result %+v", r)
	}
	e.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, _ := io.ReadAll(e.client); string(got) != answer503 {
		t.Fatalf("client got %q", got)
	}
	if !waitFor(5*time.Second, func() bool { return full.Used() == 0 && p2.OpenTunnels() == 0 }) {
		t.Fatalf("budget %d, open %d", full.Used(), p2.OpenTunnels())
	}
}
