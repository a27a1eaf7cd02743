package accesslog

import (
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// Writer is one event loop's access log: only that loop calls Request and Tunnel. A nil
// *Writer (the log is off) accepts every call and does nothing.
//
// Lines go into a byte ring that the Log's goroutine drains. The loop is the only producer
// (it moves tail), the drain goroutine the only consumer (it moves head); each reads the
// other's index atomically, so the bytes between them change hands without a lock.
type Writer struct {
	_       cpu.CacheLinePad
	log     *Log
	format  Format
	clock   clock
	line    line
	ring    []byte
	mask    uint64
	tail    atomic.Uint64 // written by the loop: bytes ever accepted
	dropped atomic.Uint64 // written by the loop: lines that found no room
	_       cpu.CacheLinePad
	head    atomic.Uint64 // written by the drain goroutine: bytes ever written out
	_       cpu.CacheLinePad
}

// Request logs one finished exchange. It copies what it needs from r before returning.
func (w *Writer) Request(r *Request) {
	if w == nil {
		return
	}
	w.line.request(w.format, &w.clock, r)
	w.put(w.line.b)
}

// Tunnel logs one closed tunnel.
func (w *Writer) Tunnel(t *Tunnel) {
	if w == nil {
		return
	}
	w.line.tunnel(w.format, &w.clock, t)
	w.put(w.line.b)
}

// Dropped is the number of lines this writer could not queue.
func (w *Writer) Dropped() uint64 {
	if w == nil {
		return 0
	}
	return w.dropped.Load()
}

// put copies one line into the ring, or counts it dropped when it does not fit. The drain
// goroutine is woken early when the ring passes half full; otherwise it drains on its tick.
func (w *Writer) put(p []byte) {
	size := uint64(len(w.ring))
	t := w.tail.Load()
	used := t - w.head.Load()
	n := uint64(len(p))
	if n > size-used {
		w.dropped.Store(w.dropped.Load() + 1)
		w.log.kick()
		return
	}
	off := t & w.mask
	if c := copy(w.ring[off:], p); c < len(p) {
		copy(w.ring, p[c:])
	}
	w.tail.Store(t + n)
	if used < size/2 && used+n >= size/2 {
		w.log.kick()
	}
}

// drain hands what the loop has published so far to out, in at most two pieces (the ring
// wraps), then frees it (called only by the drain goroutine). Whatever out does, the bytes are
// released: a failed write has already counted its lines lost.
func (w *Writer) drain(out func([]byte)) {
	h := w.head.Load()
	t := w.tail.Load()
	if t == h {
		return
	}
	off, n := h&w.mask, t-h
	if end := off + n; end <= uint64(len(w.ring)) {
		out(w.ring[off:end])
	} else {
		out(w.ring[off:])
		out(w.ring[:end-uint64(len(w.ring))])
	}
	w.head.Store(t)
}
