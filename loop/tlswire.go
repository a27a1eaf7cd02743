package loop

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/wsgate/wsgate/tlsrecord"
	"github.com/wsgate/wsgate/tlsterm"
)

// TLS termination on the event loop (issue 9): the TLS wire.
//
// A client of a TLS listener is the same clientConn state machine, seeing plain HTTP through the
// wire seam (wire.go). tlsConn sits between gnet and the state machine:
//
//   - Inbound: every event takes all of gnet's buffered bytes (Next(-1)), which are then ours until
//     the callback returns. During the handshake they go to tlsterm's driver; afterwards the
//     records are opened in place, and their plaintext is moved down to the front of gnet's
//     buffer (a record's plaintext is shorter than the record, so the write cursor never passes
//     the read cursor), where Peek/Next/Discard serve it. What the state machine has not consumed
//     when the callback returns (a partial head, a pipelined request, frames held before a 101) is
//     copied into a pooled buffer borrowed only while it is non-empty. A record that arrives in
//     pieces waits in the session's own borrowed buffer (tlsrecord's rule). An idle TLS
//     connection therefore holds no buffer: only the session's keys and sequence numbers.
//   - Outbound: the client's outq seals what the state machine writes (outq.write -> seal) into a
//     per-loop scratch before its write(2), so the outq only ever holds ciphertext, and bytes
//     handed to the tunnel plane are records. Handshake flights, alerts and close_notify are
//     written as they are (outq.writeRaw).
//
// Invariant: the session is used by one goroutine at a time: the conn's loop, or the tunnel plane
// while a body is offloaded (the plane hands it back before the loop touches it again) or for
// good after a WebSocket upgrade (tlsConn.rec is nil from then on).

// tlsShrinkAfter: a TLS 1.3 session that saw no record either way for this long drops its AEADs
// (about 1.5 KiB for AES-GCM); the next record rebuilds them in a couple of microseconds.
const tlsShrinkAfter = time.Second

// plainHTTPAnswer is what a client speaking plain HTTP to the TLS port gets, as nginx does: a
// 400 in plain text that says why, then a close.
var plainHTTPAnswer = []byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Content-Length: 46\r\nConnection: close\r\n\r\nThe plain HTTP request was sent to HTTPS port\n")

type tlsConn struct {
	raw  wire // the socket as the event loop delivers it (a gnet.Conn)
	cc   *clientConn
	hs   *tlsterm.Handshake    // until the handshake ends
	rec  tlsrecord.RecordLayer // after it (nil once handed to the tunnel plane for good)
	sess *tlsrecord.Session    // rec for TLS 1.3 (plaintext opened in place); nil for TLS 1.2

	plain *bytebufferpool.ByteBuffer // plaintext not consumed by the end of an event; nil when none
	off   int
	run   []byte // plaintext opened in place in gnet's buffer during this event

	eof          bool  // the client sent close_notify
	eofSeen      bool  // ... and the state machine was told
	shrunk       bool  // the session's AEADs are dropped
	byeSent      bool  // our close_notify is queued
	active       int64 // nanotime of the last record either way
	partialSince int64 // nanotime since which a record has been half-received, 0 if none
	hsDeadline   int64 // nanotime by which the handshake must be done
	version      uint16
}

// startTLS makes cc a TLS connection: the handshake starts with the first bytes. wake asks the
// loop for a traffic event on this conn (gnet's Conn.Wake): tlsterm calls it when a handshake
// slot or flight is ready.
func (cc *clientConn) startTLS(raw wire, wake func()) {
	t := &tlsConn{raw: raw, cc: cc}
	t.hs = cc.srv.cfg.TLS.NewHandshake(wake)
	t.hsDeadline = cc.ls.now() + int64(cc.srv.cfg.HeaderTimeout)
	cc.tls = t
	cc.c = t
	cc.out.tls = t
}

// rawWire is the socket under a wire: what gnet knows.
func rawWire(w wire) wire {
	if t, ok := w.(*tlsConn); ok {
		return t.raw
	}
	return w
}

// owns says whether w (as gnet delivers it) is cc's live socket. A context whose wire no longer
// matches belongs to a conn that was handed off (its old gnet copy closing).
func (cc *clientConn) owns(w wire) bool {
	if cc.c == nil {
		return false
	}
	return cc.c == w || (cc.tls != nil && cc.c == wire(cc.tls) && cc.tls.raw == w)
}

// wrapWire is the wire the state machine uses for a socket gnet gives back (re-enrolled after an
// offload): the TLS conn around it, or the socket itself.
func (cc *clientConn) wrapWire(w wire) wire {
	if cc.tls != nil {
		cc.tls.raw = w
		return cc.tls
	}
	return w
}

// https says whether the client came over TLS (X-Forwarded-Proto, Location rewrites).
func (cc *clientConn) https() bool { return cc.tls != nil }

// inputEnded: the client will send nothing more (EOF, or close_notify over TLS).
func (cc *clientConn) inputEnded() bool { return cc.peerEOF || (cc.tls != nil && cc.tls.eof) }

// --- the wire seam: plaintext ------------------------------------------------------------------

func (t *tlsConn) buffered() []byte {
	if t.plain != nil {
		return t.plain.B[t.off:]
	}
	return t.run
}

func (t *tlsConn) consumed(n int) {
	if t.plain != nil {
		t.off += n
	} else {
		t.run = t.run[n:]
	}
}

func (t *tlsConn) Peek(n int) ([]byte, error) {
	b := t.buffered()
	if n > 0 && n < len(b) {
		b = b[:n]
	}
	return b, nil
}

func (t *tlsConn) Next(n int) ([]byte, error) {
	b, _ := t.Peek(n)
	t.consumed(len(b))
	return b, nil
}

func (t *tlsConn) Discard(n int) (int, error) {
	b := t.buffered()
	if n <= 0 || n > len(b) {
		n = len(b)
	}
	t.consumed(n)
	return n, nil
}

func (t *tlsConn) InboundBuffered() int { return len(t.buffered()) }
func (t *tlsConn) Fd() int              { return t.raw.Fd() }
func (t *tlsConn) Dup() (int, error)    { return t.raw.Dup() }

// stash appends plaintext to the pooled buffer (taking one if needed).
func (t *tlsConn) stash(p []byte) {
	if len(p) == 0 {
		return
	}
	if t.plain == nil {
		t.plain = bytebufferpool.Get()
		t.plain.B, t.off = t.plain.B[:0], 0
	} else if t.off > 0 {
		n := copy(t.plain.B, t.plain.B[t.off:])
		t.plain.B, t.off = t.plain.B[:n], 0
	}
	t.plain.B = append(t.plain.B, p...)
}

// tidy returns the plaintext buffer once it is consumed. Not from Next: its result is used after
// it returns, and a buffer put back in the pool may be taken by another goroutine at once.
func (t *tlsConn) tidy() {
	if t.plain != nil && t.off >= len(t.plain.B) {
		bytebufferpool.Put(t.plain)
		t.plain, t.off = nil, 0
	}
}

// settle runs when an event's work is done: plaintext still in gnet's buffer is copied out
// (gnet reuses that buffer), consumed plaintext gives its buffer back.
func (t *tlsConn) settle() {
	if len(t.run) > 0 {
		run := t.run
		t.run = nil
		if t.cc.c == wire(t) {
			t.stash(run)
		}
	}
	t.run = nil
	t.tidy()
}

func (t *tlsConn) dropPlain() {
	t.run = nil
	if t.plain != nil {
		bytebufferpool.Put(t.plain)
		t.plain, t.off = nil, 0
	}
}

// --- events ------------------------------------------------------------------------------------

// traffic is OnTraffic for a TLS client: new bytes from the socket, or a wake from the handshake.
func (t *tlsConn) traffic() {
	cc := t.cc
	in, _ := t.raw.Next(-1)
	t.tidy()
	if cc.state == stateClosing {
		return // lingering after our answer (or a failure): what the client still sends is dropped
	}
	if t.hs != nil {
		if !t.handshake(in) {
			return
		}
	} else if t.rec == nil || !t.open(in) {
		return
	}
	if t.eof && !t.eofSeen {
		t.eofSeen = true
		if !cc.answerOwed() && cc.state != stateReadingHead {
			// close_notify mid-body or before a 101: as a TCP EOF there, the client is closed.
			t.settle()
			cc.closeNow()
			return
		}
	}
	cc.process()
	t.settle()
}

// handshake feeds the driver; true once established with the state machine ready to run.
func (t *tlsConn) handshake(in []byte) bool {
	cc := t.cc
	out, st, err := t.hs.Feed(in)
	if len(out) > 0 {
		if werr := cc.out.writeRaw(out); werr != nil {
			t.cc.srv.tlsLog.log(cc.srv.log, slog.LevelDebug, "tls handshake: client write failed", "client", string(cc.ip), "err", werr)
			cc.abort()
			return false
		}
		cc.noteQueued(&cc.out)
	}
	switch st {
	case tlsterm.StateEstablished:
		return t.established()
	case tlsterm.StateFailed:
		t.handshakeFailed(err)
	}
	return false
}

func (t *tlsConn) established() bool {
	cc, h := t.cc, t.hs
	t.hs = nil
	info := h.Info()
	t.version = info.Version
	if s := h.Session(); s != nil {
		t.sess, t.rec = s, s
	} else if l := h.Legacy(); l != nil {
		t.rec = l.Layer()
	} else {
		cc.srv.tlsLog.log(cc.srv.log, slog.LevelInfo, "tls handshake: no session", "client", string(cc.ip))
		cc.abort()
		return false
	}
	now := cc.ls.now()
	t.active = now
	// The header timeout covered the handshake; it starts again for the first request head.
	cc.deadline = now + int64(cc.srv.cfg.HeaderTimeout)
	if cc.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		cc.srv.log.Debug("tls established", "client", string(cc.ip), "version", tlsVersionName(info.Version),
			"suite", tlsSuiteName(info.CipherSuite), "sni", info.ServerName, "resumed", info.DidResume, "alpn", info.ALPN)
	}
	// Records the client sent behind its Finished (TLS 1.3), or queued in the TLS 1.2 conn, are
	// opened now, as if just read.
	return t.open(h.Rest())
}

// handshakeFailed logs once and closes: crypto/tls's alert (already queued) or a plaintext one
// before encryption, or the 400 a plain HTTP client gets.
func (t *tlsConn) handshakeFailed(err error) {
	cc := t.cc
	h := t.hs
	t.hs = nil
	h.Close()
	switch {
	case errors.Is(err, tlsterm.ErrPlainHTTP):
		cc.srv.tlsLog.log(cc.srv.log, slog.LevelInfo, "plain HTTP request on the TLS port: answered 400", "client", string(cc.ip), "listen", cc.srv.addr)
		_ = cc.out.writeRaw(plainHTTPAnswer)
	case errors.Is(err, tlsterm.ErrHelloTooLarge):
		cc.srv.tlsLog.log(cc.srv.log, slog.LevelInfo, "tls handshake failed", "client", string(cc.ip), "err", err)
		_ = cc.out.writeRaw(plainAlert(tlsrecord.AlertRecordOverflow))
	case errors.Is(err, tlsterm.ErrBadHello):
		cc.srv.tlsLog.log(cc.srv.log, slog.LevelInfo, "tls handshake failed", "client", string(cc.ip), "err", err)
		_ = cc.out.writeRaw(plainAlert(tlsrecord.AlertDecodeError))
	default:
		hello := h.Hello()
		cc.srv.tlsLog.log(cc.srv.log, slog.LevelInfo, "tls handshake failed", "client", string(cc.ip), "sni", hello.ServerName, "err", err)
	}
	cc.startClosing()
}

// plainAlert is a fatal alert record before any key is agreed (RFC 8446 5.1: unprotected).
func plainAlert(a tlsrecord.Alert) []byte {
	return []byte{byte(tlsrecord.TypeAlert), 3, 3, 0, 2, 2, byte(a)}
}

// open opens the records in in (bytes just read, ours until the event returns) and leaves their
// plaintext where Peek serves it. False when the connection failed.
func (t *tlsConn) open(in []byte) bool {
	cc := t.cc
	// In place only for TLS 1.3 and when nothing is buffered already (the plaintext must be one
	// contiguous run, oldest first).
	direct := t.sess != nil && t.plain == nil
	w, r := 0, 0
	for {
		partial := direct && t.sess.Partial()
		n, plain, ev, err := t.rec.Open(in[r:])
		if err != nil {
			t.recordFailed(err)
			return false
		}
		if len(plain) > 0 {
			if direct && !partial {
				w += copy(in[w:], plain) // plain lies in in[r:r+n], at or after w
			} else {
				if direct {
					t.stash(in[:w])
					direct = false
				}
				t.stash(plain)
			}
		}
		switch ev {
		case tlsrecord.EventCloseNotify:
			t.eof = true
		case tlsrecord.EventKeyUpdateRequested:
			ls := cc.ls
			rec, ferr := t.rec.Flush(ls.sealBuf[:0])
			ls.sealBuf = rec[:0]
			if ferr == nil {
				ferr = cc.out.writeRaw(rec)
			}
			if ferr != nil {
				cc.abort()
				return false
			}
			cc.noteQueued(&cc.out)
		}
		r += n
		if n == 0 && len(plain) == 0 && ev == tlsrecord.EventNone {
			break
		}
	}
	if direct && w > 0 {
		t.run = in[:w]
	}
	now := cc.ls.now()
	if r > 0 {
		t.active, t.shrunk = now, false
	}
	if t.rec.Partial() {
		if t.partialSince == 0 {
			t.partialSince = now
		}
	} else {
		t.partialSince = 0
	}
	return true
}

// recordFailed: a record did not open (bad tag, bad framing, a fatal alert from the client).
// Nothing of this read is used; our alert goes out (none after the client's own fatal alert),
// then a lingering close. The backend conn, if any, is closed: nothing more reaches it.
func (t *tlsConn) recordFailed(err error) {
	cc := t.cc
	t.dropPlain()
	ls := cc.ls
	if a, ok := tlsrecord.AlertFor(err); ok {
		rec, aerr := t.rec.AppendAlert(ls.sealBuf[:0], a)
		ls.sealBuf = rec[:0]
		if aerr == nil && len(rec) > 0 {
			_ = cc.out.writeRaw(rec)
		}
	}
	t.byeSent = true // a fatal alert ends our side: no close_notify after it
	lvl := slog.LevelInfo
	var pe *tlsrecord.PeerAlertError
	if errors.As(err, &pe) {
		lvl = slog.LevelDebug
	}
	cc.srv.tlsLog.log(cc.srv.log, lvl, "tls record from client refused: connection closed", "client", string(cc.ip), "err", err)
	cc.ex.dialing = false
	cc.dropBackend()
	cc.startClosing()
}

// seal is the outq's sealing step: p as records in the loop's scratch (valid until the next seal
// on this loop).
func (t *tlsConn) seal(p []byte) ([]byte, error) {
	ls := t.cc.ls
	if t.rec == nil {
		return nil, errTLSGone
	}
	out, err := t.rec.Seal(ls.sealBuf[:0], p)
	ls.sealBuf = out[:0]
	t.active, t.shrunk = ls.now(), false
	return out, err
}

var errTLSGone = errors.New("tls: session handed to the tunnel plane")

// goodbye queues our close_notify before the lingering close's shutdown(SHUT_WR) (closing.go).
func (cc *clientConn) goodbye() {
	t := cc.tls
	if t == nil || t.byeSent || t.rec == nil || t.hs != nil {
		return
	}
	t.byeSent = true
	ls := cc.ls
	rec, err := t.rec.AppendCloseNotify(ls.sealBuf[:0])
	ls.sealBuf = rec[:0]
	if err == nil && len(rec) > 0 {
		_ = cc.out.writeRaw(rec)
	}
}

// closeIdle closes an idle keep-alive client; over TLS it says close_notify first (best effort:
// an idle connection's socket has room for 24 bytes).
func (cc *clientConn) closeIdle() {
	if cc.tls != nil && cc.out.pending() == 0 {
		cc.goodbye()
		cc.out.release()
	}
	cc.closeNow()
}

// truncated: the client's TCP EOF cut a record in half. Not a clean end of its input: no answer
// is owed for bytes that never arrived (halfclose.go).
func (cc *clientConn) truncated(err error) bool {
	t := cc.tls
	if t == nil || !errors.Is(err, io.EOF) {
		return false
	}
	if t.hs != nil || (t.rec != nil && t.rec.Partial()) {
		cc.srv.tlsLog.log(cc.srv.log, slog.LevelDebug, "tls: client closed mid-record or mid-handshake", "client", string(cc.ip))
		return true
	}
	return false
}

// sweep is the TLS part of the timeout sweep; true when it closed the conn.
func (t *tlsConn) sweep(now int64) bool {
	cc := t.cc
	if t.hs != nil {
		if now >= t.hsDeadline {
			st := t.hs.State()
			cc.srv.tlsLog.log(cc.srv.log, slog.LevelInfo, "tls handshake timed out", "client", string(cc.ip), "state", st.String(), "timeout", cc.srv.cfg.HeaderTimeout)
			cc.closeNow()
			return true
		}
		return false
	}
	if cc.state == stateOffloaded || t.rec == nil {
		return false // the session is the tunnel plane's while a body is offloaded
	}
	t.tidy()
	if t.partialSince != 0 && now-t.partialSince >= int64(cc.srv.cfg.HeaderTimeout) {
		// A few bytes of a record pin a 16 KiB buffer: bound that like a slow head.
		cc.srv.tlsLog.log(cc.srv.log, slog.LevelInfo, "tls record from client incomplete for too long: connection closed", "client", string(cc.ip), "timeout", cc.srv.cfg.HeaderTimeout)
		cc.abort()
		return true
	}
	if !t.shrunk && now-t.active >= int64(tlsShrinkAfter) {
		t.rec.Shrink()
		t.shrunk = true
	}
	return false
}

// close releases everything at teardown: a handshake in progress leaves its queue or stops its
// goroutine, the session's keys are wiped and any borrowed buffer returned.
func (t *tlsConn) close() {
	if t.hs != nil {
		t.hs.Close()
		t.hs = nil
	}
	if t.rec != nil {
		t.rec.Close()
		t.rec, t.sess = nil, nil
	}
	t.dropPlain()
}

// handOffTLS gives a TLS client's session to the tunnel plane for good (a WebSocket upgrade);
// nil for a plain client.
func (cc *clientConn) handOffTLS() tlsrecord.RecordLayer {
	if cc.tls == nil {
		return nil
	}
	return cc.tls.handOff()
}

// handOff gives the session to the tunnel plane for good (a WebSocket upgrade).
func (t *tlsConn) handOff() tlsrecord.RecordLayer {
	rec := t.rec
	t.rec, t.sess = nil, nil
	return rec
}

// tlsLimiter keeps TLS failure lines (scanners, plain HTTP, bad records) from flooding the log:
// one line per interval per server, carrying the count it stands for.
type tlsLimiter struct{ warnLimiter }

func (l *tlsLimiter) log(log *slog.Logger, lv slog.Level, msg string, args ...any) {
	if !log.Enabled(context.Background(), lv) {
		return
	}
	if lv < slog.LevelInfo {
		log.Log(context.Background(), lv, msg, args...)
		return
	}
	now := nanotime()
	last := l.last.Load()
	if (last != 0 && now-last < int64(l.interval)) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "similar_suppressed", n)
	}
	log.Log(context.Background(), lv, msg, args...)
}

func tlsVersionName(v uint16) string {
	switch v {
	case 0x0304:
		return "TLS 1.3"
	case 0x0303:
		return "TLS 1.2"
	}
	return "unknown"
}

func tlsSuiteName(id uint16) string {
	if n := tlsrecord.SuiteName(id); n != "" {
		return n
	}
	return tls.CipherSuiteName(id)
}
