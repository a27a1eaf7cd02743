package load

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/bench/internal/backend"
	"github.com/wsgate/wsgate/bench/internal/stats"
)

func wsDialer(local *net.TCPAddr, rbuf, wbuf int, tlsCfg ...*tls.Config) *websocket.Dialer {
	nd := dialerFor(local, 10*time.Second)
	d := &websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   rbuf,
		WriteBufferSize:  wbuf,
	}
	if len(tlsCfg) > 0 {
		d.TLSClientConfig = tlsCfg[0] // wss:// (tls.go)
	}
	return d
}

// dialAll opens n WebSocket connections to url, at most par at a time, round-robin over the
// source addresses. On any failure it closes what it opened and returns the first error.
func dialAll(ctx context.Context, url string, n, par int, locals []*net.TCPAddr, rbuf, wbuf int, tlsCfg ...*tls.Config) ([]*websocket.Conn, error) {
	if par < 1 {
		par = 1
	}
	if len(locals) == 0 {
		locals = []*net.TCPAddr{nil}
	}
	dialers := make([]*websocket.Dialer, len(locals))
	for i, l := range locals {
		dialers[i] = wsDialer(l, rbuf, wbuf, tlsCfg...)
	}
	conns := make([]*websocket.Conn, n)
	var (
		next     atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
	)
	for w := 0; w < par && w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || firstErr.Load() != nil || ctx.Err() != nil {
					return
				}
				c, resp, err := dialers[i%len(dialers)].DialContext(ctx, url, nil)
				if err != nil {
					if resp != nil {
						err = fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
					}
					err = fmt.Errorf("ws dial %s #%d: %w", url, i, err)
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil || ctx.Err() != nil {
		closeAll(conns)
		if p != nil {
			return nil, *p
		}
		return nil, ctx.Err()
	}
	return conns, nil
}

func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		if c != nil {
			c.UnderlyingConn().Close()
		}
	}
}

// BulkResult is one bulk-throughput run.
type BulkResult struct {
	Bytes   int64         // payload bytes that arrived at the far end
	Elapsed time.Duration // from the common start to the last byte accounted
	Errors  int64
}

// MBps is payload megabytes (10^6 bytes) per second.
func (r BulkResult) MBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Elapsed.Seconds()
}

// BulkConfig is one bulk run: Conns connections all moving BulkFrame-byte messages in one
// direction for Duration. Up sends to /ws/sink, down reads from /ws/source.
type BulkConfig struct {
	Addr     string
	Up       bool
	Conns    int
	Duration time.Duration
	Locals   []*net.TCPAddr
	TLS      *tls.Config // set: wss:// (tls.go)
}

// RunBulk measures bulk WebSocket throughput. Upload counts only the bytes the sink
// acknowledges, timed to the acknowledgement, so bytes still queued in a proxy's buffers when
// the window closes are not counted as delivered.
func RunBulk(ctx context.Context, cfg BulkConfig) (BulkResult, error) {
	path := "/ws/source"
	if cfg.Up {
		path = "/ws/sink"
	}
	url := "ws://" + cfg.Addr + path
	var tlsCfg []*tls.Config
	if cfg.TLS != nil {
		url = "wss://" + cfg.Addr + path
		tlsCfg = append(tlsCfg, cfg.TLS)
	}
	conns, err := dialAll(ctx, url, cfg.Conns, 16, cfg.Locals, backend.BulkFrame, backend.BulkFrame+16, tlsCfg...)
	if err != nil {
		return BulkResult{}, err
	}
	defer closeAll(conns)
	var (
		wg       sync.WaitGroup
		total    atomic.Int64
		errs     atomic.Int64
		lastNano atomic.Int64
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(e error) {
		errs.Add(1)
		errMu.Lock()
		if firstErr == nil {
			firstErr = e
		}
		errMu.Unlock()
	}
	start := time.Now()
	stopAt := start.Add(cfg.Duration)
	for _, c := range conns {
		wg.Add(1)
		go func(c *websocket.Conn) {
			defer wg.Done()
			var end time.Time
			var n int64
			var err error
			if cfg.Up {
				n, end, err = upload(c, stopAt)
			} else {
				n, end, err = download(c, stopAt)
			}
			if err != nil {
				fail(err)
				return
			}
			total.Add(n)
			for {
				old := lastNano.Load()
				if end.UnixNano() <= old || lastNano.CompareAndSwap(old, end.UnixNano()) {
					break
				}
			}
		}(c)
	}
	wg.Wait()
	res := BulkResult{Bytes: total.Load(), Errors: errs.Load()}
	if l := lastNano.Load(); l > 0 {
		res.Elapsed = time.Unix(0, l).Sub(start)
	}
	if res.Bytes == 0 && firstErr != nil {
		return res, firstErr
	}
	return res, nil
}

func upload(c *websocket.Conn, stopAt time.Time) (int64, time.Time, error) {
	frame := make([]byte, backend.BulkFrame)
	for i := range frame {
		frame[i] = byte(i)
	}
	c.SetWriteDeadline(stopAt.Add(10 * time.Second))
	for time.Now().Before(stopAt) {
		if err := c.WriteMessage(websocket.BinaryMessage, frame); err != nil {
			return 0, time.Time{}, phaseErr("bulk upload write", err)
		}
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(backend.SinkDone)); err != nil {
		return 0, time.Time{}, phaseErr("bulk upload done", err)
	}
	c.SetReadDeadline(stopAt.Add(10 * time.Second))
	_, msg, err := c.ReadMessage()
	end := time.Now()
	if err != nil {
		return 0, end, phaseErr("bulk upload ack", err)
	}
	n, err := strconv.ParseInt(string(msg), 10, 64)
	if err != nil {
		return 0, end, phaseErr("bulk upload ack parse", err)
	}
	return n, end, nil
}

func download(c *websocket.Conn, stopAt time.Time) (int64, time.Time, error) {
	buf := make([]byte, 64<<10)
	var n int64
	c.SetReadDeadline(stopAt)
	for {
		_, r, err := c.NextReader()
		if err != nil {
			if isTimeout(err) {
				return n, time.Now(), nil
			}
			return n, time.Now(), phaseErr("bulk download frame", err)
		}
		for {
			m, err := r.Read(buf)
			n += int64(m)
			if err == io.EOF {
				break
			}
			if err != nil {
				if isTimeout(err) {
					return n, time.Now(), nil
				}
				return n, time.Now(), phaseErr("bulk download read", err)
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// RTTConfig is an open-loop echo run: Rate messages/s of Size bytes over Conns connections.
type RTTConfig struct {
	Addr     string
	Conns    int
	Rate     float64
	Size     int
	Duration time.Duration
	Locals   []*net.TCPAddr
}

// RTTResult is one open-loop run. Latencies are from each message's scheduled send time.
type RTTResult struct {
	Sent, Received          int64
	Errors                  int64
	Elapsed                 time.Duration // start to last answer
	P50, P99, P999, Max     time.Duration
	FirstErr                string
	ScheduledRate, Achieved float64
}

// RunRTT runs the open-loop echo test. Each connection sends its scheduled messages in order
// and waits for each echo; a late echo delays the next send, and that delay is charged to the
// next message's latency because latency is measured from the schedule.
func RunRTT(ctx context.Context, cfg RTTConfig) (RTTResult, error) {
	if cfg.Size < 8 {
		cfg.Size = 8
	}
	conns, err := dialAll(ctx, "ws://"+cfg.Addr+"/ws", cfg.Conns, 32, cfg.Locals, 1024, 1024)
	if err != nil {
		return RTTResult{}, err
	}
	defer closeAll(conns)
	sched := stats.Schedule{Rate: cfg.Rate, Conns: cfg.Conns}
	const shards = 16
	var (
		hists    [shards]stats.Histogram
		locks    [shards]sync.Mutex
		sent     atomic.Int64
		recv     atomic.Int64
		errs     atomic.Int64
		lastDone atomic.Int64
		errMu    sync.Mutex
		firstErr string
		wg       sync.WaitGroup
	)
	// A short lead so every goroutine is parked on its first due time before the clock starts.
	start := time.Now().Add(20 * time.Millisecond)
	hardEnd := start.Add(cfg.Duration + 5*time.Second)
	for ci, c := range conns {
		wg.Add(1)
		go func(ci int, c *websocket.Conn) {
			defer wg.Done()
			out := make([]byte, cfg.Size)
			for i := range out {
				out[i] = 'x'
			}
			in := make([]byte, cfg.Size)
			c.SetReadDeadline(hardEnd)
			c.SetWriteDeadline(hardEnd)
			n := sched.PerConn(ci, cfg.Duration)
			for i := int64(0); i < n; i++ {
				due := sched.ConnDue(ci, i)
				if w := time.Until(start.Add(due)); w > 0 {
					time.Sleep(w)
				}
				seq := uint64(sched.Seq(ci, i))
				binary.BigEndian.PutUint64(out, seq)
				sent.Add(1)
				if err := c.WriteMessage(websocket.BinaryMessage, out); err != nil {
					rttFail(&errs, &errMu, &firstErr, phaseErr("rtt write", err))
					return
				}
				_, r, err := c.NextReader()
				if err == nil {
					var m int
					m, err = io.ReadFull(r, in)
					if err == nil && m == cfg.Size {
						if extra, _ := r.Read(in[:1]); extra != 0 {
							err = errors.New("echo longer than sent")
						}
					}
				}
				if err != nil {
					rttFail(&errs, &errMu, &firstErr, phaseErr("rtt read echo", err))
					return
				}
				if binary.BigEndian.Uint64(in) != seq {
					rttFail(&errs, &errMu, &firstErr, fmt.Errorf("rtt echo: got seq %d, want %d", binary.BigEndian.Uint64(in), seq))
					return
				}
				done := time.Since(start)
				sh := ci % shards
				locks[sh].Lock()
				hists[sh].Record(stats.Latency(due, done))
				locks[sh].Unlock()
				recv.Add(1)
				for {
					old := lastDone.Load()
					if int64(done) <= old || lastDone.CompareAndSwap(old, int64(done)) {
						break
					}
				}
			}
		}(ci, c)
	}
	wg.Wait()
	var h stats.Histogram
	for i := range hists {
		h.Merge(&hists[i])
	}
	res := RTTResult{
		Sent: sent.Load(), Received: recv.Load(), Errors: errs.Load(), FirstErr: firstErr,
		Elapsed: time.Duration(lastDone.Load()), ScheduledRate: cfg.Rate,
		P50: h.Quantile(50), P99: h.Quantile(99), P999: h.Quantile(99.9), Max: h.Max(),
	}
	// Achieved over the scheduled window or the time the answers took, whichever is longer.
	win := res.Elapsed
	if win < cfg.Duration {
		win = cfg.Duration
	}
	res.Achieved = float64(res.Received) / win.Seconds()
	if res.Received == 0 && firstErr != "" {
		return res, errors.New(firstErr)
	}
	return res, nil
}

func rttFail(errs *atomic.Int64, mu *sync.Mutex, first *string, err error) {
	errs.Add(1)
	mu.Lock()
	if *first == "" {
		*first = err.Error()
	}
	mu.Unlock()
}

// IdleSet is a set of open, idle WebSocket tunnels to /ws.
type IdleSet struct {
	conns []*websocket.Conn
}

// OpenIdle opens k echo tunnels, par at a time, spread over the source addresses. Client
// buffers are tiny: the point is what the proxy keeps per tunnel, not the client.
func OpenIdle(ctx context.Context, addr string, k, par int, locals []*net.TCPAddr) (*IdleSet, error) {
	conns, err := dialAll(ctx, "ws://"+addr+"/ws", k, par, locals, 256, 256)
	if err != nil {
		return nil, err
	}
	return &IdleSet{conns: conns}, nil
}

// Len is the number of tunnels.
func (s *IdleSet) Len() int { return len(s.conns) }

// PingAll sends one 100-byte message through every tunnel and checks its echo; it returns how
// many tunnels answered correctly and the first failure.
func (s *IdleSet) PingAll(ctx context.Context, par int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	return eachTunnel(ctx, len(s.conns), par, "idle tunnel", func() func(int) error {
		msg := make([]byte, 100)
		return func(i int) error {
			c := s.conns[i]
			binary.BigEndian.PutUint64(msg, uint64(i))
			c.SetWriteDeadline(deadline)
			c.SetReadDeadline(deadline)
			err := c.WriteMessage(websocket.BinaryMessage, msg)
			var got []byte
			if err == nil {
				_, got, err = c.ReadMessage()
			}
			if err == nil && (len(got) != len(msg) || binary.BigEndian.Uint64(got) != uint64(i)) {
				err = fmt.Errorf("echo mismatch: %d bytes", len(got))
			}
			return err
		}
	})
}

// Close closes every tunnel.
func (s *IdleSet) Close() { closeAll(s.conns); s.conns = nil }

// HandshakeConfig is a new-tunnels-per-second run: Workers loops, each dialing, upgrading and
// resetting, for Duration.
type HandshakeConfig struct {
	Addr     string
	Workers  int
	Duration time.Duration
	Locals   []*net.TCPAddr
}

// HandshakeResult is one handshake-rate run.
type HandshakeResult struct {
	Upgrades, Errors int64
	Elapsed          time.Duration
	FirstErr         string
}

// PerSec is completed upgrades per second.
func (r HandshakeResult) PerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Upgrades) / r.Elapsed.Seconds()
}

// RunHandshakes counts completed 101 upgrades per second. Each tunnel is closed with an RST
// (SO_LINGER 0) once upgraded, so the client leaves no TIME_WAIT behind and the run measures
// handshakes rather than port exhaustion.
func RunHandshakes(ctx context.Context, cfg HandshakeConfig) (HandshakeResult, error) {
	if len(cfg.Locals) == 0 {
		cfg.Locals = []*net.TCPAddr{nil}
	}
	var (
		ok, bad atomic.Int64
		wg      sync.WaitGroup
		mu      sync.Mutex
		first   string
	)
	url := "ws://" + cfg.Addr + "/ws"
	start := time.Now()
	stopAt := start.Add(cfg.Duration)
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			d := wsDialer(cfg.Locals[w%len(cfg.Locals)], 256, 256)
			d.HandshakeTimeout = 5 * time.Second
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				c, _, err := d.DialContext(ctx, url, nil)
				if err != nil {
					bad.Add(1)
					mu.Lock()
					if first == "" {
						first = err.Error()
					}
					mu.Unlock()
					time.Sleep(time.Millisecond) // a refusing peer must not turn this into a spin
					continue
				}
				ok.Add(1)
				if tc, isTCP := c.UnderlyingConn().(*net.TCPConn); isTCP {
					tc.SetLinger(0)
				}
				c.UnderlyingConn().Close()
			}
		}(w)
	}
	wg.Wait()
	res := HandshakeResult{Upgrades: ok.Load(), Errors: bad.Load(), Elapsed: time.Since(start), FirstErr: first}
	if res.Upgrades == 0 && first != "" {
		return res, errors.New(first)
	}
	return res, nil
}
