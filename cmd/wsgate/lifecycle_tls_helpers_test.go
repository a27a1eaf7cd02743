package main

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TLS clients of the lifecycle tests (reload, upgrade): WSS tunnels carrying numbered lines, and
// keep-alive connections, over crypto/tls.

// tlsStream is a WSS tunnel through wsgate from a crypto/tls client to lcServer's echo, carrying
// numbered lines: a writer sends "<id>:<seq>\n" every few ms, a reader checks that every line
// comes back once and in order.
type tlsStream struct {
	id      int
	c       *tls.Conn
	version uint16
	sent    atomic.Int64
	got     atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	errMu   sync.Mutex
	err     error
}

func (s *tlsStream) fail(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
}

func (s *tlsStream) firstErr() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// upgradeOver sends a WebSocket upgrade on c and reads the 101.
func upgradeOver(t *testing.T, c net.Conn) *bufio.Reader {
	t.Helper()
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		t.Fatalf("upgrade over TLS through wsgate: %v %v", err, resp)
	}
	c.SetDeadline(time.Time{})
	return br
}

func startTLSStream(t *testing.T, id int, addr string, cfg *tls.Config) *tlsStream {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("stream %d: %v", id, err)
	}
	t.Cleanup(func() { c.Close() })
	br := upgradeOver(t, c)
	s := &tlsStream{id: id, c: c, version: c.ConnectionState().Version, stop: make(chan struct{}), done: make(chan struct{})}
	go func() { // writer
		for seq := int64(0); ; seq++ {
			select {
			case <-s.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprintf(c, "%d:%d\n", id, seq); err != nil {
				s.fail(fmt.Errorf("stream %d: write %d: %w", id, seq, err))
				return
			}
			s.sent.Add(1)
		}
	}()
	go func() { // reader
		defer close(s.done)
		for want := int64(0); ; want++ {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			line, err := br.ReadString('\n')
			if err != nil {
				select {
				case <-s.stop:
				default:
					s.fail(fmt.Errorf("stream %d: read after %d lines: %w", id, want, err))
				}
				return
			}
			if line != fmt.Sprintf("%d:%d\n", id, want) {
				s.fail(fmt.Errorf("stream %d: line %q, want %d:%d (lost, duplicated or reordered)", id, line, id, want))
				return
			}
			s.got.Add(1)
		}
	}()
	return s
}

// finish stops writing and waits until every line sent came back.
func (s *tlsStream) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	deadline := time.Now().Add(10 * time.Second)
	for s.got.Load() < s.sent.Load() && s.firstErr() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	if g, w := s.got.Load(), s.sent.Load(); g != w {
		t.Fatalf("stream %d: %d lines came back of %d sent", s.id, g, w)
	}
}

// dialKATLS is a keep-alive HTTP/1.1 client over TLS.
func dialKATLS(t *testing.T, addr string, cfg *tls.Config) *kaClient {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &kaClient{Conn: c, br: bufio.NewReader(c)}
}
