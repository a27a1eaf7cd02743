package accesslog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Log.
type Config struct {
	Format        Format
	RingSize      int           // bytes per loop's ring, default 256 KiB (rounded up to a power of two, at least 4 KiB)
	FlushInterval time.Duration // the drain goroutine's tick, default 100 ms: the longest a line waits in a quiet loop's ring
	CloseTimeout  time.Duration // how long Close waits for a stuck destination, default 5 s
	Logger        *slog.Logger  // where write and reopen errors go (rate-limited); default slog.Default()
}

const (
	defaultRingSize      = 256 << 10
	defaultFlushInterval = 100 * time.Millisecond
	defaultCloseTimeout  = 5 * time.Second
)

// Log is an access log: per-loop Writers drained by one goroutine to one destination. A nil
// *Log is a log that is off: NewWriter returns nil and everything else does nothing.
type Log struct {
	cfg  Config
	path string // file destination, "" for a plain writer

	mu      sync.Mutex
	writers []*Writer

	out      io.Writer  // owned by the drain goroutine
	file     *os.File   // out when the destination is a file
	fmt      *formatter // the drain goroutine's: records to lines
	wake     chan struct{}
	reopen   chan chan error
	flush    chan chan struct{}
	closing  chan struct{}
	done     chan struct{}
	closed   atomic.Bool
	lost     atomic.Uint64 // lines accepted but lost to a write error
	lastWarn time.Time     // drain goroutine only
}

// Open opens the destination of -access-log: "off" (returns a nil *Log), "stdout", "stderr",
// or a file path (created 0640 if missing, appended to; a file named like a keyword is
// written ./stdout).
func Open(dest string, cfg Config) (*Log, error) {
	switch dest {
	case "off":
		return nil, nil
	case "stdout":
		return New(os.Stdout, cfg), nil
	case "stderr", "":
		return New(os.Stderr, cfg), nil
	}
	f, err := openFile(dest)
	if err != nil {
		return nil, err
	}
	l := newLog(f, cfg)
	l.file, l.path = f, dest
	go l.run()
	return l, nil
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("access log %s: %w", path, err)
	}
	return f, nil
}

// New returns a Log that writes to w (which only the Log's goroutine calls).
func New(w io.Writer, cfg Config) *Log {
	l := newLog(w, cfg)
	go l.run()
	return l
}

func newLog(w io.Writer, cfg Config) *Log {
	if cfg.RingSize <= 0 {
		cfg.RingSize = defaultRingSize
	}
	size := 4096
	for size < cfg.RingSize {
		size <<= 1
	}
	cfg.RingSize = size
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = defaultFlushInterval
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = defaultCloseTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Log{
		cfg:     cfg,
		out:     w,
		fmt:     newFormatter(cfg.Format),
		wake:    make(chan struct{}, 1),
		reopen:  make(chan chan error),
		flush:   make(chan chan struct{}),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// NewWriter returns a Writer for one event loop (call it once per loop, at the loop's start).
func (l *Log) NewWriter() *Writer {
	if l == nil {
		return nil
	}
	w := &Writer{log: l, ring: make([]byte, l.cfg.RingSize), mask: uint64(l.cfg.RingSize - 1)}
	l.mu.Lock()
	l.writers = append(l.writers, w)
	l.mu.Unlock()
	return w
}

// Dropped is the number of lines lost so far: found no room in a ring, or failed to write.
func (l *Log) Dropped() uint64 {
	if l == nil {
		return 0
	}
	n := l.lost.Load()
	l.mu.Lock()
	for _, w := range l.writers {
		n += w.dropped.Load()
	}
	l.mu.Unlock()
	return n
}

// Reopen closes and reopens a file destination by its path (logrotate has renamed it): lines
// accepted before the call are written to the old file first, later ones go to the new file.
// It waits for the drain goroutine, so it returns late if the destination is stuck. A failed
// open keeps the old file. No-op for stdout, stderr and plain writers.
func (l *Log) Reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	res := make(chan error, 1)
	select {
	case l.reopen <- res:
		return <-res
	case <-l.done:
		return errors.New("access log: closed")
	}
}

// Flush returns once every line accepted before the call has been handed to the destination
// (benchmarks and tests; the log flushes by itself every FlushInterval). It waits for the drain
// goroutine, so it returns late if the destination is stuck.
func (l *Log) Flush() {
	if l == nil {
		return
	}
	done := make(chan struct{})
	select {
	case l.flush <- done:
		<-done
	case <-l.done:
	}
}

// Close writes every accepted line, closes a file destination and stops the goroutine. The
// loops must have stopped logging (later lines are dropped). If the destination does not take
// the lines within CloseTimeout, Close gives up and says so.
func (l *Log) Close() error {
	if l == nil || !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(l.closing)
	select {
	case <-l.done:
	case <-time.After(l.cfg.CloseTimeout):
		return fmt.Errorf("access log: destination did not take the last lines within %v", l.cfg.CloseTimeout)
	}
	if l.file != nil {
		return l.file.Close()
	}
	return nil
}

// kick wakes the drain goroutine without ever blocking the caller.
func (l *Log) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(l.cfg.FlushInterval)
	defer tick.Stop()
	var ws []*Writer
	for {
		select {
		case <-tick.C:
		case <-l.wake:
		case res := <-l.reopen:
			ws = l.drainAll(ws)
			res <- l.doReopen()
			continue
		case done := <-l.flush:
			ws = l.drainAll(ws)
			close(done)
			continue
		case <-l.closing:
			l.drainAll(ws)
			return
		}
		ws = l.drainAll(ws)
	}
}

// drainAll drains every writer's ring once; ws is reused between rounds.
func (l *Log) drainAll(ws []*Writer) []*Writer {
	l.mu.Lock()
	ws = append(ws[:0], l.writers...)
	l.mu.Unlock()
	for _, w := range ws {
		w.drain(l.fmt, l.write)
	}
	return ws
}

// write sends p to the destination; on an error the lines in p are counted lost.
func (l *Log) write(p []byte) {
	_, err := l.out.Write(p)
	if err == nil {
		return
	}
	n := bytes.Count(p, []byte{'\n'})
	l.lost.Add(uint64(n))
	if now := time.Now(); now.Sub(l.lastWarn) >= 10*time.Second {
		l.lastWarn = now
		l.cfg.Logger.Error("access log write failed; lines dropped", "dest", l.dest(), "lines", n, "err", err)
	}
}

func (l *Log) dest() string {
	if l.path != "" {
		return l.path
	}
	return fmt.Sprintf("%T", l.out)
}

func (l *Log) doReopen() error {
	f, err := openFile(l.path)
	if err != nil {
		l.cfg.Logger.Error("access log reopen failed; still writing to the old file", "path", l.path, "err", err)
		return err
	}
	old := l.file
	l.file, l.out = f, f
	if err := old.Close(); err != nil {
		l.cfg.Logger.Warn("access log: closing the old file", "path", l.path, "err", err)
	}
	return nil
}
