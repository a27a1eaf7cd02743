package loop

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// dialWorkerIdle is how long a dial goroutine waits for the next job before it exits.
const dialWorkerIdle = 10 * time.Second

// dialJob is one backend dial for the exchange gen of cc; bc is enrolled on cc's loop.
type dialJob struct {
	cc  *clientConn
	bc  *backendConn
	gen uint32
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
func (s *Server) runDial(j dialJob) {
	ls := j.cc.ls
	nc, err := s.dialer.DialContext(s.ctx, "tcp", s.cfg.Backend)
	if err == nil {
		s.backendOpened.Add(1)
		var ch <-chan gnet.RegisteredResult
		ch, err = ls.el.Enroll(gnet.NewContext(context.Background(), j.bc), nc)
		if err != nil {
			_ = nc.Close()
		} else if r := <-ch; r.Err != nil {
			err = r.Err
		}
	}
	if err != nil {
		cc, gen := j.cc, j.gen
		_ = ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			cc.dialFailed(gen, err)
			return nil
		}))
	}
}
