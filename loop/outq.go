package loop

import (
	"sync/atomic"
	"unsafe"

	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"
)

// outq writes toward one peer straight to its socket and keeps what the kernel would not take.
// wsgate never uses gnet's outbound buffer for proxied bytes: that buffer is unbounded, opaque
// (its bytes cannot be handed to the tunnel plane) and dropped by gnet's close on EAGAIN. With
// outq every byte not yet in the kernel is ours, so it can be counted against BodyHighWater,
// passed on as Transfer.Pending / Tunnel.To*, or flushed before a lingering close.
type outq struct {
	fd   int // -1 while dialling, detachedFD while the socket is in the tunnel plane
	buf  *bytebufferpool.ByteBuffer
	off  int
	acct *atomic.Int64 // the server's queued-byte count (Stats.QueuedBytes); nil in some tests
	tls  *tlsConn      // a TLS client's queue: write seals first, so only ciphertext is queued (tlswire.go)

	// Write-stall tracking (stalled): progress is bytes written, sampled by the sweep.
	sent  uint64 // bytes written to fd so far
	wrote uint64 // bytes handed to write so far, sent or queued (the access log's bytes out)
	mark  uint64 // sent when the sweep last saw progress
	since int64  // nanotime of that sweep; 0 = no bytes were queued at the last sweep
}

func (q *outq) pending() int {
	if q.buf == nil {
		return 0
	}
	return len(q.buf.B) - q.off
}

// write sends p (or queues it behind older bytes). The error is the socket's: the peer is gone.
// Toward a TLS client p is sealed into records first.
func (q *outq) write(p []byte) error {
	q.wrote += uint64(len(p)) // HTTP bytes: counted before sealing
	if q.tls != nil && len(p) > 0 {
		sealed, err := q.tls.seal(p)
		if err != nil {
			return err
		}
		p = sealed
	}
	return q.writeRaw(p)
}

// writeRaw is write without sealing: plain sockets, and TLS records made elsewhere (handshake
// flights, alerts, close_notify).
func (q *outq) writeRaw(p []byte) error {
	if q.pending() > 0 {
		if err := q.flush(); err != nil {
			return err
		}
		if q.pending() > 0 {
			q.buf.B = append(q.buf.B, p...)
			q.count(len(p))
			return nil
		}
	}
	for len(p) > 0 {
		if q.fd < 0 {
			q.stash(p)
			return nil
		}
		n, err := rawWrite(q.fd, p)
		switch err {
		case nil:
			p = p[n:]
			q.sent += uint64(n)
		case unix.EINTR:
		case unix.EAGAIN:
			q.stash(p)
			return nil
		default:
			return err
		}
	}
	return nil
}

func (q *outq) stash(p []byte) {
	if q.buf == nil {
		q.buf = bytebufferpool.Get()
		q.off = 0
	}
	q.buf.B = append(q.buf.B, p...)
	q.count(len(p))
}

func (q *outq) count(n int) {
	if q.acct != nil {
		q.acct.Add(int64(n))
	}
}

// flush writes as much of the queue as the socket takes now.
func (q *outq) flush() error {
	for q.pending() > 0 && q.fd >= 0 {
		n, err := rawWrite(q.fd, q.buf.B[q.off:])
		switch err {
		case nil:
			q.off += n
			q.sent += uint64(n)
			q.count(-n)
		case unix.EINTR:
		case unix.EAGAIN:
			q.compact()
			return nil
		default:
			return err
		}
	}
	if q.buf != nil && q.pending() == 0 {
		q.release()
	}
	return nil
}

// stalled is the write-stall rule, run by the sweep: bytes are queued and none was written for
// limit. A queue that drains and fills again between two sweeps made progress; a slow reader that
// takes a byte now and then is not stalled. Idle and linger timers never drop a queue: only this.
func (q *outq) stalled(now, limit int64) bool {
	if q.pending() == 0 {
		q.since = 0
		return false
	}
	if q.since == 0 || q.sent != q.mark {
		q.mark, q.since = q.sent, now
		return false
	}
	return now-q.since >= limit
}

// compact drops the written prefix once it dominates, so a long-lived queue does not creep.
func (q *outq) compact() {
	if q.off > 32<<10 && q.off*2 > len(q.buf.B) {
		n := copy(q.buf.B, q.buf.B[q.off:])
		q.buf.B = q.buf.B[:n]
		q.off = 0
	}
}

// bytes returns the queued bytes; valid until the next write or release.
func (q *outq) bytes() []byte {
	if q.buf == nil {
		return nil
	}
	return q.buf.B[q.off:]
}

func (q *outq) release() {
	q.count(-q.pending())
	if q.buf != nil {
		bytebufferpool.Put(q.buf)
		q.buf = nil
	}
	q.off = 0
}

// rawWrite is write(2) without the scheduler's syscall bookkeeping. Every fd an outq holds is a
// non-blocking socket, so the call never parks the thread: unix.Write's entersyscall/exitsyscall
// pair (and sysmon handing the P away mid-call, then a futex wake to get it back) buys nothing
// here and costs about as much as the loop's own work on a small proxied request.
func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e // an Errno: compares equal to unix.EAGAIN and unix.EINTR
	}
	return int(n), nil
}
