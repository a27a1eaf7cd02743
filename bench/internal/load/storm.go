package load

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// A reconnect storm: every live tail reconnects at once after a restart or a network blip. The
// storm generator opens Clients WebSocket tunnels with at most Par upgrades in flight, from
// several source addresses, on raw sockets (a fixed request head, the 101 read and its
// Sec-WebSocket-Accept checked) so the generator itself costs little next to the proxy. The
// tunnels stay open afterwards (StormSet) for an idle-memory reading and one echo each.

// StormConfig is one storm.
type StormConfig struct {
	Addr    string
	Clients int            // tunnels to open
	Par     int            // upgrades in flight at once
	Locals  []*net.TCPAddr // source addresses, round robin
	Timeout time.Duration  // per upgrade, connect to verified 101 (default 10s)
}

// StormResult is one storm's figures. Latency runs from the start of the TCP connect to the
// verified 101.
type StormResult struct {
	Upgrades, Errors int64
	Elapsed          time.Duration // first connect to last verified 101
	P50, P99, Max    time.Duration
	FirstErr         string
	Set              *StormSet // the tunnels that came up; the caller closes them
}

// PerSec is verified upgrades per second over the storm.
func (r StormResult) PerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Upgrades) / r.Elapsed.Seconds()
}

// StormSet is the tunnels a storm opened.
type StormSet struct {
	conns []net.Conn
}

// Len is the number of open tunnels.
func (s *StormSet) Len() int { return len(s.conns) }

// Close closes every tunnel.
func (s *StormSet) Close() {
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// stormKey is the Sec-WebSocket-Key every storm client sends (any 16 bytes in base64 do; the
// proxy and the backend check the accept value, not the key's freshness).
const stormKey = "d3NiZW5jaC1zdG9ybS0xNg==" // base64 of the 16 bytes "wsbench-storm-16"

func acceptFor(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// RunStorm opens cfg.Clients tunnels to ws://Addr/ws, cfg.Par at a time.
func RunStorm(ctx context.Context, cfg StormConfig) (StormResult, error) {
	if cfg.Par < 1 {
		cfg.Par = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if len(cfg.Locals) == 0 {
		cfg.Locals = []*net.TCPAddr{nil}
	}
	req := []byte("GET /ws HTTP/1.1\r\nHost: " + cfg.Addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + stormKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n")
	accept := []byte(acceptFor(stormKey))
	dialers := make([]*net.Dialer, len(cfg.Locals))
	for i, l := range cfg.Locals {
		dialers[i] = dialerFor(l, cfg.Timeout)
	}
	var (
		next     atomic.Int64
		errs     atomic.Int64
		mu       sync.Mutex
		firstErr string
		wg       sync.WaitGroup
		lastDone atomic.Int64
	)
	conns := make([]net.Conn, cfg.Clients)
	lat := make([]time.Duration, cfg.Clients)
	start := time.Now()
	for w := 0; w < cfg.Par && w < cfg.Clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1024)
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Clients || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				c, err := stormUpgrade(ctx, dialers[i%len(dialers)], cfg.Addr, req, accept, buf, t0.Add(cfg.Timeout))
				if err != nil {
					errs.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = fmt.Sprintf("storm client %d: %v", i, err)
					}
					mu.Unlock()
					continue
				}
				done := time.Now()
				conns[i], lat[i] = c, done.Sub(t0)
				for {
					old := lastDone.Load()
					d := int64(done.Sub(start))
					if d <= old || lastDone.CompareAndSwap(old, d) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	res := StormResult{Errors: errs.Load(), FirstErr: firstErr, Elapsed: time.Duration(lastDone.Load()), Set: &StormSet{}}
	var ok []time.Duration
	for i, c := range conns {
		if c != nil {
			res.Set.conns = append(res.Set.conns, c)
			ok = append(ok, lat[i])
		}
	}
	res.Upgrades = int64(len(ok))
	if len(ok) > 0 {
		sort.Slice(ok, func(a, b int) bool { return ok[a] < ok[b] })
		q := func(p float64) time.Duration { return ok[min(len(ok)-1, int(float64(len(ok))*p/100))] }
		res.P50, res.P99, res.Max = q(50), q(99), ok[len(ok)-1]
	}
	if res.Upgrades == 0 && firstErr != "" {
		return res, errors.New(firstErr)
	}
	return res, ctx.Err()
}

// stormUpgrade connects, sends the upgrade and reads the answer head (nothing is glued behind a
// 101 by the benchmark backend before the client speaks), checking status and accept.
func stormUpgrade(ctx context.Context, d *net.Dialer, addr string, req, accept, buf []byte, deadline time.Time) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, phaseErr("connect", err)
	}
	c.SetDeadline(deadline)
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, phaseErr("write upgrade", err)
	}
	n := 0
	for {
		if n == len(buf) {
			c.Close()
			return nil, errors.New("answer head larger than 1 KiB")
		}
		m, err := c.Read(buf[n:])
		n += m
		if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
			if i+4 != n && bytes.HasPrefix(buf, []byte("HTTP/1.1 101 ")) {
				c.Close()
				return nil, errors.New("bytes behind the 101 before the client spoke")
			}
			n = i + 4
			break
		}
		if err != nil {
			c.Close()
			return nil, phaseErr("read 101", err)
		}
	}
	head := buf[:n]
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		c.Close()
		line, _, _ := bytes.Cut(head, []byte("\r\n"))
		return nil, fmt.Errorf("answer %q", line)
	}
	if !acceptOK(head, accept) {
		c.Close()
		return nil, errors.New("101 without the right Sec-WebSocket-Accept")
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// acceptOK finds the Sec-WebSocket-Accept line (name in any case) and compares its value.
func acceptOK(head, want []byte) bool {
	const name = "\r\nsec-websocket-accept:"
	for i := 0; i+len(name) <= len(head); i++ {
		if !asciiEqualFold(head[i:i+len(name)], name) {
			continue
		}
		v := head[i+len(name):]
		if e := bytes.Index(v, []byte("\r\n")); e >= 0 {
			v = v[:e]
		}
		return bytes.Equal(bytes.TrimSpace(v), want)
	}
	return false
}

// EchoAll sends one masked 100-byte binary frame through every tunnel and checks the echo
// (an unmasked frame with the same payload), par at a time. It returns how many answered.
func (s *StormSet) EchoAll(ctx context.Context, par int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	return eachTunnel(ctx, len(s.conns), par, "storm tunnel", func() func(int) error {
		frame := make([]byte, 6+100)
		in := make([]byte, 2+100)
		return func(i int) error {
			c := s.conns[i]
			frame[0], frame[1] = 0x82, 0x80|100
			mask := [4]byte{byte(i), byte(i >> 8), 0x5a, 0xa5}
			copy(frame[2:6], mask[:])
			for k := 0; k < 100; k++ {
				frame[6+k] = byte(i+k) ^ mask[k%4]
			}
			c.SetDeadline(deadline)
			_, err := c.Write(frame)
			if err == nil {
				_, err = io.ReadFull(c, in)
			}
			if err == nil && (in[0] != 0x82 || in[1] != 100 || !echoOK(in[2:], i)) {
				err = fmt.Errorf("echo mismatch: % x", in[:6])
			}
			return err
		}
	})
}

// eachTunnel runs one check per tunnel index 0..n-1 on par goroutines (each with the check its
// worker() makes, so that buffers are per goroutine) until every index is done or ctx ends; it
// returns how many passed and the first failure, named "<what> <index>".
func eachTunnel(ctx context.Context, n, par int, what string, worker func() func(i int) error) (int, error) {
	var (
		next, ok atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		first    error
	)
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			check := worker()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := check(i); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("%s %d: %w", what, i, err)
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(ok.Load()), first
}

func echoOK(p []byte, i int) bool {
	for k, b := range p {
		if b != byte(i+k) {
			return false
		}
	}
	return true
}
