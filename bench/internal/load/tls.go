package load

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TLS load (issue 9): https keep-alive, new and resumed handshakes, wss bulk and idle tunnels.

// ClientTLS is the benchmark's TLS client configuration, the same against every peer: X25519
// only (Go's client would also offer X25519MLKEM768, which a Go server picks and OpenSSL 3.0
// peers cannot, so the peers would not do the same work), ALPN http/1.1, and no certificate
// verification (the generator shares the CPUs with the proxies; verifying the one test
// certificate on every handshake would only tax all of them alike). Resume gives each caller its
// own session cache.
func ClientTLS(maxVersion uint16) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true,
		ServerName:         "localhost",
		NextProtos:         []string{"http/1.1"},
		CurvePreferences:   []tls.CurveID{tls.X25519},
		MaxVersion:         maxVersion,
	}
}

// dialer dials TCP, then TLS when cfg is set (the handshake happens on the first write).
type dialer struct {
	*net.Dialer
	tls *tls.Config
}

func (d dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil || d.tls == nil {
		return c, err
	}
	return tls.Client(c, d.tls), nil
}

// OpenIdleTLS is OpenIdle over wss.
func OpenIdleTLS(ctx context.Context, addr string, k, par int, locals []*net.TCPAddr, cfg *tls.Config) (*IdleSet, error) {
	conns, err := dialAll(ctx, "wss://"+addr+"/ws", k, par, locals, 256, 256, cfg)
	if err != nil {
		return nil, err
	}
	return &IdleSet{conns: conns}, nil
}

// TLSHandshakeConfig is a handshakes-per-second run: Workers loops, each connecting, completing
// a TLS handshake (a resumed one after the first when Resume), sending GET /100 and reading the
// answer, then resetting the connection, for Duration.
type TLSHandshakeConfig struct {
	Addr     string
	Workers  int
	Duration time.Duration
	Resume   bool
	Locals   []*net.TCPAddr
	TLS      *tls.Config
}

// TLSHandshakeResult is one handshake-rate run.
type TLSHandshakeResult struct {
	Handshakes, Resumed, Errors int64
	Elapsed                     time.Duration
	FirstErr                    string
}

// PerSec is completed handshakes (each with its request answered) per second.
func (r TLSHandshakeResult) PerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Handshakes) / r.Elapsed.Seconds()
}

// RunTLSHandshakes counts completed handshakes per second.
func RunTLSHandshakes(ctx context.Context, cfg TLSHandshakeConfig) (TLSHandshakeResult, error) {
	if len(cfg.Locals) == 0 {
		cfg.Locals = []*net.TCPAddr{nil}
	}
	var (
		ok, resumed, bad atomic.Int64
		wg               sync.WaitGroup
		mu               sync.Mutex
		first            string
	)
	req := []byte("GET /100 HTTP/1.1\r\nHost: localhost\r\n\r\n")
	start := time.Now()
	stopAt := start.Add(cfg.Duration)
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			tc := cfg.TLS.Clone()
			if cfg.Resume {
				tc.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			d := dialerFor(cfg.Locals[w%len(cfg.Locals)], 5*time.Second)
			br := bufio.NewReaderSize(nil, 4096)
			fail := func(err error) {
				bad.Add(1)
				mu.Lock()
				if first == "" {
					first = err.Error()
				}
				mu.Unlock()
				time.Sleep(time.Millisecond) // a refusing peer must not turn this into a spin
			}
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
				if err != nil {
					fail(err)
					continue
				}
				nc.SetDeadline(time.Now().Add(5 * time.Second))
				c := tls.Client(nc, tc)
				err = c.HandshakeContext(ctx)
				if err == nil {
					_, err = c.Write(req)
				}
				if err == nil {
					br.Reset(c)
					_, _, err = readResponse(br, 100) // also takes the TLS 1.3 ticket in
				}
				if tcp, isTCP := nc.(*net.TCPConn); isTCP {
					tcp.SetLinger(0) // no TIME_WAIT pile-up: measure handshakes, not ports
				}
				if err != nil {
					nc.Close()
					fail(err)
					continue
				}
				ok.Add(1)
				if c.ConnectionState().DidResume {
					resumed.Add(1)
				}
				nc.Close()
			}
		}(w)
	}
	wg.Wait()
	res := TLSHandshakeResult{Handshakes: ok.Load(), Resumed: resumed.Load(), Errors: bad.Load(), Elapsed: time.Since(start), FirstErr: first}
	if res.Handshakes == 0 && first != "" {
		return res, errors.New(first)
	}
	return res, nil
}
