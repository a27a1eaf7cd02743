//go:build linux

package handoff

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type pairResult struct {
	ss         SendStats
	sendErr    error
	finishErr  error
	rs         RecvStats
	recvErr    error
	rFinishErr error
	out        *outcome
}

// transfer runs a Sender and a Receiver in this process over a socketpair.
func transfer(t *testing.T, o Options, items []*Item, a Adopter, setup func(s *Sender, r *Receiver)) pairResult {
	t.Helper()
	sc, rc := unixPair(t)
	s, r := NewSender(sc, o), NewReceiver(rc, o)
	if setup != nil {
		setup(s, r)
	}
	res := pairResult{out: newOutcome()}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		res.rs, res.recvErr = r.Receive(context.Background(), a)
		if res.recvErr == nil {
			res.rFinishErr = r.Finish()
		} else {
			r.Close()
		}
	}()
	res.ss, res.sendErr = s.Send(context.Background(), seqOf(items), res.out.done)
	if res.sendErr == nil {
		res.finishErr = s.Finish(context.Background())
	}
	<-recvDone
	return res
}

func TestRoundTrip(t *testing.T) {
	base := len(openTargets())
	items, peers := sockItems(t, 600, 5)
	defer closeFDs(peers)
	before := targetsOf(items)
	a := newRecAdopter()
	var maxFly int
	res := transfer(t, Options{}, items, a, func(s *Sender, r *Receiver) {
		s.hookSent = func(seq uint32, n int) { maxFly = max(maxFly, n) }
	})
	if res.sendErr != nil || res.finishErr != nil || res.recvErr != nil || res.rFinishErr != nil {
		t.Fatalf("send %v finish %v recv %v bye %v", res.sendErr, res.finishErr, res.recvErr, res.rFinishErr)
	}
	if len(res.out.transferred) != len(items) || res.out.calls != len(items) || res.ss.Transferred != len(items) || res.rs.Committed != len(items) {
		t.Fatalf("transferred %d calls %d stats %+v %+v", len(res.out.transferred), res.out.calls, res.ss, res.rs)
	}
	// Packing: greedy, at most 253 fds per batch.
	fds, batches, cur := 0, 1, 0
	for _, it := range items {
		fds += len(it.FDs)
		if cur+len(it.FDs) > MaxBatchFDs {
			batches++
			cur = 0
		}
		cur += len(it.FDs)
	}
	if res.ss.Batches != batches || res.rs.Batches != batches || res.ss.FDs != fds || res.rs.FDs != fds {
		t.Fatalf("batches %d/%d fds %d/%d, want %d batches %d fds", res.ss.Batches, res.rs.Batches, res.ss.FDs, res.rs.FDs, batches, fds)
	}
	if maxFly != DefaultWindow || res.ss.MaxInFlight != DefaultWindow {
		t.Fatalf("max in flight %d/%d, want %d", maxFly, res.ss.MaxInFlight, DefaultWindow)
	}
	for i, it := range items {
		got, ok := a.committed[it.ID]
		if !ok {
			t.Fatalf("item %d not committed", it.ID)
		}
		if got.Kind != it.Kind || !bytes.Equal(got.State, it.State) || len(got.FDs) != len(it.FDs) {
			t.Fatalf("item %d arrived as %+v", it.ID, got)
		}
		for j, fd := range got.FDs {
			if fdTarget(fd) != before[i][j] {
				t.Fatalf("item %d fd %d is %q, sent %q", it.ID, j, fdTarget(fd), before[i][j])
			}
		}
		if a.order[i] != it.ID {
			t.Fatalf("commit order: %d at %d", a.order[i], i)
		}
	}
	checkOwnership(t, items, before, res.out)
	a.closeAll()
	closeItems(items, res.out)
	closeFDs(peers)
	peers = nil
	if n := len(openTargets()); n > base+2 {
		t.Fatalf("fds: %d before, %d after", base, n)
	}
}

func TestRejectedItemsStayWithSender(t *testing.T) {
	items, peers := sockItems(t, 300, 0)
	defer closeFDs(peers)
	before := targetsOf(items)
	a := newRecAdopter()
	a.reject = func(it *Item) error {
		if it.ID%7 == 0 {
			return errors.New("state version 9 unknown")
		}
		return nil
	}
	res := transfer(t, Options{}, items, a, nil)
	if res.sendErr != nil || res.finishErr != nil || res.recvErr != nil {
		t.Fatal(res.sendErr, res.finishErr, res.recvErr)
	}
	for _, it := range items {
		err, kept := res.out.kept[it.ID]
		if want := it.ID%7 == 0; kept != want {
			t.Fatalf("item %d kept=%v", it.ID, kept)
		}
		if kept && (!errors.Is(err, ErrRejected) || !bytes.Contains([]byte(err.Error()), []byte("state version 9 unknown"))) {
			t.Fatalf("item %d: %v", it.ID, err)
		}
	}
	if res.rs.Rejected != res.ss.Kept || res.ss.Kept == 0 {
		t.Fatalf("rejected %d kept %d", res.rs.Rejected, res.ss.Kept)
	}
	checkOwnership(t, items, before, res.out)
	a.closeAll()
	closeItems(items, res.out)
}

func TestBadItemsKeptOthersSent(t *testing.T) {
	items, peers := sockItems(t, 5, 0)
	defer closeFDs(peers)
	bad := []*Item{
		{ID: 1, Kind: 0, FDs: []int{items[0].FDs[0]}},
		{ID: 2, Kind: KindTunnel},
		{ID: 3, Kind: KindTunnel, FDs: []int{items[1].FDs[0], items[1].FDs[0]}},
		{ID: 4, Kind: KindTunnel, FDs: []int{items[2].FDs[0]}}, // same fd as an item already in the batch
		{ID: 5, Kind: KindTunnel, FDs: []int{3}, State: make([]byte, MaxStateLen+1)},
	}
	all := append(append([]*Item{}, items...), bad...)
	a := newRecAdopter()
	res := transfer(t, Options{}, all, a, nil)
	if res.sendErr != nil || res.finishErr != nil {
		t.Fatal(res.sendErr, res.finishErr)
	}
	for _, it := range bad {
		if err := res.out.kept[it.ID]; !errors.Is(err, ErrRejected) {
			t.Fatalf("bad item %d: %v", it.ID, err)
		}
	}
	if len(res.out.transferred) != len(items) {
		t.Fatalf("transferred %d", len(res.out.transferred))
	}
	a.closeAll()
}

// fakePeer is a raw link for scripting one side of the protocol.
type fakePeer struct {
	t *testing.T
	l *link
}

func (p *fakePeer) recv() inFrame {
	p.t.Helper()
	f, err := p.l.recv(time.Now().Add(5 * time.Second))
	if err != nil {
		p.t.Fatalf("fake peer recv: %v", err)
	}
	f.payload = append([]byte(nil), f.payload...) // outlive the next recv
	return f
}

func (p *fakePeer) send(typ msgType, seq uint32, payload []byte, fds []int) error {
	b := append(p.l.frame(), payload...)
	return p.l.send(b, typ, seq, fds, time.Now().Add(5*time.Second))
}

func (p *fakePeer) ack(seq uint32) {
	p.t.Helper()
	if err := p.send(msgAck, seq, appendAck(nil, nil), nil); err != nil {
		p.t.Fatal(err)
	}
}

// senderVsFake runs a real Sender against a scripted receiver.
func senderVsFake(t *testing.T, o Options, items []*Item, script func(p *fakePeer), setup func(s *Sender)) (SendStats, error, *outcome) {
	t.Helper()
	sc, rc := unixPair(t)
	s := NewSender(sc, o)
	if setup != nil {
		setup(s)
	}
	p := &fakePeer{t: t, l: newLink(rc)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer p.l.close()
		script(p)
	}()
	out := newOutcome()
	st, err := s.Send(context.Background(), seqOf(items), out.done)
	<-done
	return st, err, out
}

func expectKeptAll(t *testing.T, items []*Item, before [][]string, out *outcome, is error) {
	t.Helper()
	for _, it := range items {
		if out.transferred[it.ID] {
			t.Fatalf("item %d transferred", it.ID)
		}
		if err, ok := out.kept[it.ID]; ok && is != nil && !errors.Is(err, is) {
			t.Fatalf("item %d kept with %v, want %v", it.ID, err, is)
		}
	}
	checkOwnership(t, items, before, out)
}

func TestSenderAckTimeoutKeeps(t *testing.T) {
	items, peers := sockItems(t, 10, 0)
	defer closeFDs(peers)
	before := targetsOf(items)
	var abort inFrame
	st, err, out := senderVsFake(t, Options{AckTimeout: 200 * time.Millisecond}, items, func(p *fakePeer) {
		f := p.recv()
		closeFDs(f.fds) // the receiver "dies" without acking: its copies go
		abort = p.recv()
	}, nil)
	if !errors.Is(err, ErrTimeout) || out.calls != 10 || st.Kept != 10 {
		t.Fatalf("err %v calls %d stats %+v", err, out.calls, st)
	}
	if abort.h.typ != msgAbort || abort.payload[0] != abortKeepServing {
		t.Fatalf("after a timeout the sender sent %v %q", abort.h.typ, abort.payload)
	}
	expectKeptAll(t, items, before, out, ErrTimeout)
	closeItems(items, out)
}

func TestSenderPeerGoneBeforeAckKeeps(t *testing.T) {
	items, peers := sockItems(t, 200, 0) // two batches in flight
	defer closeFDs(peers)
	before := targetsOf(items)
	_, err, out := senderVsFake(t, Options{}, items, func(p *fakePeer) {
		f := p.recv()
		closeFDs(f.fds)
	}, nil)
	if !errors.Is(err, io.EOF) && !isPeerGone(err) {
		t.Fatalf("err %v", err)
	}
	expectKeptAll(t, items, before, out, nil)
	closeItems(items, out)
}

// The receiver acks and is gone before the COMMIT: the write fails and the
// sender keeps the batch.
func TestSenderCommitFailsKeeps(t *testing.T) {
	items, peers := sockItems(t, 10, 0)
	defer closeFDs(peers)
	before := targetsOf(items)
	gone := make(chan struct{})
	_, err, out := senderVsFake(t, Options{}, items, func(p *fakePeer) {
		f := p.recv()
		closeFDs(f.fds)
		p.ack(f.h.seq)
		p.l.close()
		close(gone)
	}, func(s *Sender) {
		s.hookBeforeCommit = func(uint32) { <-gone }
	})
	if !isPeerGone(err) || !bytes.Contains([]byte(err.Error()), []byte("commit of batch 1")) {
		t.Fatalf("err %v", err)
	}
	expectKeptAll(t, items, before, out, nil)
	closeItems(items, out)
}

// A NACK (the receiver hit RLIMIT_NOFILE) keeps that batch and the one in
// flight behind it, and stops pulling items.
func TestSenderNackStopsPulling(t *testing.T) {
	items, peers := sockItems(t, 1000, 0)
	defer closeFDs(peers)
	before := targetsOf(items)
	var abort inFrame
	st, err, out := senderVsFake(t, Options{}, items, func(p *fakePeer) {
		f1 := p.recv()
		closeFDs(f1.fds)
		f2 := p.recv()
		closeFDs(f2.fds)
		p.send(msgNack, f1.h.seq, append([]byte{nackTruncated}, "only 40 of 252 fds arrived"...), nil)
		abort = p.recv()
	}, nil)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("err %v", err)
	}
	if st.Items != 3*126+1 || out.calls != st.Items || st.Batches != 2 {
		// Two batches in flight, the third filled and waiting for the
		// window, and the item that did not fit the third.
		t.Fatalf("pulled %d items, %d done calls, %d batches", st.Items, out.calls, st.Batches)
	}
	if abort.h.typ != msgAbort {
		t.Fatalf("got %v", abort.h.typ)
	}
	expectKeptAll(t, items, before, out, ErrTruncated)
	closeItems(items, out)
}

func TestSenderWindow(t *testing.T) {
	items, peers := sockItems(t, 126*5, 0)
	defer closeFDs(peers)
	res := make(chan string, 1)
	_, err, out := senderVsFake(t, Options{Window: 2}, items, func(p *fakePeer) {
		var got []inFrame
		for i := 0; i < 2; i++ {
			got = append(got, p.recv())
		}
		// A third batch must not come before the first ACK.
		if _, err := p.l.recv(time.Now().Add(300 * time.Millisecond)); !errors.Is(err, ErrTimeout) && !isTimeout(err) {
			res <- fmt.Sprintf("third batch before an ack: %v", err)
			return
		}
		for seq := uint32(1); seq <= 5; seq++ {
			p.ack(seq)
			if c := p.recv(); c.h.typ != msgCommit || c.h.seq != seq {
				res <- fmt.Sprintf("want COMMIT %d, got %v %d", seq, c.h.typ, c.h.seq)
				return
			}
			if seq <= 3 {
				got = append(got, p.recv())
			}
		}
		for _, f := range got {
			closeFDs(f.fds) // stand-in receiver: drop its copies
		}
		res <- ""
	}, nil)
	if msg := <-res; msg != "" {
		t.Fatal(msg)
	}
	if err != nil || len(out.transferred) != len(items) {
		t.Fatalf("err %v transferred %d", err, len(out.transferred))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestSenderCtxCancel(t *testing.T) {
	items, peers := sockItems(t, 10, 0)
	defer closeFDs(peers)
	before := targetsOf(items)
	sc, rc := unixPair(t)
	defer rc.Close()
	s := NewSender(sc, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	out := newOutcome()
	_, err := s.Send(ctx, seqOf(items), out.done)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	// The batch sits unread in rc; drain it so its fds are counted.
	f, err := newLink(rc).recv(time.Now().Add(time.Second))
	if err != nil || f.h.typ != msgBatch {
		t.Fatal(err)
	}
	closeFDs(f.fds)
	expectKeptAll(t, items, before, out, context.Canceled)
	closeItems(items, out)
}

func TestSenderWrongVersion(t *testing.T) {
	items, peers := sockItems(t, 3, 0)
	defer closeFDs(peers)
	before := targetsOf(items)
	_, err, out := senderVsFake(t, Options{}, items, func(p *fakePeer) {
		f := p.recv()
		closeFDs(f.fds)
		var h [headerLen]byte
		(&header{version: 2, typ: msgAck, seq: 1, length: 4}).put(h[:])
		p.l.c.Write(append(h[:], 0, 0, 0, 0))
		p.recv() // ABORT
	}, nil)
	if !errors.Is(err, ErrVersion) || !bytes.Contains([]byte(err.Error()), []byte("version 2")) {
		t.Fatalf("err %v", err)
	}
	expectKeptAll(t, items, before, out, ErrVersion)
	closeItems(items, out)
}

// receiverVsFake runs a real Receiver against a scripted sender.
func receiverVsFake(t *testing.T, o Options, a Adopter, script func(p *fakePeer), setup func(r *Receiver)) (RecvStats, error) {
	t.Helper()
	sc, rc := unixPair(t)
	r := NewReceiver(rc, o)
	if setup != nil {
		setup(r)
	}
	p := &fakePeer{t: t, l: newLink(sc)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer p.l.close()
		script(p)
	}()
	st, err := r.Receive(context.Background(), a)
	r.Close()
	<-done
	return st, err
}

func batchPayload(items []*Item) ([]byte, []int) {
	p := binary.BigEndian.AppendUint16(nil, uint16(len(items)))
	p = binary.BigEndian.AppendUint16(p, 0)
	var fds []int
	for _, it := range items {
		p = appendItem(p, it)
		fds = append(fds, it.FDs...)
	}
	return p, fds
}

// A batch that announces more fds than arrive is refused whole (NACK
// "truncated") and every fd that did arrive is closed.
func TestReceiverTruncatedFDs(t *testing.T) {
	items, peers := sockItems(t, 2, 0)
	defer closeFDs(peers)
	defer closeItems(items, newOutcome())
	before := openTargets()
	a := newRecAdopter()
	var nack inFrame
	_, err := receiverVsFake(t, Options{}, a, func(p *fakePeer) {
		payload, fds := batchPayload(items)
		var h [headerLen]byte
		(&header{version: Version, typ: msgBatch, nfds: uint16(len(fds)), seq: 1, length: uint32(len(payload))}).put(h[:])
		// Announce 4 fds, attach 3.
		if _, _, err := p.l.c.WriteMsgUnix(append(h[:], payload...), unix.UnixRights(fds[:3]...), nil); err != nil {
			t.Error(err)
		}
		nack = p.recv()
		p.send(msgAbort, 0, append([]byte{abortKeepServing}, "batch 1 refused"...), nil)
	}, nil)
	var ae *AbortError
	if !errors.As(err, &ae) || !ae.KeepServing {
		t.Fatalf("err %v", err)
	}
	if nack.h.typ != msgNack || nack.h.seq != 1 || nack.payload[0] != nackTruncated || !bytes.Contains(nack.payload, []byte("3 of 4 fds arrived")) {
		t.Fatalf("got %v %d %q", nack.h.typ, nack.h.seq, nack.payload)
	}
	if len(a.prepared) != 0 {
		t.Fatalf("prepared %v", a.prepared)
	}
	assertSameTargets(t, before, openTargets())
}

func assertSameTargets(t *testing.T, before, after map[string]int) {
	t.Helper()
	for k, n := range after {
		if before[k] != n && (bytes.HasPrefix([]byte(k), []byte("socket:")) || bytes.HasPrefix([]byte(k), []byte("pipe:"))) {
			t.Errorf("%s: %d fds before, %d after", k, before[k], n)
		}
	}
}

func TestReceiverMalformedBatch(t *testing.T) {
	items, peers := sockItems(t, 2, 0)
	defer closeFDs(peers)
	defer closeItems(items, newOutcome())
	before := openTargets()
	a := newRecAdopter()
	var nack, nack2 inFrame
	_, err := receiverVsFake(t, Options{}, a, func(p *fakePeer) {
		payload, fds := batchPayload(items)
		payload[batchHeadLen+8] = 0 // kind 0
		p.send(msgBatch, 1, payload, fds)
		nack = p.recv()
		// Anything after a refusal is refused too.
		payload[batchHeadLen+8] = byte(KindTunnel)
		p.send(msgBatch, 2, payload, fds)
		nack2 = p.recv()
		p.send(msgAbort, 0, []byte{abortKeepServing}, nil)
	}, nil)
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("err %v", err)
	}
	if nack.payload[0] != nackMalformed || !bytes.Contains(nack.payload, []byte("kind 0")) || nack2.payload[0] != nackRefusing {
		t.Fatalf("nacks %q %q", nack.payload, nack2.payload)
	}
	assertSameTargets(t, before, openTargets())
}

func TestReceiverWrongVersion(t *testing.T) {
	items, peers := sockItems(t, 1, 0)
	defer closeFDs(peers)
	defer closeItems(items, newOutcome())
	before := openTargets()
	_, err := receiverVsFake(t, Options{}, newRecAdopter(), func(p *fakePeer) {
		payload, fds := batchPayload(items)
		var h [headerLen]byte
		(&header{version: 7, typ: msgBatch, nfds: uint16(len(fds)), seq: 1, length: uint32(len(payload))}).put(h[:])
		p.l.c.WriteMsgUnix(append(h[:], payload...), unix.UnixRights(fds...), nil)
		if f, _ := p.l.recv(time.Now().Add(5 * time.Second)); f.h.typ != msgFail {
			t.Errorf("want FAIL, got %v", f.h.typ)
		}
	}, nil)
	if !errors.Is(err, ErrVersion) || !bytes.Contains([]byte(err.Error()), []byte("peer speaks version 7")) {
		t.Fatalf("err %v", err)
	}
	assertSameTargets(t, before, openTargets())
}

// ABORT and EOF after an ACK: the prepared items are cancelled and closed.
func TestReceiverAbortAndEOFCancel(t *testing.T) {
	for _, how := range []string{"abort", "eof", "eof-mid-frame"} {
		t.Run(how, func(t *testing.T) {
			items, peers := sockItems(t, 4, 2)
			defer closeFDs(peers)
			defer closeItems(items, newOutcome())
			before := openTargets()
			a := newRecAdopter()
			st, err := receiverVsFake(t, Options{}, a, func(p *fakePeer) {
				payload, fds := batchPayload(items[:2])
				p.send(msgBatch, 1, payload, fds)
				if f := p.recv(); f.h.typ != msgAck {
					t.Errorf("got %v", f.h.typ)
				}
				switch how {
				case "abort":
					p.send(msgAbort, 0, []byte{0}, nil)
				case "eof-mid-frame":
					payload, fds := batchPayload(items[2:])
					var h [headerLen]byte
					(&header{version: Version, typ: msgBatch, nfds: uint16(len(fds)), seq: 2, length: uint32(len(payload))}).put(h[:])
					p.l.c.WriteMsgUnix(append(h[:], payload[:len(payload)/2]...), unix.UnixRights(fds...), nil)
				}
			}, nil)
			switch how {
			case "abort":
				var ae *AbortError
				if !errors.As(err, &ae) || ae.KeepServing {
					t.Fatalf("err %v", err)
				}
			case "eof":
				if !errors.Is(err, io.EOF) {
					t.Fatalf("err %v", err)
				}
			case "eof-mid-frame":
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("err %v", err)
				}
			}
			if len(a.committed) != 0 || len(a.cancelled) != 2 || st.Cancelled != 2 {
				t.Fatalf("committed %d cancelled %d stats %+v", len(a.committed), len(a.cancelled), st)
			}
			assertSameTargets(t, before, openTargets())
		})
	}
}

// The COMMIT is late: the receiver gives up, and the sender's COMMIT write
// fails, so both agree the batch stayed with the sender.
func TestReceiverCommitTimeoutBothAgree(t *testing.T) {
	items, peers := sockItems(t, 300, 0) // batches 1..3
	defer closeFDs(peers)
	before := targetsOf(items)
	a := newRecAdopter()
	gaveUp := make(chan struct{})
	res := transfer(t, Options{Window: 1}, items, a, func(s *Sender, r *Receiver) {
		r.hookAfterAck = func(seq uint32) {
			if seq == 2 {
				r.o.AckTimeout = 100 * time.Millisecond // only the wait for COMMIT 2 is short
			}
		}
		r.hookGaveUp = func() { close(gaveUp) }
		s.hookBeforeCommit = func(seq uint32) {
			if seq == 2 {
				<-gaveUp // the COMMIT comes after the receiver gave up
			}
		}
	})
	if !isPeerGone(res.sendErr) || !errors.Is(res.recvErr, ErrTimeout) {
		t.Fatalf("send %v recv %v", res.sendErr, res.recvErr)
	}
	for _, it := range items {
		_, committed := a.committed[it.ID]
		if committed != res.out.transferred[it.ID] {
			t.Fatalf("item %d: receiver committed %v, sender transferred %v", it.ID, committed, res.out.transferred[it.ID])
		}
	}
	if res.rs.Committed != 126 || res.rs.Cancelled != 126 {
		t.Fatalf("stats %+v", res.rs)
	}
	checkOwnership(t, items, before, res.out)
	a.closeAll()
	closeItems(items, res.out)
}

// A COMMIT already queued when the receiver's timer fires is honoured.
func TestReceiverGiveUpHonoursQueuedCommit(t *testing.T) {
	items, peers := sockItems(t, 3, 0)
	defer closeFDs(peers)
	defer closeItems(items, newOutcome())
	a := newRecAdopter()
	committed := make(chan struct{})
	st, err := receiverVsFake(t, Options{}, a, func(p *fakePeer) {
		payload, fds := batchPayload(items)
		p.send(msgBatch, 1, payload, fds)
		if f := p.recv(); f.h.typ != msgAck {
			t.Errorf("got %v", f.h.typ)
		}
		p.send(msgCommit, 1, nil, nil)
		close(committed)
		// The receiver shut its socket down for reading: later writes fail.
		time.Sleep(200 * time.Millisecond)
		if err := p.send(msgDone, 0, make([]byte, 12), nil); !isPeerGone(err) {
			t.Errorf("write after the receiver gave up: %v", err)
		}
	}, func(r *Receiver) {
		r.hookAfterAck = func(uint32) {
			<-committed
			r.o.AckTimeout = time.Nanosecond // the wait for the COMMIT times out at once
		}
	})
	if !errors.Is(err, ErrTimeout) || st.Committed != 3 || len(a.committed) != 3 || len(a.cancelled) != 0 {
		t.Fatalf("err %v stats %+v", err, st)
	}
	a.closeAll()
}

func TestStateTables(t *testing.T) {
	legalOut := map[[2]outState]bool{
		{outOpen, outSent}: true, {outOpen, outKept}: true,
		{outSent, outAcked}: true, {outSent, outKept}: true,
		{outAcked, outCommitted}: true, {outAcked, outKept}: true,
	}
	for f := outOpen; f <= outKept; f++ {
		for to := outOpen; to <= outKept; to++ {
			if outLegal(f, to) != legalOut[[2]outState{f, to}] {
				t.Errorf("sender %v -> %v: legal=%v", f, to, outLegal(f, to))
			}
			func() {
				defer func() {
					if p := recover(); (p != nil) == legalOut[[2]outState{f, to}] {
						t.Errorf("sender %v -> %v: panic %v", f, to, p)
					}
				}()
				(&outBatch{state: f}).to(to)
			}()
		}
	}
	legalIn := map[[2]inState]bool{
		{inReceived, inAcked}: true, {inReceived, inRefused}: true, {inReceived, inCancelled}: true,
		{inAcked, inCommitted}: true, {inAcked, inCancelled}: true,
	}
	for f := inReceived; f <= inCancelled; f++ {
		for to := inReceived; to <= inCancelled; to++ {
			if inLegal(f, to) != legalIn[[2]inState{f, to}] {
				t.Errorf("receiver %v -> %v: legal=%v", f, to, inLegal(f, to))
			}
		}
	}
}

func TestCallsOutOfState(t *testing.T) {
	sc, rc := unixPair(t)
	s, r := NewSender(sc, Options{}), NewReceiver(rc, Options{})
	defer s.Close()
	defer r.Close()
	if err := s.Finish(context.Background()); !errors.Is(err, ErrState) {
		t.Fatal(err)
	}
	if err := r.Finish(); !errors.Is(err, ErrState) {
		t.Fatal(err)
	}
}

// After an ABORT with keep-serving the successor takes over and says BYE;
// the old process's Finish waits for that before it may exit.
func TestAbortAfterSendWaitsForBye(t *testing.T) {
	items, peers := sockItems(t, 20, 0)
	defer closeFDs(peers)
	sc, rc := unixPair(t)
	s, r := NewSender(sc, Options{}), NewReceiver(rc, Options{})
	a := newRecAdopter()
	defer a.closeAll()
	got := make(chan error, 1)
	go func() {
		_, err := r.Receive(context.Background(), a)
		var ae *AbortError
		if !errors.As(err, &ae) || !ae.KeepServing || ae.Reason != "operator changed their mind" {
			got <- fmt.Errorf("receive: %v", err)
			return
		}
		got <- r.Finish() // after telling systemd MAINPID
	}()
	if _, err := s.Send(context.Background(), seqOf(items), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort("operator changed their mind"); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if len(a.committed) != 20 {
		t.Fatalf("committed %d", len(a.committed))
	}
	s.Close()
}

// A Send cancelled by its ctx still lets Finish (with a fresh ctx) wait for
// the successor's BYE: the cancellation belongs to the Send only.
func TestCtxCancelThenFinish(t *testing.T) {
	items, peers := sockItems(t, 10, 0)
	defer closeFDs(peers)
	before := targetsOf(items)
	sc, rc := unixPair(t)
	s, r := NewSender(sc, Options{}), NewReceiver(rc, Options{})
	defer s.Close()
	a := newRecAdopter()
	a.reject = func(*Item) error { time.Sleep(30 * time.Millisecond); return nil } // a slow Prepare
	got := make(chan error, 1)
	go func() {
		_, err := r.Receive(context.Background(), a)
		var ae *AbortError
		if !errors.As(err, &ae) || !ae.KeepServing {
			got <- fmt.Errorf("receive: %v", err)
			return
		}
		got <- r.Finish()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	out := newOutcome()
	if _, err := s.Send(ctx, seqOf(items), out.done); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send: %v", err)
	}
	if err := s.Finish(context.Background()); err != nil {
		t.Fatalf("finish: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if len(a.committed) != 0 || len(a.cancelled) != 10 {
		t.Fatalf("committed %d cancelled %d", len(a.committed), len(a.cancelled))
	}
	expectKeptAll(t, items, before, out, context.DeadlineExceeded)
	closeItems(items, out)
}

// Nothing to hand over: no batch, DONE(0, 0), BYE.
func TestEmptyHandoff(t *testing.T) {
	res := transfer(t, Options{}, nil, newRecAdopter(), nil)
	if res.sendErr != nil || res.finishErr != nil || res.recvErr != nil || res.rFinishErr != nil || res.ss.Batches != 0 {
		t.Fatalf("%+v", res)
	}
}
