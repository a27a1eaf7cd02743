package splice

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/tlsrecord"
)

// TLS in the tunnel plane (issue 9): decrypt-and-forward.
//
// A TLS end cannot be spliced: the bytes change on the way. A conn with a TLS end (a WSS tunnel's
// client, or the client side of a body offloaded from a TLS connection) moves both directions
// through pooled copy buffers, with the same backpressure, half-close and timeout rules as the
// copy path, and the record layer in between:
//
//   - opening (src is the TLS end): read ciphertext into a pooled buffer, open the records in
//     place and move each record's plaintext down to the front of the buffer (a record's
//     plaintext is shorter than the record, so the write cursor never passes the read cursor),
//     then write that one contiguous run to dst. A record cut at the end of a read waits in the
//     session's own borrowed buffer; the next read then starts 16 KiB into the buffer, leaving
//     room in front for that record's plaintext. close_notify is the src's EOF; KeyUpdate is
//     honoured (the session rekeys; one we owe goes out on the sealing direction); any error
//     sends the alert (when nothing is half-written toward the TLS end) and closes both.
//   - sealing (dst is the TLS end): read plaintext 256 bytes into a pooled buffer (up to 48 KiB:
//     three full records), seal it in place into records at the front, write them. A KeyUpdate we
//     owe goes out before the next records; at src's EOF our close_notify goes out before the
//     shutdown.
//
// While idle a TLS tunnel holds no buffer: the conn, its tlsEnd and the session's keys and
// sequence numbers, and after shrinkAfter of silence not even the session's AEADs.
//
// The session is used only by the loop that owns the conn, which is what tlsrecord requires.

// tlsEnd is a conn's TLS state; nil for plain conns (8 bytes of conn each).
type tlsEnd struct {
	rec          tlsrecord.RecordLayer
	end          int    // index in conn.ends of the TLS socket
	flags        uint8  // tlsBye, tlsShrunk
	readClosed   bool   // close_notify received
	counted      bool   // in the TLSTunnels gauge
	staying      bool   // ... and in TLSStaying: its record layer cannot be exported (TLS 1.2)
	partialSince uint32 // tick since which a record is half-received, 0 = none
}

const (
	tlsBye    uint8 = 1 << iota // our close_notify is sealed
	tlsShrunk                   // the session's AEADs are dropped (idle)
)

// sealSlack is where plaintext is read in a sealing buffer: the records are sealed in place from
// offset 0, each one 22 bytes longer than its plaintext (and a KeyUpdate may come first), so the
// records' bytes never overtake the plaintext still to be sealed.
const sealSlack = 256

// sealRead is the most plaintext one read takes when sealing: three full records.
const sealRead = 3 * tlsrecord.MaxPlaintext

// shrinkAfter: a TLS tunnel quiet this long drops its AEADs (about 1.5 KiB for AES-GCM); the next
// record rebuilds them in microseconds.
const shrinkAfter = time.Second

// ErrRecordTimeout: a TLS record stayed half-received longer than the record timeout (a client
// pinning the 16 KiB buffer a partial record borrows).
var ErrRecordTimeout = errors.New("splice: tls record incomplete for too long")

// errTruncated: the TLS end closed in the middle of a record.
var errTruncated = errors.New("tls record truncated by EOF")

// moveTLS is move for a conn with a TLS end.
func (l *loop) moveTLS(c *conn, i int) bool {
	f := &c.flows[i]
	src, dst := &c.ends[i], &c.ends[1-i]
	te := c.t
	opening := te.end == i
	budget := l.budget
	for {
		if f.state&flowDone != 0 {
			return true
		}
		if f.buf != nil {
			if dst.ev&evOut == 0 {
				return true
			}
			n, err := l.writeHeld(f, dst)
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				return l.writeFailed(c, i, err)
			}
			l.tlsActive(c)
			if budget -= n; budget <= 0 {
				l.defer_(c)
				return true
			}
			continue
		}
		// Drained. Is this direction over?
		if x := c.x; x != nil && (x.remaining == 0 || x.chunkDone) {
			l.finish(c, nil)
			return false
		}
		if f.state&flowEOF != 0 {
			if c.x != nil {
				l.finish(c, &OpError{Dir: c.dir(i), Op: "read from src", Err: ErrUnexpectedEOF})
				return false
			}
			if !opening && te.flags&tlsBye == 0 {
				// The backend finished: close_notify, then the shutdown.
				te.flags |= tlsBye
				if !l.sealOwn(c, f, func(dst []byte) ([]byte, error) { return te.rec.AppendCloseNotify(dst) }) {
					return false
				}
				continue
			}
			if err := unix.Shutdown(int(dst.fd), unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
				l.fail(c, &OpError{Dir: c.dir(i), Op: "shutdown " + c.name(1-i), Err: err})
				return false
			}
			f.state |= flowDone
			l.halfDone(c)
			return true
		}
		if !opening && te.rec.KeyUpdatePending() {
			// The peer asked us to update our key: ours goes out before our next record.
			if !l.sealOwn(c, f, te.rec.Flush) {
				return false
			}
			continue
		}
		if src.ev&evIn == 0 {
			return true
		}
		var ok bool
		if opening {
			ok = l.fillOpen(c, i, f, src)
		} else {
			ok = l.fillSeal(c, i, f, src)
		}
		if !ok {
			return false
		}
	}
}

// sealOwn queues a record of our own (close_notify, KeyUpdate) on the sealing direction f.
func (l *loop) sealOwn(c *conn, f *flow, seal func(dst []byte) ([]byte, error)) bool {
	bp := l.getBuf()
	out, err := seal((*bp)[:0])
	if err != nil {
		l.putBuf(bp)
		l.fail(c, &OpError{Dir: c.dir(1 - c.t.end), Op: "seal toward " + c.name(c.t.end), Err: err})
		return false
	}
	if len(out) == 0 {
		l.putBuf(bp)
		return true
	}
	f.buf, f.off, f.lim = bp, 0, int32(len(out))
	return true
}

// fillOpen reads ciphertext from the TLS end and leaves the plaintext in f.buf.
func (l *loop) fillOpen(c *conn, i int, f *flow, src *end) bool {
	te := c.t
	bp := l.getBuf()
	b := *bp
	off := 0
	if te.rec.Partial() {
		off = tlsrecord.MaxPlaintext // room in front for the plaintext of the record being completed
	}
	var n int
	for {
		var err error
		n, err = unix.Read(int(src.fd), b[off:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			src.ev &^= evIn
			l.putBuf(bp)
			return true
		case err != nil:
			l.putBuf(bp)
			l.fail(c, &OpError{Dir: c.dir(i), Op: "read from " + c.name(i), Err: err})
			return false
		case n == 0:
			l.putBuf(bp)
			if te.rec.Partial() {
				l.fail(c, &OpError{Dir: c.dir(i), Op: "read from " + c.name(i), Err: errTruncated})
				return false
			}
			f.state |= flowEOF
			return true
		}
		break
	}
	l.tlsActive(c)
	w, r, end := 0, off, off+n
	for {
		k, plain, ev, err := te.rec.Open(b[r:end])
		if err != nil {
			l.putBuf(bp)
			l.tlsAlert(c, err)
			l.fail(c, &OpError{Dir: c.dir(i), Op: "read from " + c.name(i) + ": tls record", Err: err})
			return false
		}
		if len(plain) > 0 {
			if w+len(plain) > len(b) {
				l.putBuf(bp)
				l.fail(c, &OpError{Dir: c.dir(i), Op: "read from " + c.name(i) + ": tls record", Err: errors.New("plaintext does not fit the buffer")})
				return false
			}
			w += copy(b[w:], plain)
		}
		if ev == tlsrecord.EventCloseNotify {
			te.readClosed = true
			f.state |= flowEOF // the rest of the stream is ignored (RFC 8446 6.1)
		}
		r += k
		if k == 0 && len(plain) == 0 && ev == tlsrecord.EventNone {
			break
		}
	}
	if te.rec.Partial() {
		if te.partialSince == 0 {
			te.partialSince = l.now | 1
			l.st.tlsPartial.Add(1)
			l.arm(c)
		}
	} else if te.partialSince != 0 {
		te.partialSince = 0
		l.st.tlsPartial.Add(-1)
	}
	if w == 0 {
		l.putBuf(bp)
		return true
	}
	f.buf, f.off, f.lim = bp, 0, int32(w)
	if x := c.x; x != nil {
		switch {
		case x.remaining > 0:
			if int64(w) > x.remaining {
				x.extra = append(x.extra, b[x.remaining:w]...)
				f.lim = int32(x.remaining)
			}
			x.remaining -= int64(f.lim)
		case x.remaining < 0:
			if !l.frame(c, i, f) {
				return false
			}
			if f.buf == nil {
				return true
			}
		}
	}
	return true
}

// fillSeal reads plaintext from src and leaves it sealed, as records, in f.buf.
func (l *loop) fillSeal(c *conn, i int, f *flow, src *end) bool {
	te := c.t
	x := c.x
	bp := l.getBuf()
	b := *bp
	want := min(sealRead, len(b)-sealSlack-4*tlsrecord.Overhead-64)
	if x != nil && x.remaining > 0 && int64(want) > x.remaining {
		want = int(x.remaining)
	}
	var n int
	for {
		var err error
		n, err = unix.Read(int(src.fd), b[sealSlack:sealSlack+want])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			src.ev &^= evIn
			l.putBuf(bp)
			return true
		case err != nil:
			l.putBuf(bp)
			l.fail(c, &OpError{Dir: c.dir(i), Op: "read from " + c.name(i), Err: err})
			return false
		case n == 0:
			l.putBuf(bp)
			f.state |= flowEOF
			return true
		}
		break
	}
	l.tlsActive(c)
	p := b[sealSlack : sealSlack+n]
	if x != nil {
		if x.remaining > 0 {
			x.remaining -= int64(n)
		} else if x.remaining < 0 {
			// Chunked: the framer sees the plaintext; bytes beyond the body are Extra.
			f.buf, f.off, f.lim = bp, sealSlack, int32(sealSlack+n)
			used, ok := l.frameAt(c, i, f)
			if !ok {
				return false
			}
			p = p[:used]
			f.buf = nil
			if used == 0 {
				l.putBuf(bp)
				return true
			}
		}
	}
	out, err := te.rec.Seal(b[:0], p)
	if err != nil {
		l.putBuf(bp)
		l.fail(c, &OpError{Dir: c.dir(i), Op: "seal toward " + c.name(1-i), Err: err})
		return false
	}
	if cap(out) != cap(b) || len(out) > len(b) {
		// The record layer needed more room than the buffer (it never does for AEAD records):
		// keep its slice as an exact-size remainder.
		l.putBuf(bp)
		s := out
		f.buf, f.off, f.lim = &s, 0, int32(len(s))
		f.state |= flowOwnBuf
		return true
	}
	f.buf, f.off, f.lim = bp, 0, int32(len(out))
	return true
}

// frameAt feeds f.buf[f.off:f.lim] (fresh plaintext) to a transfer's chunked framer and reports
// how many bytes belong to the body; bytes beyond it become Extra.
func (l *loop) frameAt(c *conn, i int, f *flow) (int, bool) {
	x := c.x
	p := (*f.buf)[f.off:f.lim]
	used := 0
	for used < len(p) {
		n, done, err := x.framer.Feed(p[used:])
		if err != nil {
			l.putBuf(f.buf)
			f.buf = nil
			l.finish(c, &OpError{Dir: c.dir(i), Op: "read from src: chunked framing", Err: err})
			return 0, false
		}
		used += n
		if done {
			x.chunkDone = true
			break
		}
		if n == 0 {
			break
		}
	}
	if !x.chunkDone && used < len(p) {
		l.putBuf(f.buf)
		f.buf = nil
		l.finish(c, &OpError{Dir: c.dir(i), Op: "read from src: chunked framing", Err: errFramerStalled})
		return 0, false
	}
	if used < len(p) {
		x.extra = append([]byte(nil), p[used:]...)
	}
	return used, true
}

// tlsAlert sends the alert for a record failure, best effort, when nothing is half-written
// toward the TLS end (an alert inside a half-sent record would be garbage).
func (l *loop) tlsAlert(c *conn, err error) {
	te := c.t
	a, ok := tlsrecord.AlertFor(err)
	if !ok || c.flows[1-te.end].buf != nil {
		return
	}
	var small [64]byte
	rec, aerr := te.rec.AppendAlert(small[:0], a)
	if aerr == nil && len(rec) > 0 {
		_, _ = unix.Write(int(c.ends[te.end].fd), rec)
	}
	te.flags |= tlsBye
}

// tlsActive notes traffic on a TLS conn: a shrunk session is re-armed for its next shrink.
func (l *loop) tlsActive(c *conn) {
	c.active = l.now
	if te := c.t; te != nil && te.flags&tlsShrunk != 0 {
		te.flags &^= tlsShrunk
		l.st.tlsShrunk.Add(-1)
		l.arm(c)
	}
}

// tlsDeadline is the earliest tick a TLS tunnel's timers need a look: the shrink of an idle
// session, the record timeout of a half-received record.
func (l *loop) tlsDeadline(c *conn) (uint32, bool) {
	te := c.t
	var d uint32
	has := false
	if te.flags&tlsShrunk == 0 && c.x == nil {
		d, has = c.active+l.p.shrinkTicks+1, true
	}
	if te.partialSince != 0 && l.p.recordTicks > 0 {
		if t := te.partialSince + l.p.recordTicks + 1; !has || after(d, t) {
			d, has = t, true
		}
	}
	return d, has
}

// tlsExpire runs the TLS timers at tick t; false when the conn was closed.
func (l *loop) tlsExpire(c *conn, t uint32) bool {
	te := c.t
	if te.partialSince != 0 && l.p.recordTicks > 0 && after(t, te.partialSince+l.p.recordTicks+1) {
		l.finish(c, &OpError{Dir: c.dir(te.end), Op: "read from " + c.name(te.end), Err: ErrRecordTimeout})
		return false
	}
	if c.x == nil && te.flags&tlsShrunk == 0 && after(t, c.active+l.p.shrinkTicks+1) &&
		c.flows[0].buf == nil && c.flows[1].buf == nil {
		te.rec.Shrink()
		te.flags |= tlsShrunk
		l.st.tlsShrunk.Add(1)
	}
	return true
}

// sealAnswer seals an answer of the upgrade path toward a TLS client into the loop's scratch
// (valid until the next seal; toClient copies what the kernel does not take). A session that
// cannot seal (it never fails for AEAD records short of 2^64 of them) leaves the answer out and
// the conn ends.
func (l *loop) sealAnswer(c *conn, b []byte) []byte {
	out, err := c.t.rec.Seal(l.tlsScratch[:0], b)
	if err != nil {
		l.hsEnd(c, UpgradeClosed, &OpError{Dir: "upgrade", Op: "seal toward client", Err: err})
		return nil
	}
	l.tlsScratch = out[:0]
	return out
}

// closeNotify is our close_notify record for c's TLS client, in the loop's scratch.
func (l *loop) closeNotify(c *conn) []byte {
	out, err := c.t.rec.AppendCloseNotify(l.tlsScratch[:0])
	if err != nil {
		return nil
	}
	l.tlsScratch = out[:0]
	return out
}

// toClientRecords queues records already sealed (close_notify) like toClient queues an answer.
func (l *loop) toClientRecords(c *conn, rec []byte) {
	f := &c.flows[1]
	if f.buf != nil {
		s := append((*f.buf)[f.off:f.lim:f.lim], rec...)
		f.buf, f.off, f.lim = &s, 0, int32(len(s))
		return
	}
	l.writePending(f, int(c.ends[0].fd), rec)
}

// tlsCount puts a TLS tunnel in the TLSTunnels gauge (attach, or an upgrade's switch).
func (l *loop) tlsCount(c *conn) {
	c.t.counted = true
	l.st.tlsTunnels.Add(1)
	if _, ok := c.t.rec.(*tlsrecord.Session); !ok || c.t.end != 0 {
		c.t.staying = true // a binary upgrade leaves it here (export.go)
		l.st.tlsStaying.Add(1)
	}
}

// tlsForget takes a finishing conn out of the TLS gauges.
func (l *loop) tlsForget(c *conn) {
	te := c.t
	if te.counted {
		te.counted = false
		l.st.tlsTunnels.Add(-1)
	}
	if te.staying {
		te.staying = false
		l.st.tlsStaying.Add(-1)
	}
	if te.flags&tlsShrunk != 0 {
		te.flags &^= tlsShrunk
		l.st.tlsShrunk.Add(-1)
	}
	if te.partialSince != 0 {
		te.partialSince = 0
		l.st.tlsPartial.Add(-1)
	}
}
