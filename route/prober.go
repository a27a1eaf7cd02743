package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"
)

// Active health: one goroutine per probed member, off the event loops. Each probe is a fresh
// connection (from the member's source addresses, like real traffic), a hand-written
// "GET path HTTP/1.1" with Connection: close, and a read of the status line only: 2xx and 3xx
// are up, anything else (a refused connect, a timeout, a 500, garbage) is down. probeFall
// failures in a row take the member out, probeRise successes bring it back; the member starts up.
const (
	probeFall       = 2
	probeRise       = 2
	maxStatusLine   = 512
	probeMaxTimeout = 5 * time.Second
)

// Start commits the table: members take its passive-health settings, and a prober starts for
// every member that has a health path. Probers of an earlier table for the same members stop
// writing health from here on (their table's Close stops them). Start is idempotent.
func (t *Table) Start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started {
		return
	}
	t.started = true
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	for _, m := range t.members {
		m.passive.setConfig(t.passive)
		gen := m.healthGen.Add(1)
		c := t.conf[m]
		if c.healthPath == "" {
			m.activeDown.Store(false)
			continue
		}
		p := &prober{m: m, gen: gen, d: c.dialer, path: c.healthPath, interval: c.healthInterval, t: t}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			p.run(ctx)
		}()
	}
}

// Close stops the table's probers and waits for them. The routes stay usable (a request that
// matched just before a reload finishes on its route).
func (t *Table) Close() {
	t.mu.Lock()
	cancel := t.cancel
	t.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	t.wg.Wait()
}

type prober struct {
	m        *Member
	gen      uint64
	d        *Dialer
	path     string
	interval time.Duration
	t        *Table
}

func (p *prober) run(ctx context.Context) {
	// Spread the probes of many members (and of many wsgate processes) over the interval.
	wait := time.Duration(rand.Int64N(int64(p.interval)))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	timeout := min(p.interval, probeMaxTimeout)
	down := p.m.activeDown.Load()
	var fails, oks int
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := Probe(ctx, p.d, p.path, timeout)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails, oks = fails+1, 0
		} else {
			fails, oks = 0, oks+1
		}
		switch {
		case !down && fails >= probeFall:
			down = true
			if p.m.healthGen.Load() == p.gen {
				p.m.activeDown.Store(true)
				p.t.log.Warn("backend down", "backend", p.m.addr, "check", "active", "path", p.path, "err", err)
			}
		case down && oks >= probeRise:
			down = false
			if p.m.healthGen.Load() == p.gen {
				p.m.activeDown.Store(false)
				p.t.log.Info("backend up", "backend", p.m.addr, "check", "active", "path", p.path)
			}
		}
		if p.m.healthGen.Load() != p.gen {
			return // a newer table owns this member's probes
		}
		// +-10% so that probes started together drift apart.
		j := p.interval / 10
		next := p.interval - j
		if j > 0 {
			next += time.Duration(rand.Int64N(int64(2 * j)))
		}
		timer.Reset(next)
	}
}

// Probe runs one active health check against d's member: connect, send
// "GET path HTTP/1.1" with Connection: close, read the status line. It returns nil for a 2xx or
// 3xx status, else an error naming the backend and the phase. The whole probe is bounded by
// timeout and by ctx.
func Probe(ctx context.Context, d *Dialer, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		var de *DialError
		if errors.As(err, &de) {
			err = de.Err
		}
		return fmt.Errorf("backend %s: health %s: connect: %w", d.addr, path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	host := d.addr
	req := make([]byte, 0, 128+len(path)+len(host))
	req = append(req, "GET "...)
	req = append(req, path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, host...)
	req = append(req, "\r\nUser-Agent: wsgate-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"...)
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("backend %s: health %s: send: %w", d.addr, path, err)
	}
	var buf [maxStatusLine]byte
	n := 0
	for {
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return checkStatusLine(d.addr, path, buf[:i])
		}
		if n == len(buf) {
			return fmt.Errorf("backend %s: health %s: status line longer than %d bytes", d.addr, path, maxStatusLine)
		}
		k, err := c.Read(buf[n:])
		n += k
		if err != nil && k == 0 {
			if bytes.IndexByte(buf[:n], '\n') >= 0 {
				continue
			}
			if n == 0 && errors.Is(err, net.ErrClosed) {
				err = context.Cause(ctx)
			}
			return fmt.Errorf("backend %s: health %s: status line: %w", d.addr, path, err)
		}
	}
}

// checkStatusLine accepts "HTTP/1.x 2xx ..." and "HTTP/1.x 3xx ...".
func checkStatusLine(addr, path string, line []byte) error {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return fmt.Errorf("backend %s: health %s: not an HTTP/1.x status line: %q", addr, path, line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 {
		return fmt.Errorf("backend %s: health %s: bad status code in %q", addr, path, line)
	}
	if code < 200 || code >= 400 {
		return fmt.Errorf("backend %s: health %s: status %d", addr, path, code)
	}
	return nil
}
