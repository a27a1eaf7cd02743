package accesslog

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// Writer is one event loop's access log: only that loop calls Request and Tunnel. A nil
// *Writer (the log is off) accepts every call and does nothing.
//
// The loop does not format: it copies the event's fields into the writer's byte ring as one
// record (fixed-size numbers, then the variable bytes), a few small copies and no conversions.
// The Log's goroutine turns a whole batch of records into lines at once, where the formatting
// code, the cached date and the output buffer stay warm, and writes them with one write(2)
// (record.go, log.go). The loop is the only producer (it moves tail), the drain goroutine the
// only consumer (it moves head); each reads the other's index atomically, so the bytes between
// them change hands without a lock.
type Writer struct {
	_       cpu.CacheLinePad
	log     *Log
	zone    zoneCache
	ring    []byte
	mask    uint64
	tail    atomic.Uint64 // written by the loop: bytes ever accepted
	dropped atomic.Uint64 // written by the loop: lines that found no room
	_       cpu.CacheLinePad
	head    atomic.Uint64 // written by the drain goroutine: bytes ever written out
	_       cpu.CacheLinePad
}

// zoneCache remembers the zone offset of the last second seen, so that a busy loop asks the
// time zone database once a second, not once a line.
type zoneCache struct {
	sec int64
	loc *time.Location
	off int32
	ok  bool
}

func (z *zoneCache) offset(t time.Time) int32 {
	if s := t.Unix(); !z.ok || s != z.sec || t.Location() != z.loc {
		_, off := t.Zone()
		z.sec, z.loc, z.off, z.ok = s, t.Location(), int32(off), true
	}
	return z.off
}

// Request logs one finished exchange. It copies what it needs from r before returning.
func (w *Writer) Request(r *Request) {
	if w == nil {
		return
	}
	n := reqFixed + len(r.Method) + len(r.Target) + len(r.Route) + len(r.Backend) + len(r.Detail)
	t, ok := w.reserve(n)
	if !ok {
		return
	}
	var stack [reqFixed]byte
	h := w.fixed(t, stack[:])
	b := w.common(h, kindRequest, n, r.Time, r.Client)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(int32(r.Status)))
	le.PutUint64(b[4:], uint64(r.BytesIn))
	le.PutUint64(b[12:], uint64(r.BytesOut))
	le.PutUint64(b[20:], uint64(r.Duration))
	le.PutUint64(b[28:], uint64(r.Connect))
	b[36] = byte(r.Answered)
	le.PutUint32(b[37:], uint32(len(r.Method)))
	le.PutUint32(b[41:], uint32(len(r.Target)))
	le.PutUint32(b[45:], uint32(len(r.Route)))
	le.PutUint32(b[49:], uint32(len(r.Backend)))
	le.PutUint32(b[53:], uint32(len(r.Detail)))
	t = w.fixedDone(t, h, stack[:])
	t = w.copyIn(t, r.Method)
	t = w.copyIn(t, r.Target)
	t = w.copyIn(t, sbytes(r.Route))
	t = w.copyIn(t, sbytes(r.Backend))
	t = w.copyIn(t, sbytes(r.Detail))
	w.publish(t, n)
}

// Tunnel logs one closed tunnel.
func (w *Writer) Tunnel(tu *Tunnel) {
	if w == nil {
		return
	}
	n := tunFixed + len(tu.Target) + len(tu.Route) + len(tu.Backend) + len(tu.Reason)
	t, ok := w.reserve(n)
	if !ok {
		return
	}
	var stack [tunFixed]byte
	h := w.fixed(t, stack[:])
	b := w.common(h, kindTunnel, n, tu.Time, tu.Client)
	le := binary.LittleEndian
	le.PutUint64(b[0:], uint64(tu.Duration))
	le.PutUint64(b[8:], uint64(tu.BytesUp))
	le.PutUint64(b[16:], uint64(tu.BytesDown))
	le.PutUint32(b[24:], uint32(len(tu.Target)))
	le.PutUint32(b[28:], uint32(len(tu.Route)))
	le.PutUint32(b[32:], uint32(len(tu.Backend)))
	le.PutUint32(b[36:], uint32(len(tu.Reason)))
	t = w.fixedDone(t, h, stack[:])
	t = w.copyIn(t, tu.Target)
	t = w.copyIn(t, sbytes(tu.Route))
	t = w.copyIn(t, sbytes(tu.Backend))
	t = w.copyIn(t, sbytes(tu.Reason))
	w.publish(t, n)
}

// fixed returns where a record's fixed part at position t is encoded: straight into the ring
// when it does not wrap there (the common case), else into stack, copied in by fixedDone. The
// ring's bytes are written whole either way (common clears what it does not set).
func (w *Writer) fixed(t uint64, stack []byte) []byte {
	off := t & w.mask
	if end := off + uint64(len(stack)); end <= uint64(len(w.ring)) {
		return w.ring[off:end]
	}
	return stack
}

// fixedDone copies the fixed part in if it was encoded on the stack, and returns the position
// after it.
func (w *Writer) fixedDone(t uint64, h, stack []byte) uint64 {
	if &h[0] == &stack[0] {
		return w.copyIn(t, stack)
	}
	return t + uint64(len(h))
}

// common fills the part of a record both kinds share and returns the rest of h.
func (w *Writer) common(h []byte, kind byte, n int, at time.Time, client netip.AddrPort) []byte {
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(n))
	h[4] = kind
	le.PutUint64(h[5:], uint64(at.UnixNano()))
	le.PutUint32(h[13:], uint32(w.zone.offset(at)))
	h[17] = 0
	if client.IsValid() {
		a := client.Addr()
		h[17] = addrValid
		if a.Is4() {
			h[17] |= addrIs4
		}
		ip := a.As16()
		copy(h[18:34], ip[:])
		le.PutUint16(h[34:], client.Port())
	}
	return h[commonFixed:]
}

// Dropped is the number of lines this writer could not queue.
func (w *Writer) Dropped() uint64 {
	if w == nil {
		return 0
	}
	return w.dropped.Load()
}

// reserve checks that n bytes fit in the ring; when they do not, the line is dropped and
// counted, and the drain goroutine woken.
func (w *Writer) reserve(n int) (uint64, bool) {
	size := uint64(len(w.ring))
	t := w.tail.Load()
	if used := t - w.head.Load(); uint64(n) > size-used {
		w.dropped.Store(w.dropped.Load() + 1)
		w.log.kick()
		return 0, false
	}
	return t, true
}

// copyIn copies p into the ring at position t (wrapping) and returns the position after it.
func (w *Writer) copyIn(t uint64, p []byte) uint64 {
	off := t & w.mask
	if c := copy(w.ring[off:], p); c < len(p) {
		copy(w.ring, p[c:])
	}
	return t + uint64(len(p))
}

// publish makes the record ending at t visible to the drain goroutine, which is woken early
// when the ring passes half full; otherwise it drains on its tick.
func (w *Writer) publish(t uint64, n int) {
	size := uint64(len(w.ring))
	used := t - uint64(n) - w.head.Load()
	w.tail.Store(t)
	if used < size/2 && used+uint64(n) >= size/2 {
		w.log.kick()
	}
}

// sbytes views a string's bytes for copying (never written).
func sbytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// drain formats what the loop has published so far with f and hands the lines to out in
// batches, freeing each batch's ring space once out has returned (called only by the drain
// goroutine). Whatever out does, the space is released: a failed write has already counted its
// lines lost.
func (w *Writer) drain(f *formatter, out func([]byte)) {
	h := w.head.Load()
	t := w.tail.Load()
	for h < t {
		rec := w.record(h, f)
		f.line(rec)
		h += uint64(len(rec))
		if len(f.out) >= flushBytes || h == t {
			out(f.out)
			f.out = f.out[:0]
			w.head.Store(h)
		}
	}
}

// flushBytes is the size of the batches the drain goroutine writes.
const flushBytes = 64 << 10

// record returns the record starting at position h: the ring's own bytes, or, for a record that
// wraps around the end, a copy in f's scratch.
func (w *Writer) record(h uint64, f *formatter) []byte {
	off := h & w.mask
	var lenb [4]byte
	for i := range lenb {
		lenb[i] = w.ring[(off+uint64(i))&w.mask]
	}
	n := uint64(binary.LittleEndian.Uint32(lenb[:]))
	if off+n <= uint64(len(w.ring)) {
		return w.ring[off : off+n]
	}
	f.wrapped = append(f.wrapped[:0], w.ring[off:]...)
	f.wrapped = append(f.wrapped, w.ring[:off+n-uint64(len(w.ring))]...)
	return f.wrapped
}
