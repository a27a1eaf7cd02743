package loop

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/wsgate/wsgate/tlsrecord"
)

// Passing a TLS client connection to a successor process (binary upgrade, docs/lifecycle.md).
//
// After its handshake a TLS 1.3 client's wire is nothing but a tlsrecord.Session in the loop's
// hands (tlswire.go): keys, sequence numbers, KeyUpdate state and at most one half-received
// record. That can be rebuilt from bytes (tlsrecord.Session.AppendState / RestoreSession), so an
// idle TLS 1.3 keep-alive connection passes at its request boundary like a plain one, with its
// session: the client notices nothing, its next record is opened by the successor at the next
// sequence number. A TLS 1.2 client's session is a crypto/tls.Conn, whose keys and sequence
// numbers crypto/tls keeps to itself: it stays, finishes its exchange here and closes at its
// next response boundary with Connection: close (and close_notify); its client reconnects, to
// the successor. So do TLS 1.3 clients that have ended their side (close_notify either way).
//
// The state holds both traffic secrets. It goes only to the hand-off socket (a socketpair with
// the child this process started, same uid), is wiped here once the hand-off has a verdict
// (PassDone) and there once decoded (decodeTLSIdle), and is never logged.
//
// The TLS part of an idle conn's state (version 2), after version 1's bytes:
//
//	u32 ms since a half-received record began arriving (0: none)
//	u32 n, n bytes of tlsrecord session state

// travels: an established TLS 1.3 session, in the loop's hands, healthy, neither side closed.
func (t *tlsConn) travels() bool {
	return t.hs == nil && t.sess != nil && t.rec != nil && !t.eof && !t.byeSent && t.sess.Err() == nil
}

// appendTLSIdle appends the TLS part of a passed conn's state.
func (t *tlsConn) appendTLSIdle(b []byte) ([]byte, error) {
	var partial uint32
	if t.partialSince != 0 {
		partial = uint32(max((t.cc.ls.now()-t.partialSince)/int64(time.Millisecond), 1))
	}
	b = binary.BigEndian.AppendUint32(b, partial)
	at := len(b)
	b = binary.BigEndian.AppendUint32(b, 0)
	b, err := t.sess.AppendState(b)
	if err != nil {
		clear(b)
		return nil, err
	}
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b, nil
}

// adoptedTLS is a passed TLS client's session between PrepareAdopt and the conn's first event.
type adoptedTLS struct {
	sess       *tlsrecord.Session
	partialAgo time.Duration // since a half-received record began arriving (0: none)
}

// decodeTLSIdle rebuilds the session from the TLS part of a passed conn's state, and wipes the
// secrets in b.
func decodeTLSIdle(b []byte) (*adoptedTLS, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("tls conn state: %d bytes where the TLS part should be", len(b))
	}
	partial := time.Duration(binary.BigEndian.Uint32(b)) * time.Millisecond
	n := binary.BigEndian.Uint32(b[4:])
	if int64(n) != int64(len(b)-8) {
		return nil, fmt.Errorf("tls conn state: %d session bytes announced, %d present", n, len(b)-8)
	}
	sess, err := tlsrecord.RestoreSession(b[8:])
	clear(b[8:])
	if err != nil {
		return nil, fmt.Errorf("tls conn state: %w", err)
	}
	if (partial != 0) != sess.Partial() {
		sess.Close()
		return nil, fmt.Errorf("tls conn state: a record timeout of %v with a partial record %v", partial, sess.Partial())
	}
	return &adoptedTLS{sess: sess, partialAgo: partial}, nil
}

// close wipes an adopted session that will not be used (nil: nothing to do).
func (a *adoptedTLS) close() {
	if a != nil && a.sess != nil {
		a.sess.Close()
		a.sess = nil
	}
}

// adoptTLS makes a freshly adopted cc the TLS 1.3 connection it was in the predecessor: the
// session in the loop's hands, as established() leaves it.
func (cc *clientConn) adoptTLS(raw wire, a *adoptedTLS) {
	now := cc.ls.now()
	t := &tlsConn{raw: raw, cc: cc, rec: a.sess, sess: a.sess, version: tls.VersionTLS13, active: now}
	if a.partialAgo > 0 {
		t.partialSince = max(now-int64(a.partialAgo), 1)
	}
	a.sess = nil
	cc.tls = t
	cc.c = t
	cc.out.tls = t
}
