package loop

import "github.com/panjf2000/gnet/v2"

// The seam between the HTTP state machine and gnet.
//
// The state machine (client.go, exchange.go, backend.go, closing.go, upgrade.go, offload.go) sees
// a connection only as a wire: the bytes the event loop read from it and the state machine has
// not consumed yet (Peek/Next/Discard/InboundBuffered), and the socket itself (Fd for the outq's
// write(2), shutdown and SO_LINGER; Dup for the hand-offs to the tunnel plane and for answering a
// client that half-closed). Closing goes through the loop (netLoop.closeConn), because gnet
// must forget the fd in the same step, and it runs the conn's closed callback before returning.
// gnet.Conn satisfies wire as it is; unit tests use a fake wire whose inbound bytes are scripted
// and whose fd is one end of a socketpair, so the write side (outq, shutdown, linger) runs the
// same syscalls as in production and the test reads what was written from the other end.
//
// A TLS session plugs in here: a wire whose Peek/Next/Discard/InboundBuffered serve plaintext
// (records opened as gnet delivers them), and a sealing step in front of outq's write(2), so the
// state machine keeps seeing and producing plain HTTP bytes. Fd and Dup stay the raw socket's,
// for the hand-offs (which then need kernel TLS or record protection in the tunnel plane).
type wire interface {
	Peek(n int) ([]byte, error) // n <= 0: everything buffered; valid until Discard/Next
	Next(n int) ([]byte, error) // like Peek, and consumes
	Discard(n int) (int, error) // n <= 0: everything
	InboundBuffered() int
	Fd() int
	Dup() (int, error)
}

// netLoop is what the state machine asks of its event loop outside the hand-offs: close a conn
// now. The conn's closed callback (clientConn.closed / backendConn.closed) runs before closeConn
// returns, as gnet's EventLoop.Close runs OnClose synchronously.
type netLoop interface {
	closeConn(w wire)
}

// gnetLoop is netLoop on a gnet event loop.
type gnetLoop struct{ el gnet.EventLoop }

func (g gnetLoop) closeConn(w wire) { _ = g.el.Close(rawWire(w).(gnet.Conn)) }

// onTraffic, onClosed: the dispatch from a wire's events to its state machine; the gnet handler
// and the unit tests' fake loop both use them. A context whose wire no longer matches belongs to a
// conn that was handed off (its old gnet copy closing), and is left alone.
func onTraffic(w wire, ctx any) {
	switch v := ctx.(type) {
	case *clientConn:
		if v.owns(w) {
			v.ls.enterTraffic()
			if v.tls != nil {
				v.tls.traffic()
			} else {
				v.process()
			}
			v.ls.leaveTraffic()
		}
	case *backendConn:
		if v.c == w {
			v.ls.enterTraffic()
			v.process()
			v.ls.leaveTraffic()
		}
	}
}

func onClosed(w wire, ctx any, err error) {
	switch v := ctx.(type) {
	case *clientConn:
		if v.owns(w) {
			v.closed(err)
		}
	case *backendConn:
		if v.c == w {
			v.closed(err)
		}
	}
}
