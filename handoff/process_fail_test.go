//go:build linux

package handoff

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A successor that cannot take over is reaped and the reason reported; the
// old process holds nothing more than before.
func TestSuccessorStartFailures(t *testing.T) {
	cases := []struct {
		mode string
		o    Options
		want []string
		is   error
	}{
		{"fail", Options{}, []string{"address already in use", "exited: exit status 1"}, ErrPeerFail},
		{"exit3", Options{}, []string{"before READY", "exit status 3"}, io.EOF},
		{"hang", Options{ReadyTimeout: 500 * time.Millisecond}, []string{"after 500ms", "signal: killed"}, ErrTimeout},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			checkNoLeak(t)
			t0 := time.Now()
			s, _, err := startChild(t, c.mode, nil, c.o)
			if s != nil || !errors.Is(err, c.is) {
				t.Fatalf("sender %v, err %v", s, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "handoff: successor pid ") {
				t.Fatalf("error %q does not name the successor", err)
			}
			t.Logf("%v after %v", err, time.Since(t0).Round(time.Millisecond))
		})
	}
	t.Run("no-binary", func(t *testing.T) {
		checkNoLeak(t)
		_, err := StartSuccessor(context.Background(), SuccessorConfig{Path: "/nonexistent/wsgate"})
		if err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Fatal(err)
		}
	})
}

// Abort before Send cancels the upgrade: the successor exits by itself.
func TestAbortBeforeSend(t *testing.T) {
	checkNoLeak(t)
	s, cp, err := startChild(t, "relay", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Abort("operator cancelled"); err != nil {
		t.Fatal(err)
	}
	ev := cp.expect("received")
	if !strings.Contains(ev.Err, "upgrade cancelled by the old process: operator cancelled") {
		t.Fatalf("child says %q", ev.Err)
	}
	select {
	case <-s.child.exited:
		if s.child.err != nil {
			t.Fatalf("child: %v", s.child.err)
		}
	default:
		t.Fatal("Abort returned before the successor exited")
	}
}

// The successor's RLIMIT_NOFILE is too low for the second batch: the
// kernel drops fds (MSG_CTRUNC), the successor refuses the batch and
// closes what it got, the old process keeps every tunnel not committed and
// goes on serving it; both processes carry live traffic afterwards.
func TestSuccessorRlimitTruncates(t *testing.T) {
	checkNoLeak(t)
	rel, err := newRelay()
	if err != nil {
		t.Fatal(err)
	}
	defer rel.stop()
	ts := newTunnels(t, 400, rel)
	tr := newTraffic(t, ts.eps, 512, 2*time.Millisecond)
	defer tr.close()
	tr.startWriting()
	s, cp, err := startChild(t, "relay", []string{"HANDOFF_TEST_RLIMIT=300"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := newOutcome()
	ids := make([]uint64, 400)
	for i := range ids {
		ids[i] = uint64(i)
	}
	st, err := s.Send(context.Background(), detachAll(rel, ids, 0), func(it *Item, err error) {
		out.done(it, err)
		if err != nil {
			if err := rel.resume(it); err != nil {
				t.Error(err)
			}
		}
	})
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "RLIMIT_NOFILE soft") {
		t.Fatalf("err %v", err)
	}
	// The successor keeps serving and confirms it took over.
	if err := s.Finish(context.Background()); err != nil {
		t.Fatalf("finish after a partial hand-off: %v", err)
	}
	rv := cp.expect("received")
	t.Logf("sender: %v; stats %+v; successor: %s %+v", err, st, rv.Err, rv.Recv)
	if st.Transferred != 126 || rv.Recv.Committed != 126 || rv.Recv.Refused == 0 || !strings.Contains(rv.Err, "keep serving") {
		t.Fatalf("transferred %d, successor committed %d refused %d: %s", st.Transferred, rv.Recv.Committed, rv.Recv.Refused, rv.Err)
	}
	tr.waitRounds(2)
	tr.stopWriting()
	tr.waitDelivered(t, 60*time.Second)

	cp.cmd("report")
	rep := cp.expect("report")
	parent := openTargets()
	childSockets := 0
	for tg, n := range rep.Targets {
		if strings.HasPrefix(tg, "socket:") {
			childSockets += n
		}
	}
	if childSockets != 2*126 {
		t.Fatalf("successor holds %d sockets, want %d (the refused batch's fds must be closed)", childSockets, 2*126)
	}
	for id, tg := range ts.targets {
		inChild, inParent := 0, 1
		if out.transferred[id] {
			inChild, inParent = 1, 0
		}
		for _, x := range tg {
			if rep.Targets[x] != inChild || parent[x] != inParent {
				t.Fatalf("tunnel %d (transferred %v): %s in %d child fds, %d parent fds", id, out.transferred[id], x, rep.Targets[x], parent[x])
			}
		}
	}
	cp.cmd("exit")
	waitGone(t, s.PID(), 30*time.Second)
}

// The successor dies at each point of batch 2: before its ACK, after its
// ACK (before the COMMIT reaches it), after the COMMIT.
func TestSuccessorDies(t *testing.T) {
	cases := []struct {
		die         string
		transferred int
	}{
		{"before-ack:2", 126},
		{"after-ack:2", 126},
		{"after-commit:2", 252},
	}
	for _, c := range cases {
		t.Run(c.die, func(t *testing.T) {
			checkNoLeak(t)
			rel, err := newRelay()
			if err != nil {
				t.Fatal(err)
			}
			defer rel.stop()
			ts := newTunnels(t, 400, rel)
			// Window 1: batch 1 is committed before batch 2 is written, so
			// the death at batch 2 cannot race batch 1's COMMIT.
			s, _, err := startChild(t, "relay", []string{"HANDOFF_TEST_DIE=" + c.die}, Options{Window: 1})
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(c.die, "after-ack") {
				// Let the successor die before the COMMIT is written.
				s.hookBeforeCommit = func(seq uint32) {
					if seq == 2 {
						<-s.child.exited
					}
				}
			}
			out := newOutcome()
			ids := make([]uint64, 400)
			for i := range ids {
				ids[i] = uint64(i)
			}
			st, err := s.Send(context.Background(), detachAll(rel, ids, 5), func(it *Item, err error) {
				out.done(it, err)
				if err != nil {
					if err := rel.resume(it); err != nil {
						t.Error(err)
					}
				}
			})
			t.Logf("%v; %+v", err, st)
			if err == nil || !strings.Contains(err.Error(), "exit status 7") {
				t.Fatalf("err %v", err)
			}
			if ferr := s.Finish(context.Background()); ferr == nil {
				t.Fatal("Finish confirmed a dead successor")
			}
			if st.Transferred != c.transferred || len(out.transferred) != c.transferred || st.Kept != st.Items-c.transferred {
				t.Fatalf("stats %+v, %d transferred", st, len(out.transferred))
			}
			// The old process holds every kept tunnel once and no
			// transferred one, and the kept ones still carry bytes.
			parent := openTargets()
			var keptEps []*endpoint
			for id, tg := range ts.targets {
				want := 1
				if out.transferred[id] {
					want = 0
				} else {
					keptEps = append(keptEps, ts.eps[2*id], ts.eps[2*id+1])
				}
				for _, x := range tg {
					if parent[x] != want {
						t.Fatalf("tunnel %d: %s in %d fds, want %d", id, x, parent[x], want)
					}
				}
			}
			tr := newTraffic(t, keptEps, 1000, time.Millisecond)
			tr.startWriting()
			tr.waitRounds(3)
			tr.stopWriting()
			tr.waitDelivered(t, 30*time.Second)
			tr.close()
			for id := range ts.targets {
				if out.transferred[id] {
					unix.Close(ts.eps[2*id].fd)
					unix.Close(ts.eps[2*id+1].fd)
				}
			}
		})
	}
}

// The old process dies mid-way; the successor keeps what was committed
// and closes everything else it received.
func TestSenderDies(t *testing.T) {
	cases := []struct {
		how       string
		is        error
		cancelled int
	}{
		{"mid-frame", io.ErrUnexpectedEOF, 0},
		{"after-ack", io.EOF, MaxBatchFDs},
	}
	for _, c := range cases {
		t.Run(c.how, func(t *testing.T) {
			checkNoLeak(t)
			p, err := socketpair()
			if err != nil {
				t.Fatal(err)
			}
			theirs := os.NewFile(uintptr(p[1]), "sender-end")
			l, err := linkFromFD(p[0], "receiver-end")
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=sender", "HANDOFF_TEST_SENDER="+c.how)
			cmd.ExtraFiles = []*os.File{theirs}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			theirs.Close()
			before := openTargets()
			r := NewReceiver(l.c, Options{})
			a := newRecAdopter()
			st, err := r.Receive(context.Background(), a)
			cmd.Wait()
			t.Logf("%v; %+v", err, st)
			if !errors.Is(err, c.is) || st.Committed != MaxBatchFDs || st.Cancelled != c.cancelled || len(a.committed) != MaxBatchFDs {
				t.Fatalf("err %v, stats %+v", err, st)
			}
			// New sockets here: exactly the committed items' fds, once each.
			now := openTargets()
			held := map[string]bool{}
			for _, it := range a.committed {
				held[fdTarget(it.FDs[0])] = true
			}
			for tg, n := range socketTargets(now) {
				if before[tg] == 0 && (!held[tg] || n != 1) {
					t.Fatalf("%s: %d fds, committed %v", tg, n, held[tg])
				}
			}
			if len(held) != MaxBatchFDs {
				t.Fatalf("%d distinct committed sockets", len(held))
			}
			a.closeAll()
		})
	}
}

// Three upgrades in a row under traffic: each generation hands every
// tunnel to the next and exits; the counters in the state survive all
// three hops and no byte is lost, repeated or reordered.
func TestSuccessorRepeatedUpgrades(t *testing.T) {
	checkNoLeak(t)
	// Orphaned generations become our children, so we can reap them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	const n = 200
	rel, err := newRelay()
	if err != nil {
		t.Fatal(err)
	}
	ts := newTunnels(t, n, rel)
	tr := newTraffic(t, ts.eps, 1024, 2*time.Millisecond)
	tr.startWriting()
	tr.waitRounds(2)
	s, cp, err := startChild(t, "relay", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(i)
	}
	if st, err := s.Send(context.Background(), detachAll(rel, ids, 4), func(it *Item, err error) {
		if err != nil {
			t.Errorf("item %d kept: %v", it.ID, err)
		}
	}); err != nil || st.Transferred != n {
		t.Fatal(err, st)
	}
	if err := s.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	rel.stop()
	if ev := cp.expect("received"); ev.Err != "" || ev.Recv.Committed != n {
		t.Fatalf("generation 1: %+v", ev)
	}
	last := s.PID()
	for gen := 1; gen <= 3; gen++ {
		tr.waitRounds(2)
		if gen == 3 {
			break
		}
		cp.cmd("upgrade")
		evs := cp.expectAll("upgraded", "received")
		up, next := evs["upgraded"], evs["received"]
		if up.Err != "" || up.Send.Transferred != n || up.Gen != gen {
			t.Fatalf("upgrade from generation %d: %+v", gen, up)
		}
		if next.Err != "" || next.Recv.Committed != n || next.Gen != gen+1 {
			t.Fatalf("generation %d: %+v", gen+1, next)
		}
		if gen == 1 {
			<-s.child.exited
		} else {
			waitGone(t, last, 30*time.Second)
		}
		t.Logf("generation %d (pid %d) -> %d (pid %d): %d batches, gone", gen, up.Pid, gen+1, next.Pid, up.Send.Batches)
		last = next.Pid
	}
	tr.stopWriting()
	tr.waitDelivered(t, 60*time.Second)
	cp.cmd("report")
	rep := cp.expect("report")
	if rep.Pid != last {
		t.Fatalf("report from pid %d, want %d", rep.Pid, last)
	}
	for id := uint64(0); id < n; id++ {
		c, b := ts.eps[2*id], ts.eps[2*id+1]
		if m := rep.Moved[id]; m[0] != c.tx.Load() || m[1] != b.tx.Load() {
			t.Fatalf("tunnel %d: counted %v, sent %d/%d", id, m, c.tx.Load(), b.tx.Load())
		}
		for _, x := range ts.targets[id] {
			if rep.Targets[x] != 1 {
				t.Fatalf("tunnel %d: %s held %d times by the last generation", id, x, rep.Targets[x])
			}
		}
	}
	cp.cmd("exit")
	waitGone(t, last, 30*time.Second)
	tr.close()
}

// exec.Cmd puts extra files in blocking mode, and O_NONBLOCK belongs to the open file
// description that the caller's own copy shares: a listener the old process still serves from
// Go's netpoller would then block in accept. StartSuccessor puts it back.
func TestStartSuccessorKeepsCallersFilesNonblocking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nonblock := func() bool {
		rc, _ := ln.(*net.TCPListener).SyscallConn()
		var fl int
		rc.Control(func(fd uintptr) { fl, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
		return fl&unix.O_NONBLOCK != 0
	}
	if !nonblock() {
		t.Fatal("the listener is blocking before the test")
	}
	_, err = StartSuccessor(context.Background(), SuccessorConfig{
		Args:  []string{"-test.run=^$"},
		Env:   append(os.Environ(), childEnv+"=exit3"),
		Files: []NamedFile{{Name: "listener", File: f}},
	})
	if err == nil {
		t.Fatal("the exit3 child said READY")
	}
	if !nonblock() {
		t.Fatal("StartSuccessor left the caller's listener in blocking mode")
	}
}
