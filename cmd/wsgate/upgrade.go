package main

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/wsgate/wsgate/handoff"
	"github.com/wsgate/wsgate/loop"
)

// The binary upgrade (SIGUSR2; docs/lifecycle.md, "SIGUSR2: binary upgrade").
//
// Old process                                  successor (os.Executable(), same command line)
//
//	StartSuccessor(lock)  ------ exec ------->   handoff.Inherited; flags; loop.Start with the
//	                                             inherited listen lock (binds beside us)
//	                      <----- READY ------    Ready
//	StopAccepting (queues move with
//	  tcp_migrate_req=1)
//	Send(PassItems) ----- batches ---------->    Receive: PrepareAdopt / CommitAdopt
//	Finish                <----- BYE --------    TakeOver (MAINPID=, READY=1), Finish
//	drain what was kept, quietly; exit 0         the service's main process
//
// If the successor cannot start or does not say READY, nothing changed: the old process never
// stopped accepting, and it says why. If it fails after READY (the hand-off breaks), the items
// not committed stay here and the listeners are opened again (Relisten).

// passWait bounds how long the old process waits for exchanges in flight to reach a request
// boundary so that their connections can be passed; past it they finish here and close with
// Connection: close (their clients reconnect, to the successor).
const passWait = 10 * time.Second

// upgradeError is a failed upgrade: what happened, and whether this process still serves.
type upgradeError struct {
	phase string
	err   error
}

func (e *upgradeError) Error() string { return e.phase + ": " + e.err.Error() }
func (e *upgradeError) Unwrap() error { return e.err }

// upgradeReport says how an upgrade went.
type upgradeReport struct {
	pid                 int // the successor's
	listeners, queued   int // listeners closed, connections accepted from their queues first
	sent                handoff.SendStats
	took, readyAfter    time.Duration
	keptConns, tunnels  int64 // still here afterwards
	fdsBefore, fdsAfter int   // this process's open fds before and after (/proc/self/fd)
}

// upgrade starts the successor and hands everything over. On success this process is no longer
// the service's main process: it serves what it kept, then exits (drainKept). On error it still
// serves; the error says why.
func (lc *lifecycle) upgrade() (upgradeReport, error) {
	var rep upgradeReport
	start := time.Now()
	rep.fdsBefore = openFDs()
	lock, err := lc.srv.ListenLock()
	if err != nil {
		return rep, &upgradeError{"listen lock", err}
	}
	defer lock.Close()
	ctx := context.Background()
	lc.log.Info("upgrade: starting the successor", "binary", executable(), "listen", lc.srv.Addr())
	files := []handoff.NamedFile{{Name: "lock", File: lock}}
	if lc.ctlLn != nil {
		if f, err := lc.ctlLn.File(); err == nil { // a dup: the successor answers `wsgate upgrade` next
			defer f.Close()
			files = append(files, handoff.NamedFile{Name: "control", File: f})
		}
	}
	if lc.adm != nil {
		if f, err := lc.adm.File(); err == nil { // the same admin socket: /readyz never stops answering
			defer f.Close()
			files = append(files, handoff.NamedFile{Name: "admin", File: f})
		}
	}
	if lc.redirect != nil {
		if f, err := lc.redirect.File(); err == nil { // -redirect-http: the successor cannot bind it beside us
			defer f.Close()
			files = append(files, handoff.NamedFile{Name: "redirect", File: f})
		}
	}
	s, err := handoff.StartSuccessor(ctx, handoff.SuccessorConfig{Files: files})
	if err != nil {
		return rep, &upgradeError{"starting the new binary", err}
	}
	rep.pid = s.PID()
	rep.readyAfter = time.Since(start)
	migrate, _ := handoff.TCPMigrateReq()
	// Queued connections move to the successor's listeners with tcp_migrate_req=1; without it
	// they would be reset, so we take them first and pass them on like any idle connection.
	rep.listeners, rep.queued, err = lc.srv.StopAccepting(!migrate)
	if err != nil {
		_ = s.Abort("the old process could not close its listeners: " + err.Error())
		lc.srv.Relisten() // whatever was closed opens again
		return rep, &upgradeError{"closing the listeners", err}
	}
	var nextID uint64
	items := func(yield func(*handoff.Item) bool) {
		for p := range lc.srv.PassItems(ctx, passWait) {
			nextID++
			if !yield(&handoff.Item{ID: nextID, Kind: handoffKind(p.Kind), FDs: p.FDs, State: p.State, Ref: p}) {
				return
			}
		}
	}
	var sendErr error
	rep.sent, sendErr = s.Send(ctx, iter.Seq[*handoff.Item](items), func(it *handoff.Item, err error) {
		lc.srv.PassDone(it.Ref.(*loop.Passed), err)
	})
	if err := s.Finish(ctx); err != nil {
		// The successor is gone or did not confirm: serve again. What it had committed is lost
		// with it; what was not committed was given back (PassDone) and is served here.
		rerr := lc.srv.Relisten()
		return rep, &upgradeError{"hand-off", fmt.Errorf("%v; finish: %w (listeners re-opened: %v)", sendErr, err, rerr == nil)}
	}
	if sendErr != nil {
		// The successor kept its listeners and what it committed, and took over (BYE); the rest
		// stays here and drains.
		lc.log.Warn("upgrade: the hand-off stopped early; the successor took over, the rest stays here", "err", sendErr)
	}
	st := lc.srv.Stats()
	rep.keptConns, rep.tunnels = st.Conns, st.Tunnels
	rep.took = time.Since(start)
	rep.fdsAfter = openFDs()
	return rep, nil
}

// openFDs counts this process's open fds (-1 if /proc is not there).
func openFDs() int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return -1
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return -1
	}
	return len(names) - 1 // the directory's own fd
}

// handoffKind maps the loop's kinds to the hand-off's.
func handoffKind(k loop.PassKind) handoff.Kind {
	switch k {
	case loop.PassIdleConn:
		return handoff.KindIdleConn
	case loop.PassTunnel:
		return handoff.KindTunnel
	}
	return 0
}

// adopter takes what the predecessor passes (the successor's side of Receive).
type adopter struct{ srv *loop.Server }

func (a adopter) Prepare(it *handoff.Item) error {
	var k loop.PassKind
	switch it.Kind {
	case handoff.KindIdleConn:
		k = loop.PassIdleConn
	case handoff.KindTunnel:
		k = loop.PassTunnel
	default:
		return fmt.Errorf("kind %v is not adopted by this binary", it.Kind)
	}
	ad, err := a.srv.PrepareAdopt(k, it.FDs, it.State)
	if err != nil {
		return err
	}
	it.Ref = ad
	return nil
}

func (a adopter) Commit(it *handoff.Item) { a.srv.CommitAdopt(it.Ref.(*loop.Adopted)) }

func (a adopter) Cancel(it *handoff.Item) {
	if ad, ok := it.Ref.(*loop.Adopted); ok {
		a.srv.CancelAdopt(ad)
	}
}

// takeOver is the successor's side, once it listens: READY to the predecessor, adopt what it
// passes, tell systemd we are the main process now, BYE. It returns false when the predecessor
// cancelled the upgrade before anything moved: then this process exits.
func (lc *lifecycle) takeOver(r *handoff.Receiver) bool {
	start := time.Now()
	if err := r.Ready(); err != nil {
		lc.log.Error("upgrade: cannot tell the predecessor we are ready; exiting (it keeps serving)", "err", err)
		return false
	}
	st, err := r.Receive(context.Background(), adopter{lc.srv})
	var ae *handoff.AbortError
	switch {
	case errors.As(err, &ae) && !ae.KeepServing:
		lc.log.Warn("upgrade: cancelled by the predecessor before anything moved; exiting", "reason", ae.Reason)
		return false
	case err != nil:
		lc.log.Warn("upgrade: the hand-off ended early; serving what we adopted", "err", err, "adopted", st.Committed)
	}
	status := fmt.Sprintf("upgraded from pid %d: %d connections and tunnels adopted; %s", r.ParentPID(), st.Committed, lc.status("serving"))
	if err := lc.notify.TakeOver(os.Getpid(), status); err != nil {
		lc.log.Warn("systemd notify", "socket", lc.notify.Addr(), "err", err)
	}
	if lc.setReady != nil {
		lc.setReady(true)
	}
	if err := r.Finish(); err != nil {
		lc.log.Warn("upgrade: finishing the hand-off", "err", err)
	}
	lc.log.Info("upgrade: took over", "predecessor", r.ParentPID(), "adopted", st.Committed, "rejected", st.Rejected,
		"batches", st.Batches, "fds_received", st.FDs, "took", time.Since(start).Round(time.Microsecond), "open_fds", openFDs())
	return true
}

// inheritedTCP is the predecessor's listening socket passed as name ("admin", "redirect") when
// this process (a successor) serves the same address, else nil: a changed address binds anew.
// Neither listener has SO_REUSEPORT, so binding it beside the predecessor would fail.
func inheritedTCP(r *handoff.Receiver, name, addr string, log *slog.Logger) net.Listener {
	f := r.File(name)
	if f == nil {
		return nil
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		log.Warn("upgrade: the predecessor's socket cannot be used; binding anew", "socket", name, "listen", addr, "err", err)
		return nil
	}
	want, err1 := net.ResolveTCPAddr("tcp", addr)
	got, ok := l.Addr().(*net.TCPAddr)
	if err1 != nil || !ok || !got.IP.Equal(want.IP) && !(got.IP.IsUnspecified() && want.IP == nil) || got.Port != want.Port {
		l.Close()
		log.Info("upgrade: the address changed; binding anew", "socket", name, "was", l.Addr().String(), "listen", addr)
		return nil
	}
	return l
}

func executable() string {
	p, err := os.Executable()
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return p
}
