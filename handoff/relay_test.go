//go:build linux

package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// relay is a miniature tunnel plane for the process tests: one goroutine,
// one edge-triggered epoll set, tunnels of two sockets whose bytes it
// copies through per-direction pending buffers (so, unlike splice/, it can
// hold bytes in user space at any moment). It detaches a tunnel into an
// Item and adopts Items, so a tunnel can move between processes while its
// peers keep sending. Its state encoding is the kind the real plane will
// define: version, flags, counters, pending bytes, or pending bytes in a
// pipe passed along with the sockets.
type relay struct {
	ep   int
	wake [2]int

	mu      sync.Mutex
	reqs    []func()
	stopped bool

	// waitPending: detach waits up to 20ms for bytes to leave pending (in
	// the pipe for withPipe tunnels, in the state of every other odd one).
	waitPending bool

	// Loop goroutine only.
	byFD map[int32]*rtun
	byID map[uint64]*rtun
	buf  []byte
	done chan struct{}
}

type rtun struct {
	id    uint64
	fd    [2]int    // 0: client side, 1: backend side
	pend  [2][]byte // pend[d]: read from fd[d], not yet written to fd[1-d]
	moved [2]uint64 // bytes written to fd[1-d] that came from fd[d]
	eof   [2]bool   // fd[d] reached EOF
	shut  [2]bool   // fd[1-d] shut down for writing after pend[d] drained
	pipe  int       // pending bytes of direction 0 waiting in FDs[2] (adoption only)
}

func newRelay() (*relay, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	r := &relay{ep: ep, byFD: map[int32]*rtun{}, byID: map[uint64]*rtun{}, buf: make([]byte, 64<<10), done: make(chan struct{})}
	if err := unix.Pipe2(r.wake[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, r.wake[0], &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(r.wake[0])}); err != nil {
		return nil, err
	}
	go r.run()
	return r, nil
}

// do runs f on the loop and waits for it.
func (r *relay) do(f func()) {
	ch := make(chan struct{})
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		panic("relay: do after stop")
	}
	r.reqs = append(r.reqs, func() { f(); close(ch) })
	r.mu.Unlock()
	unix.Write(r.wake[1], []byte{1})
	<-ch
}

// post runs f on the loop without waiting (in order with do).
func (r *relay) post(f func()) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		panic("relay: post after stop")
	}
	r.reqs = append(r.reqs, f)
	r.mu.Unlock()
	unix.Write(r.wake[1], []byte{1})
}

func (r *relay) run() {
	defer close(r.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(r.ep, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			panic(err)
		}
		for i := 0; i < n; i++ {
			fd := events[i].Fd
			if fd == int32(r.wake[0]) {
				var b [64]byte
				for {
					if _, err := unix.Read(r.wake[0], b[:]); err != nil {
						break
					}
				}
				r.mu.Lock()
				reqs, stop := r.reqs, r.stopped
				r.reqs = nil
				r.mu.Unlock()
				for _, f := range reqs {
					f()
				}
				if stop {
					for _, t := range r.byID {
						r.drop(t)
					}
					return
				}
				continue
			}
			if t := r.byFD[fd]; t != nil {
				r.pump(t)
			}
		}
	}
}

// pump moves what can move in both directions, until EAGAIN (edge
// triggered): a direction holding bytes writes them and reads nothing.
func (r *relay) pump(t *rtun) {
	for d := 0; d < 2; d++ {
		src, dst := t.fd[d], t.fd[1-d]
		for {
			if len(t.pend[d]) > 0 {
				n, err := unix.Write(dst, t.pend[d])
				if err == unix.EINTR {
					continue
				}
				if err == unix.EAGAIN {
					break
				}
				if err != nil {
					r.drop(t)
					return
				}
				t.pend[d] = t.pend[d][n:]
				t.moved[d] += uint64(n)
				continue
			}
			if t.eof[d] {
				if !t.shut[d] {
					unix.Shutdown(dst, unix.SHUT_WR)
					t.shut[d] = true
				}
				break
			}
			n, err := unix.Read(src, r.buf)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				r.drop(t)
				return
			}
			if n == 0 {
				t.eof[d] = true
				continue
			}
			t.pend[d] = append(t.pend[d][:0], r.buf[:n]...)
		}
	}
	if t.shut[0] && t.shut[1] {
		r.drop(t)
	}
}

func (r *relay) register(t *rtun) error {
	for _, fd := range t.fd {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
		if err := unix.EpollCtl(r.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return err
		}
		r.byFD[int32(fd)] = t
	}
	r.byID[t.id] = t
	r.pump(t)
	return nil
}

func (r *relay) unregister(t *rtun) {
	for _, fd := range t.fd {
		// Before the fds leave: an epoll registration outlives close() while
		// another process still holds the file, and would keep reporting.
		unix.EpollCtl(r.ep, unix.EPOLL_CTL_DEL, fd, nil)
		delete(r.byFD, int32(fd))
	}
	delete(r.byID, t.id)
}

func (r *relay) drop(t *rtun) {
	r.unregister(t)
	unix.Close(t.fd[0])
	unix.Close(t.fd[1])
}

// add joins two sockets as tunnel id.
func (r *relay) add(id uint64, client, backend int) (err error) {
	r.do(func() { err = r.register(&rtun{id: id, fd: [2]int{client, backend}}) })
	return err
}

// Tunnel state, version 1:
//
//	u8 version, u8 flags (1: eof0, 2: eof1, 4: shut0, 8: shut1, 16: pend0 in the pipe FDs[2..3])
//	u64 moved0, u64 moved1, u32 len0, pend0 (or u32 pipe length), u32 len1, pend1
const relayStateVersion = 1

// detach takes tunnel id off the loop and returns it as an Item. It first
// reads once more from each source so that a tunnel with traffic always
// leaves with bytes pending; every withPipe one carries direction 0's
// pending bytes in a pipe instead of in its state.
func (r *relay) detach(id uint64, withPipe bool) (it *Item, err error) {
	r.do(func() { it, err = r.detachLocked(id, withPipe) })
	return it, err
}

// detachMany detaches several tunnels in one trip to the loop, as a plane
// would per batch; ids that are gone are skipped.
func (r *relay) detachMany(ids []uint64, withPipe func(uint64) bool) (items []*Item) {
	r.do(func() {
		for _, id := range ids {
			if it, err := r.detachLocked(id, withPipe(id)); err == nil {
				items = append(items, it)
			}
		}
	})
	return items
}

func (r *relay) detachLocked(id uint64, withPipe bool) (it *Item, err error) {
	{
		t := r.byID[id]
		if t == nil {
			return nil, fmt.Errorf("relay: no tunnel %d", id)
		}
		r.unregister(t)
		if w := 0; r.waitPending && (withPipe || id%2 == 1) {
			if !withPipe {
				w = 1
			}
			if len(t.pend[w]) == 0 && !t.eof[w] {
				unix.Poll([]unix.PollFd{{Fd: int32(t.fd[w]), Events: unix.POLLIN}}, 20)
			}
		}
		for d := 0; d < 2; d++ {
			if t.eof[d] || len(t.pend[d]) > 16<<10 {
				continue
			}
			n, rerr := unix.Read(t.fd[d], r.buf[:16<<10])
			if n > 0 {
				t.pend[d] = append(t.pend[d], r.buf[:n]...)
			} else if rerr == nil {
				t.eof[d] = true
			}
		}
		it = &Item{ID: id, Kind: KindTunnel, FDs: []int{t.fd[0], t.fd[1]}}
		var flags uint8
		for d := 0; d < 2; d++ {
			if t.eof[d] {
				flags |= 1 << d
			}
			if t.shut[d] {
				flags |= 4 << d
			}
		}
		pend0 := t.pend[0]
		if withPipe && len(pend0) > 0 && len(pend0) <= 32<<10 {
			var p [2]int
			if err = unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				return nil, err
			}
			if n, werr := unix.Write(p[1], pend0); werr != nil || n != len(pend0) {
				return nil, fmt.Errorf("pipe write %d of %d: %v", n, len(pend0), werr)
			}
			flags |= 16
			it.FDs = append(it.FDs, p[0], p[1])
			pend0 = nil
		}
		s := []byte{relayStateVersion, flags}
		s = binary.BigEndian.AppendUint64(s, t.moved[0])
		s = binary.BigEndian.AppendUint64(s, t.moved[1])
		if flags&16 != 0 {
			s = binary.BigEndian.AppendUint32(s, uint32(len(t.pend[0])))
		} else {
			s = binary.BigEndian.AppendUint32(s, uint32(len(pend0)))
			s = append(s, pend0...)
		}
		s = binary.BigEndian.AppendUint32(s, uint32(len(t.pend[1])))
		s = append(s, t.pend[1]...)
		it.State = s
	}
	return it, err
}

// decode checks an item and builds its tunnel without touching its fds
// (Adopter.Prepare).
func decodeTunnel(it *Item) (*rtun, error) {
	s := it.State
	if it.Kind != KindTunnel {
		return nil, fmt.Errorf("kind %v", it.Kind)
	}
	if len(s) < 2 || s[0] != relayStateVersion {
		return nil, errors.New("unknown state version")
	}
	flags := s[1]
	want := 2
	if flags&16 != 0 {
		want = 4
	}
	if len(it.FDs) != want {
		return nil, fmt.Errorf("%d fds, want %d", len(it.FDs), want)
	}
	t := &rtun{id: it.ID, fd: [2]int{it.FDs[0], it.FDs[1]}}
	s = s[2:]
	if len(s) < 20 {
		return nil, errors.New("short state")
	}
	t.moved[0], t.moved[1] = binary.BigEndian.Uint64(s), binary.BigEndian.Uint64(s[8:])
	n := int(binary.BigEndian.Uint32(s[16:]))
	s = s[20:]
	if flags&16 != 0 {
		t.pipe = n
	} else {
		if len(s) < n {
			return nil, errors.New("short pending 0")
		}
		t.pend[0], s = append([]byte(nil), s[:n]...), s[n:]
	}
	if len(s) < 4 || len(s)-4 != int(binary.BigEndian.Uint32(s)) {
		return nil, errors.New("bad pending 1")
	}
	t.pend[1] = append([]byte(nil), s[4:]...)
	for d := 0; d < 2; d++ {
		t.eof[d], t.shut[d] = flags&(1<<d) != 0, flags&(4<<d) != 0
	}
	return t, nil
}

// adopt registers a decoded tunnel (Adopter.Commit, or resuming a kept
// item): bytes waiting in its pipe are read out first.
func (r *relay) adopt(it *Item, t *rtun) error {
	if t.pipe > 0 {
		p := make([]byte, t.pipe)
		for got := 0; got < len(p); {
			n, err := unix.Read(it.FDs[2], p[got:])
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return fmt.Errorf("pipe read: %d of %d: %v", got, len(p), err)
			}
			got += n
		}
		t.pend[0] = p
	}
	if len(it.FDs) == 4 {
		unix.Close(it.FDs[2])
		unix.Close(it.FDs[3])
	}
	r.post(func() {
		if err := r.register(t); err != nil {
			panic(fmt.Sprintf("relay: register %d: %v", t.id, err))
		}
	})
	return nil
}

// resume puts a kept item back on the loop.
func (r *relay) resume(it *Item) error {
	t, err := decodeTunnel(it)
	if err != nil {
		return err
	}
	return r.adopt(it, t)
}

// adopter returns the Adopter that puts received tunnels on this relay.
func (r *relay) adopter() Adopter { return relayAdopter{r} }

type relayAdopter struct{ r *relay }

func (a relayAdopter) Prepare(it *Item) error {
	for _, fd := range it.FDs {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
	}
	t, err := decodeTunnel(it)
	if err != nil {
		return err
	}
	it.Ref = t
	return nil
}

func (a relayAdopter) Commit(it *Item) {
	if err := a.r.adopt(it, it.Ref.(*rtun)); err != nil {
		panic(fmt.Sprintf("adopt %d: %v", it.ID, err))
	}
}

func (a relayAdopter) Cancel(it *Item) {}

// ids lists the tunnels on the loop.
func (r *relay) ids() (out []uint64) {
	r.do(func() {
		for id := range r.byID {
			out = append(out, id)
		}
	})
	return out
}

// counters returns every tunnel's moved counters.
func (r *relay) counters() map[uint64][2]uint64 {
	m := map[uint64][2]uint64{}
	r.do(func() {
		for id, t := range r.byID {
			m[id] = t.moved
		}
	})
	return m
}

// stop closes every tunnel and the loop.
func (r *relay) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	unix.Write(r.wake[1], []byte{1})
	<-r.done
	unix.Close(r.ep)
	unix.Close(r.wake[0])
	unix.Close(r.wake[1])
}
