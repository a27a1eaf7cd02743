package loop

import (
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/splice"
)

// The hand-off of a verified WebSocket upgrade to the tunnel plane.
//
// Invariant: a connection becomes a tunnel only after a 101 whose Upgrade, Connection and
// Sec-WebSocket-Accept match the client's request, and every byte either side sent before the
// switch reaches the other side before any spliced byte, in order.

// switchProtocols handles a 101. Only a verified WebSocket switch is tunnelled.
func (cc *clientConn) switchProtocols(bc *backendConn, resp *httpparse.Response, n int) {
	s, ls := cc.srv, cc.ls
	if !cc.ex.upgrade || !resp.HasToken("Upgrade", "websocket") || !resp.HasToken("Connection", "upgrade") ||
		!httpparse.VerifyAccept(cc.ex.wsKey, resp.Header("Sec-WebSocket-Accept")) {
		s.log.Debug("backend sent an unverified 101", "backend", memberName(cc.ex.member), "phase", "upgrade")
		cc.fail(502)
		return
	}
	o := respHeadOpts{backendHost: ls.memberHost(cc.ex.member), clientHost: cc.ex.host, stripped: strippedPrefix(cc.ex.route), websocket: true, https: cc.https()}
	head := appendResponseHead(ls.scratch[:0], resp, &o)
	ls.scratch = head[:0]
	_, _ = bc.c.Discard(n)

	// Everything gnet or our queues hold goes to the plane as pending, ahead of any spliced byte:
	// to the client, older queued bytes, the 101, frames the backend sent right behind it; to the
	// backend, any unsent request bytes, then frames the client sent before the 101.
	toClient := bytebufferpool.Get()
	toClient.B = append(toClient.B, cc.out.bytes()...)
	toClient.B = cc.appendToClient(toClient.B, head) // sealed toward a TLS client (tlswire.go)
	if bc.c.InboundBuffered() > 0 {
		b, _ := bc.c.Next(-1)
		toClient.B = cc.appendToClient(toClient.B, b)
	}
	toBackend := bytebufferpool.Get()
	toBackend.B = append(toBackend.B, bc.out.bytes()...)
	toBackend.B = append(toBackend.B, cc.inbound()...)

	if cc.c == nil { // a client that half-closed is not owed a tunnel (halfclose.go)
		bytebufferpool.Put(toClient)
		bytebufferpool.Put(toBackend)
		cc.fail(502)
		return
	}
	cfd, err := cc.c.Dup()
	if err != nil {
		bytebufferpool.Put(toClient)
		bytebufferpool.Put(toBackend)
		cc.fail(502)
		return
	}
	bfd, err := bc.c.Dup()
	if err != nil {
		_ = unix.Close(cfd)
		bytebufferpool.Put(toClient)
		bytebufferpool.Put(toBackend)
		cc.fail(502)
		return
	}
	oc, ob := cc.c, bc.c
	cc.c, bc.c = nil, nil
	cc.ex.bc, bc.cc = nil, nil
	ls.loop.closeConn(oc)
	ls.loop.closeConn(ob)
	// The member's count turns from a request into a tunnel, released when the plane closes the
	// tunnel (least-conn counts open tunnels); Tunnel runs no OnClose when it refuses.
	m := cc.ex.member
	m.Upgraded()
	cc.ex.holding = false
	tun := splice.Tunnel{ClientFD: cfd, BackendFD: bfd, ToBackend: toBackend.B, ToClient: toClient.B,
		IdleTimeout: tunnelIdle(cc.ex.route), OnClose: func(splice.TunnelResult) { m.Release(route.Tunnel) }}
	if cc.tls != nil {
		tun.ClientTLS = cc.tls.handOff() // WSS: decrypt-and-forward in the plane, which owns the session now
	}
	err = s.plane.Tunnel(tun)
	bytebufferpool.Put(toClient)
	bytebufferpool.Put(toBackend)
	if err != nil {
		m.Release(route.Tunnel)
		s.log.Warn("tunnel refused", "backend", memberName(m), "phase", "tunnel", "err", err)
	} else {
		s.tunnelsTotal.Add(1)
	}
	cc.teardown()
}
