// Package handoff moves established sockets and their state from a running
// wsgate process to its successor (a binary upgrade that keeps every open
// tunnel), over a unix stream socket with SCM_RIGHTS.
//
// The successor protocol (docs/lifecycle.md has the timeline):
//
//	old: s, err := handoff.StartSuccessor(ctx, cfg)   // exec self; waits for READY
//	new: r, err := handoff.Inherited()                // nil, nil when not a successor
//	new: bind listeners; r.Ready()                    // or r.Fail(err) and exit
//	old: stop accepting; s.Send(ctx, items, done)     // BATCH -> ACK -> COMMIT, per batch
//	new: r.Receive(ctx, adopter)                      // Prepare / Commit / Cancel
//	old: s.Finish(ctx)                                // DONE -> (new: MAINPID to systemd) BYE
//	new: r.Finish()
//	old: exits once it holds nothing
//
// If Send fails part-way (the successor refused a batch, timed out...), the
// old process keeps what was not committed and the successor, told to keep
// serving, still takes over and says BYE: the old process calls Finish in
// that case too, and re-opens its listeners only if Finish fails.
//
// Ownership: an item is the sender's until the COMMIT of its batch is
// written; then the sender closes its copies and the receiver's Adopter
// starts serving it. Nothing is served before the COMMIT, so whichever side
// gives up (timeout, death, truncated fds, malformed batch, rejected
// item), every item ends with exactly one owner: the sender keeps all it
// did not commit, the receiver closes all it did not get a COMMIT for.
// See state.go for the two state machines and frame.go for the wire format.
//
// Batches carry at most 253 fds (SCM_MAX_FD) and 1 MiB; at most Window
// batches are unacknowledged. Every read and write has a deadline.
package handoff
