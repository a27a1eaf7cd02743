package handoff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Adopter takes items over on the receiving side, in two steps so that no
// byte moves through an item's sockets before the old process has let go.
// All three run on the goroutine that called Receive, in batch order.
type Adopter interface {
	// Prepare checks an item and gets ready to serve it (decode and check
	// the state, reserve a slot) WITHOUT reading, writing or registering
	// its fds. An error rejects the item: the receiver closes its fds and
	// the old process keeps serving it. it.State is the adopter's to keep.
	Prepare(it *Item) error
	// Commit starts serving a prepared item: from now on its fds are the
	// adopter's (the old process has closed its copies or is about to).
	Commit(it *Item)
	// Cancel drops a prepared item whose batch was never committed (the
	// old process keeps it); the receiver closes its fds after Cancel.
	Cancel(it *Item)
}

type receiverState uint8

const (
	receiverIdle      receiverState = iota // inherited; READY not sent
	receiverReady                          // READY sent
	receiverReceiving                      // inside Receive
	receiverDone                           // DONE (or ABORT keep-serving) read; Finish may follow
	receiverFinished                       // BYE sent
	receiverFailed                         // link closed
)

var receiverNames = [...]string{"idle", "ready", "receiving", "done", "finished", "failed"}

func (s receiverState) String() string { return receiverNames[s] }

// RecvStats counts one Receive.
type RecvStats struct {
	Batches   int // batch frames read
	FDs       int // descriptors that arrived with them
	Committed int // items now the adopter's
	Rejected  int // items Prepare refused (closed here; the old process kept them)
	Refused   int // batches refused whole with a NACK (closed here; kept there)
	Cancelled int // prepared items whose batch never committed (closed here; kept there)
}

// AbortError is what Receive wraps when the old process sent ABORT.
type AbortError struct {
	Reason string
	// KeepServing: the old process had stopped accepting (the abort came
	// during or after streaming), so this process keeps its listeners and
	// what it committed while the old one drains the rest. Without it the
	// upgrade was cancelled before anything moved: exit.
	KeepServing bool
}

func (e *AbortError) Error() string {
	if e.KeepServing {
		return "aborted by the old process, keep serving: " + e.Reason
	}
	return "upgrade cancelled by the old process: " + e.Reason
}
func (e *AbortError) Is(target error) bool { return target == ErrAborted }

// Receiver is the new process's end of a hand-off. Not safe for
// concurrent use.
type Receiver struct {
	l     *link
	o     Options
	peer  string
	ppid  int
	files map[string]*os.File
	st    receiverState

	pending  []*inBatch // acked, waiting for COMMIT, oldest first
	expect   uint32     // next batch seq
	refusing bool       // a batch was refused: refuse the rest
	stats    RecvStats

	// Test hooks.
	hookBeforeAck   func(seq uint32)
	hookAfterAck    func(seq uint32)
	hookAfterCommit func(seq uint32)
	hookGaveUp      func()
}

// NewReceiver wraps a connected unix stream socket whose peer runs a
// Sender. The Receiver owns c from now on.
func NewReceiver(c *net.UnixConn, o Options) *Receiver {
	return &Receiver{l: newLink(c), o: o.withDefaults(), peer: "sender", expect: 1}
}

// ParentPID is the old process's pid (0 when built by NewReceiver).
func (r *Receiver) ParentPID() int { return r.ppid }

// File returns the inherited file passed under name by StartSuccessor's
// Files (e.g. "lock"), or nil. The caller owns it; keep the *os.File (its
// finalizer closes the fd once it is unreachable).
func (r *Receiver) File(name string) *os.File { return r.files[name] }

func (r *Receiver) errf(phase string, err error) error {
	return &Error{Peer: r.peer, Phase: phase, Err: err}
}

// Ready tells the old process that this one has bound its listeners and
// takes new connections: the old one stops accepting and starts streaming.
func (r *Receiver) Ready() error {
	if r.st != receiverIdle {
		return r.errf("ready", fmt.Errorf("%w: receiver is %v", ErrState, r.st))
	}
	p := binary.BigEndian.AppendUint32(r.l.frame(), uint32(os.Getpid()))
	if err := r.l.send(p, msgReady, 0, nil, time.Now().Add(r.o.AckTimeout)); err != nil {
		r.st = receiverFailed
		r.l.close()
		return r.errf("ready", timeoutErr(err, r.o.AckTimeout))
	}
	r.st = receiverReady
	return nil
}

// Fail tells the old process that this one cannot take over (it keeps
// serving and logs why) and closes the link. Use it instead of Ready when
// the start fails (a listener did not bind, the config did not load...).
func (r *Receiver) Fail(why error) {
	if r.st == receiverFinished || r.st == receiverFailed {
		return
	}
	r.l.sendTextNow(msgFail, nil, why.Error())
	r.l.close()
	r.st = receiverFailed
}

// Receive takes items until the old process says DONE (nil error: Finish
// next), ABORT (an error wrapping *AbortError) or fails. Whatever the
// outcome, items committed stay the adopter's and every other fd that
// arrived has been closed. After an ABORT with KeepServing this process is
// in charge of new connections: take over (MAINPID) and call Finish, which
// the old process waits for before it exits.
func (r *Receiver) Receive(ctx context.Context, a Adopter) (RecvStats, error) {
	if r.st != receiverIdle && r.st != receiverReady {
		return r.stats, r.errf("receive", fmt.Errorf("%w: receiver is %v", ErrState, r.st))
	}
	r.st = receiverReceiving
	defer r.l.watch(ctx)()
	for {
		d, phase := r.o.IdleTimeout, fmt.Sprintf("waiting for batch %d", r.expect)
		if len(r.pending) > 0 {
			d, phase = r.o.AckTimeout, fmt.Sprintf("waiting for the commit of batch %d", r.pending[0].seq)
		}
		f, err := r.l.recv(deadline(ctx, d))
		if err != nil {
			if cerr := ctxErr(ctx); cerr != nil {
				err = cerr
			} else if errors.Is(err, os.ErrDeadlineExceeded) && len(r.pending) > 0 {
				r.giveUp(a)
			}
			return r.stats, r.fail(a, phase, timeoutErr(err, d))
		}
		switch f.h.typ {
		case msgBatch:
			err = r.batch(ctx, a, f)
		case msgCommit:
			err = r.commit(a, f)
		case msgAbort:
			ae := &AbortError{}
			if len(f.payload) > 0 {
				ae.KeepServing = f.payload[0]&abortKeepServing != 0
				ae.Reason = string(f.payload[1:])
			}
			r.cancelPending(a)
			if ae.KeepServing {
				r.st = receiverDone // the old process waits for our BYE
			} else {
				r.l.close()
				r.st = receiverFailed
			}
			return r.stats, r.errf("abort", ae)
		case msgFail:
			return r.stats, r.fail(a, phase, fmt.Errorf("%w: %s", ErrPeerFail, f.payload))
		case msgDone:
			return r.stats, r.done(f)
		default:
			closeFDs(f.fds)
			return r.stats, r.fail(a, phase, fmt.Errorf("%w: unexpected %v", ErrProtocol, f.h.typ))
		}
		if err != nil {
			return r.stats, err
		}
	}
}

// batch handles one BATCH frame: refuse it whole, or Prepare every item
// and ACK (listing the rejects).
func (r *Receiver) batch(ctx context.Context, a Adopter, f inFrame) error {
	b := &inBatch{seq: f.h.seq}
	r.stats.Batches++
	r.stats.FDs += len(f.fds)
	phase := fmt.Sprintf("batch %d", b.seq)
	if b.seq != r.expect {
		closeFDs(f.fds)
		return r.fail(a, phase, fmt.Errorf("%w: batch %d out of order (expected %d)", ErrProtocol, b.seq, r.expect))
	}
	r.expect++
	switch {
	case r.refusing:
		closeFDs(f.fds)
		return r.refuse(ctx, a, b, nackRefusing, "an earlier batch was refused")
	case f.truncated || len(f.fds) != int(f.h.nfds):
		closeFDs(f.fds)
		return r.refuse(ctx, a, b, nackTruncated, fmt.Sprintf("%d of %d fds arrived (MSG_CTRUNC %v; %s)",
			len(f.fds), f.h.nfds, f.truncated, fdLimitInfo()))
	}
	items, err := decodeBatch(f.payload, f.fds, nil)
	if err != nil {
		closeFDs(f.fds)
		return r.refuse(ctx, a, b, nackMalformed, err.Error())
	}
	b.items, b.accepted = items, make([]bool, len(items))
	if r.hookBeforeAck != nil {
		r.hookBeforeAck(b.seq)
	}
	var rejects []reject
	for i := range b.items {
		it := &b.items[i]
		if err := a.Prepare(it); err != nil {
			closeFDs(it.FDs)
			rejects = append(rejects, reject{index: i, reason: fmt.Sprintf("item %d (%v): %v", it.ID, it.Kind, err)})
			r.stats.Rejected++
			continue
		}
		b.accepted[i] = true
	}
	if err := r.l.send(appendAck(r.l.frame(), rejects), msgAck, b.seq, nil, deadline(ctx, r.o.AckTimeout)); err != nil {
		r.cancel(a, b)
		if cerr := ctxErr(ctx); cerr != nil {
			err = cerr
		}
		return r.fail(a, "ack of "+phase, timeoutErr(err, r.o.AckTimeout))
	}
	b.to(inAcked)
	r.pending = append(r.pending, b)
	if r.hookAfterAck != nil {
		r.hookAfterAck(b.seq)
	}
	return nil
}

func (r *Receiver) refuse(ctx context.Context, a Adopter, b *inBatch, code uint8, why string) error {
	b.to(inRefused)
	r.refusing = true
	r.stats.Refused++
	if err := r.l.sendText(msgNack, b.seq, []byte{code}, fmt.Sprintf("batch %d: %s", b.seq, why), deadline(ctx, r.o.AckTimeout)); err != nil {
		return r.fail(a, fmt.Sprintf("nack of batch %d", b.seq), timeoutErr(err, r.o.AckTimeout))
	}
	return nil
}

func (r *Receiver) commit(a Adopter, f inFrame) error {
	if len(r.pending) == 0 || r.pending[0].seq != f.h.seq || len(f.payload) != 0 {
		return r.fail(a, fmt.Sprintf("commit of batch %d", f.h.seq), fmt.Errorf("%w: COMMIT of batch %d does not match the oldest acked batch", ErrProtocol, f.h.seq))
	}
	b := r.pending[0]
	r.pending = r.pending[1:]
	b.to(inCommitted)
	for i := range b.items {
		if b.accepted[i] {
			a.Commit(&b.items[i])
			r.stats.Committed++
		}
	}
	if r.hookAfterCommit != nil {
		r.hookAfterCommit(b.seq)
	}
	return nil
}

func (r *Receiver) done(f inFrame) error {
	if len(r.pending) > 0 || len(f.payload) != 12 {
		return r.fail(nil, "done", fmt.Errorf("%w: DONE with %d batches uncommitted (%d-byte payload)", ErrProtocol, len(r.pending), len(f.payload)))
	}
	batches, items := binary.BigEndian.Uint32(f.payload), binary.BigEndian.Uint64(f.payload[4:])
	if items != uint64(r.stats.Committed) || batches != r.expect-1 {
		return r.fail(nil, "done", fmt.Errorf("%w: old process sent %d batches and committed %d items; we saw %d batches and committed %d",
			ErrProtocol, batches, items, r.expect-1, r.stats.Committed))
	}
	r.st = receiverDone
	return nil
}

// Finish says BYE: this process has taken over (tell systemd MAINPID
// before calling it); the old one may exit once it holds nothing.
func (r *Receiver) Finish() error {
	if r.st != receiverDone {
		return r.errf("bye", fmt.Errorf("%w: receiver is %v", ErrState, r.st))
	}
	p := binary.BigEndian.AppendUint64(r.l.frame(), uint64(r.stats.Committed))
	err := r.l.send(p, msgBye, 0, nil, time.Now().Add(r.o.FinishTimeout))
	r.l.close()
	if err != nil {
		r.st = receiverFailed
		return r.errf("bye", timeoutErr(err, r.o.FinishTimeout))
	}
	r.st = receiverFinished
	return nil
}

// Close closes the link (telling the old process, if the hand-off did not
// finish). Inherited files are not closed.
func (r *Receiver) Close() error {
	r.Fail(errors.New("receiver closed"))
	return nil
}

// giveUp runs when the COMMIT of an acked batch is overdue. Shutting the
// socket down for reading makes the sender's next write fail (EPIPE, so it
// keeps the batch); a COMMIT already queued before that is still read and
// honoured, so both sides reach the same verdict.
func (r *Receiver) giveUp(a Adopter) {
	r.l.c.CloseRead()
	if r.hookGaveUp != nil {
		r.hookGaveUp()
	}
	for len(r.pending) > 0 {
		f, err := r.l.recv(time.Now().Add(time.Second))
		if err != nil {
			return
		}
		closeFDs(f.fds) // a later batch, never acked
		if f.h.typ == msgCommit && f.h.seq == r.pending[0].seq {
			r.commit(a, f)
		}
	}
}

func (r *Receiver) cancel(a Adopter, b *inBatch) {
	b.to(inCancelled)
	for i := range b.items {
		if b.accepted[i] {
			if a != nil {
				a.Cancel(&b.items[i])
			}
			closeFDs(b.items[i].FDs)
			r.stats.Cancelled++
		}
	}
}

func (r *Receiver) cancelPending(a Adopter) {
	for _, b := range r.pending {
		r.cancel(a, b)
	}
	r.pending = nil
}

// fail cancels every uncommitted batch, tells the old process why (best
// effort) and closes the link.
func (r *Receiver) fail(a Adopter, phase string, err error) error {
	r.cancelPending(a)
	e := r.errf(phase, err)
	r.l.sendTextNow(msgFail, nil, e.Error())
	r.l.close()
	r.st = receiverFailed
	return e
}

// fdLimitInfo explains a truncation: the soft RLIMIT_NOFILE and how many
// fds are open.
func fdLimitInfo() string {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return "RLIMIT_NOFILE unknown"
	}
	return fmt.Sprintf("RLIMIT_NOFILE soft %d, %d fds open", lim.Cur, openFDs())
}

// openFDs counts this process's open descriptors, -1 if unknown.
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		ents, err = os.ReadDir("/dev/fd")
		if err != nil {
			return -1
		}
	}
	return len(ents) - 1 // the directory's own fd
}
