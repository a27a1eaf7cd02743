//go:build linux

package handoff_test

import (
	"context"
	"errors"
	"log"
	"os"

	"github.com/wsgate/wsgate/handoff"
)

// The old process, on SIGUSR2 (tunnels and resume stand for the plane's
// Detach iterator and its re-attach).
func ExampleStartSuccessor() {
	var lock *os.File // the one-instance guard's lock fd
	var tunnels func(func(*handoff.Item) bool)
	resume := func(*handoff.Item) {}

	ctx := context.Background()
	s, err := handoff.StartSuccessor(ctx, handoff.SuccessorConfig{
		Files: []handoff.NamedFile{{Name: "lock", File: lock}},
	})
	if err != nil {
		log.Printf("upgrade failed, still serving: %v", err) // names the pid, its exit status or FAIL text
		return
	}
	// READY: the successor has bound its listeners. Stop accepting here.
	st, err := s.Send(ctx, tunnels, func(it *handoff.Item, err error) {
		if err != nil {
			resume(it) // still ours: its fds are untouched
		}
	})
	if ferr := s.Finish(ctx); ferr != nil {
		log.Printf("successor did not take over (%v, %v): re-open the listeners", err, ferr)
		return
	}
	log.Printf("handed over %d items in %d batches; %d kept", st.Transferred, st.Batches, st.Kept)
	// Serve what was kept, without notifying systemd, then exit.
}

// The new process, first thing in main.
func ExampleInherited() {
	var adopter handoff.Adopter // the plane's Prepare / Commit / Cancel

	r, err := handoff.Inherited()
	if err != nil {
		log.Fatal(err) // started as a successor but cannot talk to the predecessor
	}
	if r == nil {
		return // an ordinary start
	}
	lock := r.File("lock")
	_ = lock // hand it to the one-instance guard, then bind the listeners
	if err := r.Ready(); err != nil {
		log.Fatal(err)
	}
	st, err := r.Receive(context.Background(), adopter)
	var ae *handoff.AbortError
	if errors.As(err, &ae) && !ae.KeepServing {
		os.Exit(0) // the upgrade was cancelled before anything moved
	}
	// sdnotify.TakeOver(os.Getpid(), ...) here, then:
	if err := r.Finish(); err != nil {
		log.Print(err)
	}
	log.Printf("adopted %d items", st.Committed)
}
