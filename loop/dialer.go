package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsgate/wsgate/route"
)

// dialWorkerIdle is how long a dial goroutine waits for the next job before it exits.
const dialWorkerIdle = 10 * time.Second

// dialJob is one backend dial for the exchange gen of cc: d connects to the exchange's member
// (from its route's source addresses), bc is enrolled on cc's loop.
type dialJob struct {
	cc  *clientConn
	bc  *backendConn
	gen uint32
	d   *route.Dialer
}

// dialPool runs backend dials on long-lived goroutines. A fresh goroutine per dial pays for its
// creation and, because DialContext and gnet's Enroll are deep, for growing and copying its
// stack: about 6% of the proxy's CPU per WebSocket upgrade. A job goes to a parked worker when
// one is waiting, otherwise to a new one, so slow dials never queue behind each other.
type dialPool struct {
	jobs chan dialJob // unbuffered: a send succeeds only when a worker is parked on it
	ctx  context.Context
	run  func(dialJob)
}

func (p *dialPool) start(j dialJob) {
	select {
	case p.jobs <- j:
	default:
		go p.worker(j)
	}
}

func (p *dialPool) worker(j dialJob) {
	t := time.NewTimer(dialWorkerIdle)
	defer t.Stop()
	for {
		p.run(j)
		j = dialJob{}
		t.Reset(dialWorkerIdle)
		select {
		case j = <-p.jobs:
		case <-t.C:
			return
		case <-p.ctx.Done():
			return
		}
	}
}

// runDial connects a fresh backend conn and enrolls it on the client's loop; OnOpen attaches it.
//
// fd budget: a dial reserves two fds before it starts, the socket it dials and the dup gnet's
// Enroll makes of it, because the budget must be asked before an fd exists. Once Enroll has
// answered, gnet holds the dup (counted by OnOpen) and the dialled socket is closed here (gnet's
// enroll worker closes it too, but may not have yet), so both reserved fds are released.
func (s *Server) runDial(j dialJob) {
	ls := j.cc.ls
	if !s.fds.TryAcquire(2) {
		s.rejectedFDs.Add(1)
		err := fmt.Errorf("%w: %d of %d fds in use", errFDBudget, s.fds.Used(), s.fds.Limit())
		s.execDialFailed(j, err)
		return
	}
	nc, err := j.d.DialContext(s.ctx)
	if err == nil {
		s.backendOpened.Add(1)
		var ch <-chan gnet.RegisteredResult
		ch, err = ls.el.Enroll(gnet.NewContext(context.Background(), j.bc), nc)
		if err == nil {
			// A channel closed without a result means gnet's enroll worker gave up (it recovers
			// a panic, e.g. on a socket whose peer already reset it): no OnOpen will come, so this
			// is a failed dial, not a success (the same rule as reenroll in offload.go).
			if r, ok := <-ch; !ok || r.Err != nil || r.Conn == nil {
				err = r.Err
				if err == nil {
					err = errEnrollNoResult
				}
			}
		}
		_ = nc.Close()
	}
	s.fds.Release(2)
	if err != nil {
		s.execDialFailed(j, err)
	}
}

// errEnrollNoResult: gnet's Enroll ended without registering the conn.
var errEnrollNoResult = errors.New("gnet enroll ended without a result")

// execDialFailed reports a failed dial on the client's loop.
func (s *Server) execDialFailed(j dialJob, err error) {
	cc, gen := j.cc, j.gen
	_ = cc.ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		cc.dialFailed(gen, err)
		return nil
	}))
}

// dialStatus is the answer to a failed backend dial: 503 when the fd budget had no room, 504
// on a timeout, 502 otherwise (refused, unreachable).
func dialStatus(err error) int {
	if errors.Is(err, errFDBudget) {
		return 503
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 504
	}
	return 502
}
