package handoff

import "fmt"

// The ownership contract, one state machine per batch on each side.
//
// Sender (old process); the items of a batch are the sender's until the
// batch is committed:
//
//	outOpen ──write BATCH──▶ outSent ──read ACK──▶ outAcked ──write COMMIT──▶ outCommitted
//	   │                        │                      │                       (sender closes its copies;
//	   └────────────────────────┴──────────────────────┴──▶ outKept             accepted items are the receiver's)
//	     (write failed, NACK, FAIL, EOF, timeout, ctx, COMMIT write failed: every item stays with the sender)
//
// Items the receiver rejected in its ACK are kept even when the batch commits.
//
// Receiver (new process); nothing is served before the COMMIT, so a sender
// that gives up (timeout, ctx) can never leave an item with two owners:
//
//	inReceived ──Prepare each, write ACK──▶ inAcked ──read COMMIT──▶ inCommitted (Adopter.Commit: the adopter's)
//	   │                                     │
//	   ├──▶ inRefused  (fds truncated or payload malformed: NACK, every fd closed)
//	   └─────────────────────────────────────┴──▶ inCancelled (ABORT, FAIL, EOF, timeout, ctx, ACK write
//	                                                failed: Adopter.Cancel, every fd closed)
//
// Receiver timeout while acked: it shuts its socket down for reading first
// (the sender's next write fails with EPIPE and the sender keeps the batch),
// then reads what was already queued: a COMMIT that made it in before the
// shutdown is honoured, so both sides always reach the same verdict.
type outState uint8

const (
	outOpen outState = iota
	outSent
	outAcked
	outCommitted
	outKept
)

var outNames = [...]string{"open", "sent", "acked", "committed", "kept"}

func (s outState) String() string { return outNames[s] }

// outLegal is the sender's transition table.
func outLegal(from, to outState) bool {
	switch from {
	case outOpen:
		return to == outSent || to == outKept
	case outSent:
		return to == outAcked || to == outKept
	case outAcked:
		return to == outCommitted || to == outKept
	}
	return false // committed and kept are final
}

type inState uint8

const (
	inReceived inState = iota
	inAcked
	inCommitted
	inRefused
	inCancelled
)

var inNames = [...]string{"received", "acked", "committed", "refused", "cancelled"}

func (s inState) String() string { return inNames[s] }

// inLegal is the receiver's transition table.
func inLegal(from, to inState) bool {
	switch from {
	case inReceived:
		return to == inAcked || to == inRefused || to == inCancelled
	case inAcked:
		return to == inCommitted || to == inCancelled
	}
	return false
}

// outBatch is a batch on the sender's side.
type outBatch struct {
	seq     uint32
	state   outState
	items   []*Item
	fds     int
	bytes   int
	rejects []reject // from the ACK
}

func (b *outBatch) to(s outState) {
	if !outLegal(b.state, s) {
		panic(fmt.Sprintf("handoff: sender batch %d: illegal transition %v -> %v", b.seq, b.state, s))
	}
	b.state = s
}

// inBatch is a batch on the receiver's side.
type inBatch struct {
	seq      uint32
	state    inState
	items    []Item
	accepted []bool // Prepare succeeded
}

func (b *inBatch) to(s inState) {
	if !inLegal(b.state, s) {
		panic(fmt.Sprintf("handoff: receiver batch %d: illegal transition %v -> %v", b.seq, b.state, s))
	}
	b.state = s
}
