//go:build linux

package handoff

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The process tests re-run this test binary as the successor (or, for the
// tests where the sender dies, as the old process). TestMain sends such a
// child to childMain before any test runs.
const childEnv = "HANDOFF_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(childMain(mode))
	}
	os.Exit(m.Run())
}

// event is a line of JSON a child prints on stdout.
type event struct {
	Event   string
	Pid     int
	Gen     int
	Err     string               `json:",omitempty"`
	Recv    RecvStats            `json:",omitempty"`
	Send    SendStats            `json:",omitempty"`
	Targets map[string]int       `json:",omitempty"`
	Moved   map[uint64][2]uint64 `json:",omitempty"`
	FDs     int                  `json:",omitempty"`
}

func emit(ev event) {
	ev.Pid = os.Getpid()
	b, _ := json.Marshal(ev)
	os.Stdout.Write(append(b, '\n'))
}

// childMain is the successor. Modes: relay (adopt into a relay, then obey
// the ctl pipe: report, upgrade, exit), fail, exit3, hang; sender (the old
// process, dying mid-way). HANDOFF_TEST_DIE=before-ack:N|after-ack:N|
// after-commit:N makes the successor exit(7) at that point of batch N;
// HANDOFF_TEST_RLIMIT=K lowers its RLIMIT_NOFILE to (open fds + K).
func childMain(mode string) int {
	time.AfterFunc(3*time.Minute, func() { os.Exit(99) }) // never outlive a stuck test
	die, rlim := os.Getenv("HANDOFF_TEST_DIE"), os.Getenv("HANDOFF_TEST_RLIMIT")
	os.Unsetenv("HANDOFF_TEST_DIE")
	os.Unsetenv("HANDOFF_TEST_RLIMIT")
	gen, _ := strconv.Atoi(os.Getenv("HANDOFF_TEST_GEN"))
	switch mode {
	case "sender":
		return childSender(os.Getenv("HANDOFF_TEST_SENDER"))
	case "migrate":
		return childMigrate(os.Getenv("HANDOFF_TEST_MIGRATE"))
	}
	r, err := Inherited()
	if err != nil || r == nil {
		fmt.Fprintln(os.Stderr, "child: inherit:", r, err)
		return 10
	}
	if os.Getenv(EnvVar) != "" {
		fmt.Fprintln(os.Stderr, "child:", EnvVar, "still set")
		return 12
	}
	emit(event{Event: "started", Gen: gen})
	switch mode {
	case "fail":
		r.Fail(errors.New("listen 127.0.0.1:443: bind: address already in use"))
		return 1
	case "exit3":
		return 3
	case "hang":
		time.Sleep(time.Minute)
		return 0
	}
	rel, err := newRelay()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 11
	}
	if kind, n, ok := strings.Cut(die, ":"); ok {
		seq, _ := strconv.Atoi(n)
		at := func(s uint32) {
			if int(s) == seq {
				os.Exit(7)
			}
		}
		switch kind {
		case "before-ack":
			r.hookBeforeAck = at
		case "after-ack":
			r.hookAfterAck = at
		case "after-commit":
			r.hookAfterCommit = at
		}
	}
	if err := r.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 11
	}
	if rlim != "" {
		k, _ := strconv.Atoi(rlim)
		var lim unix.Rlimit
		unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
		lim.Cur = uint64(openFDs() + k)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintln(os.Stderr, "child: setrlimit:", err)
			return 11
		}
	}
	st, err := r.Receive(context.Background(), rel.adopter())
	ev := event{Event: "received", Gen: gen, Recv: st}
	var ae *AbortError
	if err == nil || errors.As(err, &ae) && ae.KeepServing {
		// (here wsgate sends MAINPID to systemd) then BYE
		if ferr := r.Finish(); ferr != nil && err == nil {
			err = ferr
		}
	}
	if err != nil {
		ev.Err = err.Error()
	}
	emit(ev)
	if ae != nil && !ae.KeepServing {
		rel.stop()
		return 0 // the upgrade was cancelled before anything moved
	}
	ctl := r.File("ctl")
	sc := bufio.NewScanner(ctl)
	for sc.Scan() {
		switch sc.Text() {
		case "report":
			emit(event{Event: "report", Gen: gen, Targets: openTargets(), Moved: rel.counters(), FDs: openFDs()})
		case "upgrade":
			emit(upgrade(rel, ctl, gen))
			if len(rel.ids()) == 0 {
				rel.stop()
				return 0 // the old process exits once it holds nothing
			}
		case "exit":
			rel.stop()
			return 0
		}
	}
	rel.stop()
	return 0
}

// upgrade hands every tunnel of rel to a new generation.
func upgrade(rel *relay, ctl *os.File, gen int) event {
	ev := event{Event: "upgraded", Gen: gen}
	ctx := context.Background()
	s, err := StartSuccessor(ctx, SuccessorConfig{
		Args:  []string{"-test.run=^$"},
		Env:   append(withoutVar(os.Environ(), "HANDOFF_TEST_GEN"), "HANDOFF_TEST_GEN="+strconv.Itoa(gen+1)),
		Files: []NamedFile{{Name: "ctl", File: ctl}},
	})
	if err != nil {
		ev.Err = err.Error()
		return ev
	}
	ids := rel.ids()
	slices.Sort(ids)
	ev.Send, err = s.Send(ctx, detachAll(rel, ids, 3), func(it *Item, err error) {
		if err != nil {
			rel.resume(it)
		}
	})
	if err == nil {
		err = s.Finish(ctx)
	}
	if err != nil {
		ev.Err = err.Error()
	}
	return ev
}

// detachAll yields the relay's tunnels, detaching them 32 at a time as
// they are pulled; every pipeEvery-th carries its pending bytes in a pipe.
// Tunnels detached but not yielded (Send stopped pulling) go back.
func detachAll(rel *relay, ids []uint64, pipeEvery int) func(func(*Item) bool) {
	withPipe := func(id uint64) bool { return pipeEvery > 0 && id%uint64(pipeEvery) == 0 }
	return func(yield func(*Item) bool) {
		for len(ids) > 0 {
			n := min(len(ids), 32)
			chunk := rel.detachMany(ids[:n], withPipe)
			ids = ids[n:]
			for i, it := range chunk {
				if !yield(it) {
					for _, back := range chunk[i+1:] {
						rel.resume(back)
					}
					return
				}
			}
		}
	}
}

// childSender is an old process that dies mid-way: "mid-frame" commits one
// batch, then writes half of the next one and exits; "after-ack" exits on
// reading the second ACK, before its COMMIT.
func childSender(how string) int {
	l, err := linkFromFD(3, "test-handoff")
	if err != nil {
		fmt.Fprintln(os.Stderr, "sender:", err)
		return 10
	}
	s := NewSender(l.c, Options{})
	var items []*Item
	for i := 0; i < 2*MaxBatchFDs; i++ {
		a, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		items = append(items, &Item{ID: uint64(i), Kind: KindTunnel, FDs: []int{a[0]}, State: []byte{byte(i)}})
	}
	ctx := context.Background()
	switch how {
	case "mid-frame":
		if _, err := s.Send(ctx, seqOf(items[:MaxBatchFDs]), nil); err != nil {
			fmt.Fprintln(os.Stderr, "sender:", err)
			return 11
		}
		payload, fds := batchPayload(items[MaxBatchFDs:])
		var h [headerLen]byte
		(&header{version: Version, typ: msgBatch, nfds: uint16(len(fds)), seq: 2, length: uint32(len(payload))}).put(h[:])
		l.c.WriteMsgUnix(append(h[:], payload[:len(payload)/2]...), unix.UnixRights(fds...), nil)
		os.Exit(0)
	case "after-ack":
		s.hookBeforeCommit = func(seq uint32) {
			if seq == 2 {
				os.Exit(0)
			}
		}
		s.Send(ctx, seqOf(items), nil)
	}
	return 12
}

// childProc is the parent's view of a relay-mode child family (successors
// of successors print to the same stdout pipe and read the same ctl pipe).
type childProc struct {
	t      *testing.T
	s      *Sender
	events chan event
	ctl    *os.File
}

func startChild(t *testing.T, mode string, env []string, o Options) (*Sender, *childProc, error) {
	t.Helper()
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartSuccessor(context.Background(), SuccessorConfig{
		Args:    []string{"-test.run=^$"},
		Env:     append(append(os.Environ(), childEnv+"="+mode, "HANDOFF_TEST_GEN=1"), env...),
		Files:   []NamedFile{{Name: "ctl", File: ctlR}},
		Stdout:  outW,
		Options: o,
	})
	ctlR.Close()
	outW.Close()
	cp := &childProc{t: t, s: s, events: make(chan event, 1000), ctl: ctlW}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(cp.events)
		sc := bufio.NewScanner(outR)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				fmt.Fprintf(os.Stderr, "child stdout: %s\n", sc.Bytes())
				continue
			}
			cp.events <- ev
		}
		outR.Close()
	}()
	t.Cleanup(func() {
		ctlW.Close() // children exit on EOF
		if s != nil {
			s.child.stop(10 * time.Second)
		}
		go func() {
			for range cp.events {
			}
		}()
		select {
		case <-readerDone: // every child generation has closed stdout
		case <-time.After(30 * time.Second):
			t.Error("child stdout still open 30s after the test")
		}
	})
	return s, cp, err
}

func (cp *childProc) expect(name string) event {
	cp.t.Helper()
	return cp.expectAll(name)[name]
}

// expectAll waits for one event of each name, in any order (the children
// of one family write to one pipe).
func (cp *childProc) expectAll(names ...string) map[string]event {
	cp.t.Helper()
	got := map[string]event{}
	for len(got) < len(names) {
		ev := cp.next(names)
		got[ev.Event] = ev
	}
	return got
}

func (cp *childProc) next(names []string) event {
	cp.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-cp.events:
			if !ok {
				cp.t.Fatalf("child output closed while waiting for %q", names)
			}
			if slices.Contains(names, ev.Event) {
				return ev
			}
			cp.t.Logf("child event %+v", ev)
		case <-timeout:
			cp.t.Fatalf("no %q event from the child", names)
		}
	}
}

func (cp *childProc) cmd(c string) {
	if _, err := cp.ctl.WriteString(c + "\n"); err != nil {
		cp.t.Fatal(err)
	}
}

// waitGone waits until pid has exited (reaping it if it became our child).
func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return // exited; its parent has not reaped it yet
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pid %d still running after %v", pid, d)
}

func socketTargets(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, n := range m {
		if strings.HasPrefix(k, "socket:") || strings.HasPrefix(k, "pipe:") {
			out[k] = n
		}
	}
	return out
}

type liveCfg struct {
	tunnels   int
	pending   bool // make sure tunnels leave with pending bytes (relay.waitPending)
	chunk     int
	pause     time.Duration
	pipeEvery int
	settle    time.Duration // traffic before and after the hand-off
}

// runLive moves cfg.tunnels live tunnels to a successor process while
// their endpoints keep writing, then checks every byte, the counters that
// travelled in the state, and who holds which fd.
func runLive(t *testing.T, cfg liveCfg) {
	checkNoLeak(t)
	rel, err := newRelay()
	if err != nil {
		t.Fatal(err)
	}
	rel.waitPending = cfg.pending
	ts := newTunnels(t, cfg.tunnels, rel)
	tr := newTraffic(t, ts.eps, cfg.chunk, cfg.pause)
	tr.startWriting()
	time.Sleep(cfg.settle)
	tr.waitRounds(2)
	txBefore := make([]uint64, len(ts.eps))
	for i, e := range ts.eps {
		txBefore[i] = e.tx.Load()
	}
	fdsBefore, pidfdsBefore := openFDs(), openTargets()["anon_inode:[pidfd]"]
	t0 := time.Now()
	s, cp, err := startChild(t, "relay", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tReady := time.Now()
	var fdCounts []int
	pendingInState, fds := 0, 0
	out := newOutcome()
	ids := make([]uint64, cfg.tunnels)
	for i := range ids {
		ids[i] = uint64(i)
	}
	items := detachAll(rel, ids, cfg.pipeEvery)
	var inDetach time.Duration
	st, err := s.Send(context.Background(), func(yield func(*Item) bool) {
		next, stop := iter.Pull(iter.Seq[*Item](items))
		defer stop()
		for {
			t := time.Now()
			it, ok := next()
			inDetach += time.Since(t)
			if !ok {
				return
			}
			fdCounts = append(fdCounts, len(it.FDs))
			fds += len(it.FDs)
			if rt, err := decodeTunnel(it); err == nil && len(rt.pend[0])+len(rt.pend[1]) > 0 {
				pendingInState++
			}
			if !yield(it) {
				return
			}
		}
	}, func(it *Item, err error) {
		out.done(it, err)
		if err != nil {
			rel.resume(it)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	tSent := time.Now()
	if err := s.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	tDone := time.Now()
	rv := cp.expect("received")
	var during uint64
	for i, e := range ts.eps {
		during += e.tx.Load() - txBefore[i]
	}
	time.Sleep(cfg.settle)
	tr.waitRounds(1)
	txAfterHandoff := make([]uint64, len(ts.eps))
	for i, e := range ts.eps {
		txAfterHandoff[i] = e.tx.Load()
	}
	time.Sleep(cfg.settle)
	tr.waitRounds(2)
	tr.stopWriting()
	tDelivered := time.Now()
	tr.waitDelivered(t, 90*time.Second)
	t.Logf("writes stopped -> all delivered in %v; %d write rounds", time.Since(tDelivered).Round(time.Millisecond), tr.rounds.Load())

	if rv.Err != "" || rv.Recv.Committed != cfg.tunnels || st.Transferred != cfg.tunnels || st.Kept != 0 {
		t.Fatalf("child: %+v; send stats %+v", rv, st)
	}
	el := tDone.Sub(tReady)
	t.Logf("%d tunnels (%d fds, %d pipe ends; %d with pending bytes in their state) moved in %d batches: start->READY %v, send %v, DONE->BYE %v; %.0f items/s, %.0f fds/s over Send+Finish; %d bytes written during the hand-off",
		cfg.tunnels, fds, fds-2*cfg.tunnels, pendingInState, st.Batches, tReady.Sub(t0).Round(time.Millisecond), tSent.Sub(tReady).Round(time.Millisecond),
		tDone.Sub(tSent).Round(time.Millisecond), float64(cfg.tunnels)/el.Seconds(), float64(fds)/el.Seconds(), during)
	t.Logf("of the send, %v went to detaching tunnels from the busy test relay: %.0f items/s without it",
		inDetach.Round(time.Millisecond), float64(cfg.tunnels)/(el-inDetach).Seconds())
	wantBatches, cur := 1, 0
	for _, n := range fdCounts {
		if cur+n > MaxBatchFDs {
			wantBatches++
			cur = 0
		}
		cur += n
	}
	if st.Batches != wantBatches || rv.Recv.Batches != wantBatches || st.FDs != fds || rv.Recv.FDs != fds || st.MaxInFlight > DefaultWindow {
		t.Fatalf("sent %d batches (%d fds, %d in flight), child got %d (%d fds); want %d batches of <= %d fds, %d fds",
			st.Batches, st.FDs, st.MaxInFlight, rv.Recv.Batches, rv.Recv.FDs, wantBatches, MaxBatchFDs, fds)
	}
	for i, e := range ts.eps {
		if txBefore[i] == 0 || e.tx.Load() <= txAfterHandoff[i] {
			t.Fatalf("endpoint %d wrote %d bytes before the hand-off and %d..%d after", i, txBefore[i], txAfterHandoff[i], e.tx.Load())
		}
	}
	if during == 0 {
		t.Fatal("no byte written during the hand-off")
	}
	if cfg.pending && (fds == 2*cfg.tunnels || pendingInState == 0) {
		t.Fatalf("no tunnel left with bytes in a pipe (%d fds) or in its state (%d)", fds, pendingInState)
	}

	// The counters moved with the state: the child's totals are the
	// endpoints' totals, bytes from both processes included.
	cp.cmd("report")
	rep := cp.expect("report")
	for id := uint64(0); id < uint64(cfg.tunnels); id++ {
		c, b := ts.eps[2*id], ts.eps[2*id+1]
		if m := rep.Moved[id]; m[0] != c.tx.Load() || m[1] != b.tx.Load() {
			t.Fatalf("tunnel %d: child counted %v, endpoints sent %d/%d", id, m, c.tx.Load(), b.tx.Load())
		}
	}
	// Ownership: every relayed socket is held once, by the child; the
	// child holds no other socket (its hand-off socket is closed) and no
	// pipe of ours.
	parent := openTargets()
	childSockets := 0
	for tg, n := range rep.Targets {
		if strings.HasPrefix(tg, "socket:") {
			childSockets += n
		}
	}
	for id, tg := range ts.targets {
		for _, x := range tg {
			if rep.Targets[x] != 1 || parent[x] != 0 {
				t.Fatalf("tunnel %d: %s held by %d fds in the child, %d in the parent", id, x, rep.Targets[x], parent[x])
			}
		}
	}
	if childSockets != 2*cfg.tunnels {
		t.Fatalf("child holds %d sockets, want %d", childSockets, 2*cfg.tunnels)
	}
	// /proc/self/fd counts: the parent let go of 2 fds per tunnel (it keeps
	// the test's two pipes to the child, and os/exec a pidfd for it); the
	// child holds 2 per tunnel on top of its runtime's few.
	pidfds := openTargets()["anon_inode:[pidfd]"] - pidfdsBefore
	if got, want := openFDs(), fdsBefore-2*cfg.tunnels+2+pidfds; got != want {
		t.Fatalf("parent holds %d fds, want %d (%d before the hand-off)", got, want, fdsBefore)
	}
	t.Logf("open fds: parent %d before, %d after; child %d (%d sockets)", fdsBefore, openFDs(), rep.FDs, childSockets)

	cp.cmd("exit")
	waitGone(t, s.PID(), 30*time.Second)
	tr.close()
	rel.stop()
}

// checkNoLeak compares this process's sockets and pipes at the end of the
// test (after every other cleanup) with now.
func checkNoLeak(t *testing.T) {
	start := socketTargets(openTargets())
	t.Cleanup(func() {
		if t.Failed() {
			return // a test that stopped half-way leaves its sockets
		}
		for k, n := range socketTargets(openTargets()) {
			if start[k] != n {
				t.Errorf("leaked %s (%d fds, %d at the start)", k, n, start[k])
			}
		}
	})
}

func TestSuccessorMovesLiveTunnels(t *testing.T) {
	runLive(t, liveCfg{tunnels: 40, pending: true, chunk: 4096, pause: time.Millisecond, pipeEvery: 3, settle: 300 * time.Millisecond})
}

func TestSuccessor2000Tunnels(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 tunnels: 8,000 loopback sockets")
	}
	runLive(t, liveCfg{tunnels: 2000, chunk: 64, pause: 5 * time.Millisecond, pipeEvery: 7, settle: 300 * time.Millisecond})
}
