package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// link is the framed connection over a unix stream socket.
//
// Why SOCK_STREAM and not SOCK_SEQPACKET: a seqpacket message must fit the
// sender's socket buffer in one skb (EMSGSIZE past ~208 KiB by default, and
// a large linear kmalloc the kernel may fail to find under fragmentation),
// while a batch with pending bytes can be a megabyte; a stream splits it
// into skbs freely. The price is that the kernel does not mark message
// boundaries, so the link keeps them itself:
//
//   - a frame is one sendmsg; its fds ride on its first skb, which holds
//     the whole 16-byte header;
//   - the reader asks for exactly the header, then exactly the payload, so
//     one recvmsg never reaches into the next frame: fds can only arrive
//     with a header read, and a truncation (MSG_CTRUNC) belongs to exactly
//     that frame;
//   - every read goes through recvmsg with room for SCM_MAX_FD fds, so
//     stray fds are never dropped silently: they are closed and reported.
type link struct {
	c    *net.UnixConn
	oob  []byte // room for MaxBatchFDs descriptors
	hdr  [headerLen]byte
	buf  []byte // frame being written
	rbuf []byte // payload of the last non-batch frame read

	mu        sync.Mutex
	closed    bool
	interrupt bool // set by ctx cancellation: deadlines already past
}

func newLink(c *net.UnixConn) *link {
	return &link{c: c, oob: make([]byte, unix.CmsgSpace(MaxBatchFDs*4)), buf: make([]byte, 0, 4096)}
}

// linkFromFD wraps fd (which it takes over: closed on error too).
func linkFromFD(fd int, name string) (*link, error) {
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%s is a %T, not a unix socket", name, c)
	}
	return newLink(uc), nil
}

func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		l.c.Close()
	}
}

// stop makes every blocked and future read or write return at once (ctx
// cancelled); the caller then reports ctx.Err().
func (l *link) stop() {
	l.mu.Lock()
	l.interrupt = true
	l.mu.Unlock()
	l.c.SetDeadline(time.Unix(1, 0))
}

// watch makes ctx's end interrupt the link's reads and writes for one
// operation. The returned func ends the watch and, if the interruption has
// started, waits for it, so it can never leak into the next operation.
func (l *link) watch(ctx context.Context) (end func()) {
	l.mu.Lock()
	l.interrupt = false
	l.mu.Unlock()
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		l.stop()
		close(done)
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}

func (l *link) setDeadline(set func(time.Time) error, t time.Time) {
	l.mu.Lock()
	if l.interrupt {
		t = time.Unix(1, 0)
	}
	l.mu.Unlock()
	set(t)
}

// frame starts a frame in l.buf: header space, payload appended by the caller.
func (l *link) frame() []byte { return l.buf[:headerLen] }

// send writes one frame (b from frame(), payload appended) with fds
// attached to its first byte.
func (l *link) send(b []byte, typ msgType, seq uint32, fds []int, deadline time.Time) error {
	h := header{version: Version, typ: typ, nfds: uint16(len(fds)), seq: seq, length: uint32(len(b) - headerLen)}
	h.put(b)
	l.buf = b[:0]
	l.setDeadline(l.c.SetWriteDeadline, deadline)
	off := 0
	if len(fds) > 0 {
		n, _, err := l.c.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
		if err != nil {
			return plain(err)
		}
		off = n // fds went with the first skb; the rest is plain bytes
	}
	for off < len(b) {
		n, err := l.c.Write(b[off:])
		off += n
		if err != nil {
			return plain(err)
		}
	}
	return nil
}

// sendText writes a frame whose payload is prefix + text.
func (l *link) sendText(typ msgType, seq uint32, prefix []byte, text string, deadline time.Time) error {
	b := append(l.frame(), prefix...)
	b = append(b, clip(text)...)
	return l.send(b, typ, seq, nil, deadline)
}

// sendTextNow is sendText for a last word (ABORT, FAIL) while giving up:
// it ignores a ctx interruption and allows one second.
func (l *link) sendTextNow(typ msgType, prefix []byte, text string) error {
	b := append(l.frame(), prefix...)
	b = append(b, clip(text)...)
	h := header{version: Version, typ: typ, length: uint32(len(b) - headerLen)}
	h.put(b)
	l.buf = b[:0]
	l.c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := l.c.Write(b)
	return plain(err)
}

// isPeerGone: the other end closed or shut its socket down.
func isPeerGone(err error) bool {
	return errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)
}

// inFrame is one frame read. fds are the receiver's to close.
type inFrame struct {
	h         header
	payload   []byte
	fds       []int
	truncated bool // MSG_CTRUNC: the kernel dropped fds (RLIMIT_NOFILE) or the control buffer was short
}

// recv reads one frame. Batch payloads get a fresh buffer (their items'
// State is handed to the adopter); others reuse l.buf. On error any fds
// that arrived are closed.
func (l *link) recv(deadline time.Time) (f inFrame, err error) {
	l.setDeadline(l.c.SetReadDeadline, deadline)
	defer func() {
		if err != nil {
			closeFDs(f.fds)
			f.fds = nil
		}
	}()
	got := 0
	for got < headerLen {
		n, oobn, flags, _, err := l.c.ReadMsgUnix(l.hdr[got:], l.oob)
		if oobn > 0 {
			fds, perr := parseRights(l.oob[:oobn])
			f.fds = append(f.fds, fds...)
			if perr != nil {
				return f, fmt.Errorf("%w: control message: %v", ErrProtocol, perr)
			}
			if got > 0 {
				return f, fmt.Errorf("%w: fds arrived inside a frame header", ErrProtocol)
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			f.truncated = true
		}
		got += n
		if err != nil {
			err = plain(err)
			if errors.Is(err, io.EOF) && got > 0 {
				err = fmt.Errorf("%w: connection closed inside a frame header (%d of %d bytes)", io.ErrUnexpectedEOF, got, headerLen)
			}
			return f, err
		}
		if n == 0 {
			if got == 0 {
				return f, io.EOF
			}
			return f, io.ErrUnexpectedEOF
		}
	}
	f.h, err = parseHeader(l.hdr[:])
	if err != nil {
		return f, err
	}
	if f.h.typ == msgBatch {
		f.payload = make([]byte, f.h.length)
	} else {
		if cap(l.rbuf) < int(f.h.length) {
			l.rbuf = make([]byte, 0, max(f.h.length, 256))
		}
		f.payload = l.rbuf[:f.h.length]
	}
	for got = 0; got < len(f.payload); {
		n, oobn, _, _, err := l.c.ReadMsgUnix(f.payload[got:], l.oob)
		if oobn > 0 {
			fds, _ := parseRights(l.oob[:oobn])
			f.fds = append(f.fds, fds...)
			return f, fmt.Errorf("%w: fds arrived inside a %v payload", ErrProtocol, f.h.typ)
		}
		got += n
		if err != nil {
			err = plain(err)
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: connection closed inside a %v payload (%d of %d bytes)", io.ErrUnexpectedEOF, f.h.typ, got, len(f.payload))
			}
			return f, err
		}
		if n == 0 {
			return f, io.ErrUnexpectedEOF
		}
	}
	return f, nil
}

// parseRights returns every fd in a control buffer (even after a parse
// error part-way, so that none leaks).
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	var first error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			if first == nil {
				first = fmt.Errorf("unexpected control message level %d type %d", msgs[i].Header.Level, msgs[i].Header.Type)
			}
			continue
		}
		r, err := unix.ParseUnixRights(&msgs[i])
		fds = append(fds, r...)
		if err != nil && first == nil {
			first = err
		}
	}
	return fds, first
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// plain drops net.OpError's "read unix @->@:" wrapping; errno and
// deadline errors stay reachable with errors.Is.
func plain(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// timeoutErr turns a deadline error into ErrTimeout with the duration.
func timeoutErr(err error, d time.Duration) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w after %v", ErrTimeout, d)
	}
	return err
}
