package handoff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"time"
)

type senderState uint8

const (
	senderReady     senderState = iota // the successor said READY; nothing sent yet
	senderStreaming                    // inside Send
	senderSent                         // Send finished cleanly; Finish may follow
	senderAborted                      // ABORT (keep serving) sent after streaming began; Finish waits for BYE
	senderFinished                     // BYE received: the successor has taken over
	senderFailed                       // the link is closed; kept items are the caller's
)

var senderNames = [...]string{"ready", "streaming", "sent", "aborted", "finished", "failed"}

func (s senderState) String() string { return senderNames[s] }

// Sender is the old process's end of a hand-off. Its methods are not safe
// for concurrent use; use the ctx arguments to cancel.
type Sender struct {
	l     *link
	o     Options
	peer  string
	child *child // nil when built by NewSender
	st    senderState

	seq      uint32
	inflight []*outBatch
	stats    SendStats
	done     func(*Item, error)

	// Test hooks.
	hookSent         func(seq uint32, inflight int)
	hookBeforeCommit func(seq uint32)
}

// SendStats counts one Send.
type SendStats struct {
	Items       int   // items the iterator yielded
	Transferred int   // committed: the successor's now, the sender closed its copies
	Kept        int   // still the caller's: done got a non-nil error
	Batches     int   // batch frames written
	FDs         int   // descriptors written in batch frames
	Bytes       int64 // batch payload bytes written
	MaxInFlight int   // most batches written and not yet acknowledged at once
}

// NewSender wraps a connected unix stream socket whose peer runs
// Receiver.Receive (StartSuccessor does this after the successor's READY).
// The Sender owns c from now on.
func NewSender(c *net.UnixConn, o Options) *Sender {
	return &Sender{l: newLink(c), o: o.withDefaults(), peer: "receiver"}
}

// PID is the successor's process id, 0 when built by NewSender.
func (s *Sender) PID() int {
	if s.child == nil {
		return 0
	}
	return s.child.cmd.Process.Pid
}

func (s *Sender) errf(phase string, err error) error {
	return &Error{Peer: s.peer, Phase: phase, Err: err}
}

// Send streams items to the successor in batches of at most MaxBatchFDs
// descriptors (and MaxFrameLen bytes), with at most Window batches awaiting
// their ACK. It pulls items lazily, so the caller can detach each item from
// its plane as it is yielded; items never yielded are never touched.
//
// done runs exactly once for every yielded item, in batch order, on the
// calling goroutine:
//   - err == nil: the item was committed to the successor and Send has
//     already closed it.FDs (the successor holds the only copies now);
//   - err != nil: the item is still the caller's, its fds untouched: resume
//     serving it. The error says why (rejected by the successor, batch
//     refused, timeout, successor gone, ...).
//
// An item and its FDs and State must not change until done runs for it.
//
// After the first failure Send stops pulling, keeps every batch not yet
// committed, tells the successor (ABORT: keep serving what you committed)
// and returns the error. Committed items stay committed. The old process
// has stopped accepting by then, so the successor stays in charge of new
// connections: call Finish to wait until it has taken over (MAINPID) before
// exiting; Finish fails when the successor is gone (re-open the listeners).
func (s *Sender) Send(ctx context.Context, items iter.Seq[*Item], done func(*Item, error)) (SendStats, error) {
	if s.st != senderReady {
		return s.stats, s.errf("send", fmt.Errorf("%w: sender is %v", ErrState, s.st))
	}
	s.st = senderStreaming
	s.done = done
	defer s.l.watch(ctx)()

	var err error
	cur := s.newBatch()
	for it := range items {
		s.stats.Items++
		if e := checkItem(it); e != nil {
			s.keep(it, s.errf(fmt.Sprintf("item %d (%v)", it.ID, it.Kind), fmt.Errorf("%w: %v", ErrRejected, e)))
			continue
		}
		if fd := cur.sharedFD(it); fd >= 0 {
			s.keep(it, s.errf(fmt.Sprintf("item %d (%v)", it.ID, it.Kind), fmt.Errorf("%w: fd %d already in batch %d", ErrRejected, fd, cur.seq)))
			continue
		}
		if !cur.fits(it, s.o.MaxBatchFDs) {
			if err = s.flush(ctx, cur); err != nil {
				s.keep(it, err)
				break
			}
			cur = s.newBatch()
		}
		cur.add(it)
	}
	if err == nil && len(cur.items) > 0 {
		err = s.flush(ctx, cur)
	}
	for err == nil && len(s.inflight) > 0 {
		err = s.awaitAck(ctx)
	}
	if err != nil {
		return s.stats, err
	}
	s.st = senderSent
	return s.stats, nil
}

func (s *Sender) newBatch() *outBatch {
	s.seq++
	return &outBatch{seq: s.seq, bytes: batchHeadLen}
}

func (b *outBatch) fits(it *Item, maxFDs int) bool {
	if len(b.items) == 0 {
		return true // checkItem bounded it: one item always fits
	}
	return b.fds+len(it.FDs) <= maxFDs && b.bytes+itemWireLen(it) <= MaxFrameLen && len(b.items) < MaxBatchFDs
}

// sharedFD returns an fd of it that an item already in the batch lists
// (closing it twice after the commit could close someone else's fd), or -1.
func (b *outBatch) sharedFD(it *Item) int {
	for _, o := range b.items {
		for _, x := range o.FDs {
			for _, y := range it.FDs {
				if x == y {
					return y
				}
			}
		}
	}
	return -1
}

func (b *outBatch) add(it *Item) {
	b.items = append(b.items, it)
	b.fds += len(it.FDs)
	b.bytes += itemWireLen(it)
}

// flush writes cur once the window has room.
func (s *Sender) flush(ctx context.Context, b *outBatch) error {
	s.inflight = append(s.inflight, b) // from here on fail() keeps it
	for len(s.inflight)-1 >= s.o.Window {
		if err := s.awaitAck(ctx); err != nil {
			return err
		}
	}
	fds := make([]int, 0, b.fds)
	p := s.l.frame()
	p = binary.BigEndian.AppendUint16(p, uint16(len(b.items)))
	p = binary.BigEndian.AppendUint16(p, 0)
	for _, it := range b.items {
		p = appendItem(p, it)
		fds = append(fds, it.FDs...)
	}
	phase := fmt.Sprintf("batch %d (%d items, %d fds)", b.seq, len(b.items), len(fds))
	err := s.l.send(p, msgBatch, b.seq, fds, deadline(ctx, s.o.AckTimeout))
	// States may hold secrets (a TLS session's traffic keys): the copy in the link's buffer is
	// wiped as soon as it is written (or not), the items' own by their owner.
	clear(p[headerLen:])
	if err != nil {
		return s.fail(phase, s.ioErr(ctx, err, s.o.AckTimeout))
	}
	b.to(outSent)
	s.stats.Batches++
	s.stats.FDs += len(fds)
	s.stats.Bytes += int64(len(p) - headerLen)
	if n := len(s.inflight); n > s.stats.MaxInFlight {
		s.stats.MaxInFlight = n
	}
	if s.hookSent != nil {
		s.hookSent(b.seq, len(s.inflight))
	}
	return nil
}

// awaitAck reads the answer to the oldest batch in flight and settles it.
func (s *Sender) awaitAck(ctx context.Context) error {
	b := s.inflight[0]
	phase := fmt.Sprintf("ack of batch %d", b.seq)
	f, err := s.l.recv(deadline(ctx, s.o.AckTimeout))
	if err != nil {
		return s.fail(phase, s.ioErr(ctx, err, s.o.AckTimeout))
	}
	if len(f.fds) > 0 {
		closeFDs(f.fds)
		return s.fail(phase, fmt.Errorf("%w: %v carried %d fds", ErrProtocol, f.h.typ, len(f.fds)))
	}
	switch f.h.typ {
	case msgAck:
		if f.h.seq != b.seq {
			return s.fail(phase, fmt.Errorf("%w: ACK for batch %d", ErrProtocol, f.h.seq))
		}
		rej, err := decodeAck(f.payload, len(b.items))
		if err != nil {
			return s.fail(phase, err)
		}
		b.rejects = rej
		b.to(outAcked)
		if s.hookBeforeCommit != nil {
			s.hookBeforeCommit(b.seq)
		}
		if err := s.l.send(s.l.frame(), msgCommit, b.seq, nil, deadline(ctx, s.o.AckTimeout)); err != nil {
			// EPIPE: the receiver is gone or gave up (it shut its socket
			// down before this COMMIT got in): it will not serve them.
			return s.fail(fmt.Sprintf("commit of batch %d", b.seq), s.ioErr(ctx, err, s.o.AckTimeout))
		}
		b.to(outCommitted)
		s.inflight = s.inflight[1:]
		s.settle(b)
		return nil
	case msgNack:
		code, text := uint8(0), ""
		if len(f.payload) > 0 {
			code, text = f.payload[0], string(f.payload[1:])
		}
		e := ErrRefused
		if code == nackTruncated {
			e = ErrTruncated
		}
		return s.fail(fmt.Sprintf("batch %d", f.h.seq), fmt.Errorf("%w: %s", e, text))
	case msgFail:
		return s.fail(phase, fmt.Errorf("%w: %s", ErrPeerFail, f.payload))
	}
	return s.fail(phase, fmt.Errorf("%w: %v while waiting for ACK", ErrProtocol, f.h.typ))
}

// settle runs done for a committed batch: accepted items are closed and
// reported transferred, rejected ones kept.
func (s *Sender) settle(b *outBatch) {
	r := 0
	for i, it := range b.items {
		if r < len(b.rejects) && b.rejects[r].index == i {
			s.keep(it, s.errf(fmt.Sprintf("batch %d item %d (%v)", b.seq, it.ID, it.Kind), fmt.Errorf("%w: %s", ErrRejected, b.rejects[r].reason)))
			r++
			continue
		}
		closeFDs(it.FDs)
		s.stats.Transferred++
		if s.done != nil {
			s.done(it, nil)
		}
	}
}

func (s *Sender) keep(it *Item, err error) {
	s.stats.Kept++
	if s.done != nil {
		s.done(it, err)
	}
}

// fail keeps every batch not yet committed and tells the successor to keep
// serving what it committed (it answers with BYE once it took over, which
// Finish waits for). If even that cannot be said, the link is closed.
func (s *Sender) fail(phase string, err error) error {
	e := s.errf(phase, err)
	for _, b := range s.inflight {
		b.to(outKept)
		for _, it := range b.items {
			s.keep(it, e)
		}
	}
	s.inflight = nil
	if werr := s.l.sendTextNow(msgAbort, []byte{abortKeepServing}, e.Error()); werr != nil {
		s.l.close()
		s.st = senderFailed
	} else {
		s.st = senderAborted
	}
	return e
}

// ioErr explains a failed read or write: ctx, timeout, or the successor
// gone (with its exit status when it has exited).
func (s *Sender) ioErr(ctx context.Context, err error, d time.Duration) error {
	if cerr := ctxErr(ctx); cerr != nil {
		return cerr
	}
	err = timeoutErr(err, d)
	if s.child != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isPeerGone(err)) {
		if how := s.child.status(time.Second); how != "" {
			return fmt.Errorf("%w (successor %s)", err, how)
		}
	}
	return err
}

// Finish tells the successor everything was sent (DONE) and waits for its
// BYE: after that the successor is in charge (it told systemd MAINPID) and
// the old process may exit once it holds nothing. After a failed Send (or
// an Abort after Send) it sends nothing and only waits for the BYE. An
// error means the successor did not confirm: the items already committed
// are its, but the old process should keep (or resume) serving new
// connections.
func (s *Sender) Finish(ctx context.Context) error {
	if s.st != senderSent && s.st != senderAborted {
		return s.errf("done", fmt.Errorf("%w: sender is %v", ErrState, s.st))
	}
	defer s.l.watch(ctx)()
	if s.st == senderSent {
		p := s.l.frame()
		p = binary.BigEndian.AppendUint32(p, uint32(s.stats.Batches))
		p = binary.BigEndian.AppendUint64(p, uint64(s.stats.Transferred))
		if err := s.l.send(p, msgDone, 0, nil, deadline(ctx, s.o.FinishTimeout)); err != nil {
			return s.finishFail("done", s.ioErr(ctx, err, s.o.FinishTimeout))
		}
	}
	end := deadline(ctx, s.o.FinishTimeout)
	var f inFrame
	for {
		var err error
		f, err = s.l.recv(end)
		if err != nil {
			return s.finishFail("bye", s.ioErr(ctx, err, s.o.FinishTimeout))
		}
		closeFDs(f.fds)
		if s.st == senderAborted && (f.h.typ == msgAck || f.h.typ == msgNack) {
			continue // answers to batches in flight when we aborted
		}
		break
	}
	switch {
	case f.h.typ == msgFail:
		return s.finishFail("bye", fmt.Errorf("%w: %s", ErrPeerFail, f.payload))
	case f.h.typ != msgBye || len(f.payload) != 8:
		return s.finishFail("bye", fmt.Errorf("%w: %v (%d bytes) instead of BYE", ErrProtocol, f.h.typ, len(f.payload)))
	case binary.BigEndian.Uint64(f.payload) != uint64(s.stats.Transferred):
		return s.finishFail("bye", fmt.Errorf("%w: successor counts %d items, we committed %d", ErrProtocol, binary.BigEndian.Uint64(f.payload), s.stats.Transferred))
	}
	s.st = senderFinished
	s.l.close()
	return nil
}

func (s *Sender) finishFail(phase string, err error) error {
	s.l.close()
	s.st = senderFailed
	return s.errf(phase, err)
}

// Abort gives up. Before Send it cancels the upgrade: the successor is told
// to exit (ABORT without keep-serving), and a successor started by
// StartSuccessor is waited for (FinishTimeout) and then killed. After Send
// the successor keeps what it has committed and stays in charge: Finish
// then waits for its BYE. Abort after Finish or a failure does nothing.
func (s *Sender) Abort(reason string) error {
	switch s.st {
	case senderFinished, senderFailed, senderAborted:
		return nil
	}
	flags := uint8(0)
	if s.st != senderReady {
		flags = abortKeepServing
	}
	werr := s.l.sendTextNow(msgAbort, []byte{flags}, reason)
	if s.st == senderReady || werr != nil {
		s.l.close()
		if s.st == senderReady && s.child != nil {
			s.child.stop(s.o.FinishTimeout)
		}
		s.st = senderFailed
	} else {
		s.st = senderAborted
	}
	if werr != nil && !isPeerGone(werr) {
		return s.errf("abort", werr)
	}
	return nil
}

// Close releases the link: Abort("closed") unless the hand-off finished or
// failed, and no more waiting for a BYE.
func (s *Sender) Close() error {
	err := s.Abort("closed by the old process")
	s.l.close()
	if s.st == senderAborted {
		s.st = senderFailed
	}
	return err
}
