package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/bench/internal/stats"
)

// HTTPResult is one closed-loop HTTP run.
type HTTPResult struct {
	Requests int64         // completed 200 responses with the full body
	Errors   int64         // failed requests (connect, read, status, short body)
	Elapsed  time.Duration // wall time of the measured window
	P50, P99 time.Duration
	// LoadCPU is the CPU the generator process used (user+sys); set by RunWrk, where the
	// generator is a separate process. Zero for the in-process generator.
	LoadCPU  time.Duration
	FirstErr string
}

// RPS is completed requests per second.
func (r HTTPResult) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// HTTPConfig describes a closed-loop run: Conns keep-alive connections, each sending GET Path
// and waiting for the whole response before the next, for Duration.
type HTTPConfig struct {
	Addr     string // host:port
	Path     string
	Conns    int
	Duration time.Duration
	BodySize int         // expected body length; a different length counts as an error
	TLS      *tls.Config // set: https (each connection does one handshake, then keep-alive)
}

// RunHTTP is the in-process closed-loop generator: raw keep-alive connections and a minimal
// response parser, so on a 2-core box the generator costs little more than wrk would.
func RunHTTP(ctx context.Context, cfg HTTPConfig) (HTTPResult, error) {
	if cfg.Conns < 1 {
		cfg.Conns = 1
	}
	req := []byte("GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Addr + "\r\nUser-Agent: wsbench\r\n\r\n")
	conns := make([]net.Conn, cfg.Conns)
	d := dialer{dialerFor(nil, 5*time.Second), cfg.TLS}
	for i := range conns {
		c, err := d.DialContext(ctx, "tcp", cfg.Addr)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return HTTPResult{}, phaseErr("http dial "+cfg.Addr, err)
		}
		conns[i] = c
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		hist    stats.Histogram
		total   HTTPResult
		start   = time.Now()
		stopAt  = start.Add(cfg.Duration)
		hardEnd = stopAt.Add(5 * time.Second)
	)
	for i := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			var h stats.Histogram // per goroutine: recording takes no lock
			var ok, bad int64
			var firstErr string
			br := bufio.NewReaderSize(c, 32<<10)
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				c.SetDeadline(hardEnd)
				t := time.Now()
				if _, err := c.Write(req); err != nil {
					bad++
					firstErr = err.Error()
					break
				}
				_, keep, err := readResponse(br, cfg.BodySize)
				if err != nil {
					bad++
					firstErr = err.Error()
					break
				}
				h.Record(time.Since(t))
				ok++
				if !keep {
					c.Close()
					nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
					if err != nil {
						firstErr = err.Error()
						bad++
						return
					}
					c = nc
					br.Reset(c)
				}
			}
			c.Close()
			mu.Lock()
			hist.Merge(&h)
			total.Requests += ok
			total.Errors += bad
			if total.FirstErr == "" {
				total.FirstErr = firstErr
			}
			mu.Unlock()
		}(conns[i])
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	total.P50 = hist.Quantile(50)
	total.P99 = hist.Quantile(99)
	return total, nil
}

var errBadResponse = errors.New("bad response")

// readResponse reads one response head and its Content-Length body from br. It returns the
// body length and whether the connection stays open.
func readResponse(br *bufio.Reader, want int) (int, bool, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, phaseErr("http read status", err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || string(line[9:12]) != "200" {
		return 0, false, fmt.Errorf("http status line %q: %w", bytes.TrimSpace(line), errBadResponse)
	}
	keep := line[7] == '1'
	clen := -1
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, phaseErr("http read header", err)
		}
		if len(h) <= 2 {
			break
		}
		colon := bytes.IndexByte(h, ':')
		if colon < 0 {
			continue
		}
		name, val := h[:colon], bytes.TrimSpace(h[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			clen, err = strconv.Atoi(string(val)) // string(val) in a conversion call does not allocate
			if err != nil {
				return 0, false, fmt.Errorf("http content-length %q: %w", val, errBadResponse)
			}
		case asciiEqualFold(name, "connection"):
			if asciiEqualFold(val, "close") {
				keep = false
			}
		case asciiEqualFold(name, "transfer-encoding"):
			return 0, false, fmt.Errorf("http transfer-encoding %q unsupported: %w", val, errBadResponse)
		}
	}
	if clen < 0 {
		return 0, false, fmt.Errorf("http response without content-length: %w", errBadResponse)
	}
	if _, err := br.Discard(clen); err != nil {
		return 0, false, phaseErr("http read body", err)
	}
	if want > 0 && clen != want {
		return clen, keep, fmt.Errorf("http body %d bytes, want %d: %w", clen, want, errBadResponse)
	}
	return clen, keep, nil
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// WrkConfig is one wrk run.
type WrkConfig struct {
	Binary   string // path to wrk
	URL      string
	Conns    int
	Threads  int
	Duration time.Duration
	Taskset  []string // e.g. ["taskset", "-c", "1"] to pin the load; empty: not pinned
}

// RunWrk runs wrk and parses its summary. The CPU wrk used comes from its rusage, exactly.
func RunWrk(ctx context.Context, cfg WrkConfig) (HTTPResult, error) {
	secs := int(cfg.Duration.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	args := append([]string{}, cfg.Taskset...)
	args = append(args, cfg.Binary, "-t", strconv.Itoa(cfg.Threads), "-c", strconv.Itoa(cfg.Conns),
		"-d", strconv.Itoa(secs)+"s", "--latency", "--timeout", "5s", cfg.URL)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return HTTPResult{}, fmt.Errorf("wrk %s: %v: %s", cfg.URL, err, strings.TrimSpace(out.String()))
	}
	res, err := ParseWrk(out.String())
	if err != nil {
		return res, fmt.Errorf("wrk %s: %w", cfg.URL, err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.LoadCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return res, nil
}

var (
	wrkReqs    = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(us|ms|s|m)`)
	wrkLat     = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// ParseWrk extracts completed requests, the window, p50/p99 and error counts from wrk's
// --latency output. Requests/sec is recomputed from "N requests in T" rather than trusted.
func ParseWrk(out string) (HTTPResult, error) {
	var r HTTPResult
	m := wrkReqs.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no \"requests in\" line in wrk output")
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	r.Requests = n
	r.Elapsed = wrkDur(m[2], m[3])
	for _, l := range wrkLat.FindAllStringSubmatch(out, -1) {
		d := wrkDur(l[2], l[3])
		if l[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if e := wrkSockErr.FindStringSubmatch(out); e != nil {
		for _, s := range e[1:] {
			v, _ := strconv.ParseInt(s, 10, 64)
			r.Errors += v
		}
		r.FirstErr = e[0]
	}
	if e := wrkNon2xx.FindStringSubmatch(out); e != nil {
		v, _ := strconv.ParseInt(e[1], 10, 64)
		r.Errors += v
		r.Requests -= v
		r.FirstErr = e[0]
	}
	if r.Elapsed <= 0 {
		return r, errors.New("wrk reported a zero window")
	}
	return r, nil
}

func wrkDur(num, unit string) time.Duration {
	f, _ := strconv.ParseFloat(num, 64)
	switch unit {
	case "us":
		return time.Duration(f * float64(time.Microsecond))
	case "ms":
		return time.Duration(f * float64(time.Millisecond))
	case "m":
		return time.Duration(f * float64(time.Minute))
	}
	return time.Duration(f * float64(time.Second))
}
