package tlsterm

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/wsgate/wsgate/tlsrecord"
)

// State is where a connection's handshake stands.
type State uint8

const (
	// StateNeedHello: the ClientHello is not complete yet; no goroutine
	// exists. Feed more bytes when they arrive.
	StateNeedHello State = iota
	// StateWaitingSlot: the ClientHello is buffered but every handshake slot
	// is taken. The driver calls wake when one is handed to this connection;
	// then call Feed (with nil or new bytes).
	StateWaitingSlot
	// StateHandshaking: crypto/tls runs on the handshake's goroutine. Write
	// what Feed returns to the socket; the driver calls wake when it has more
	// output or has finished, then call Feed again.
	StateHandshaking
	// StateEstablished: take the Session (TLS 1.3) or Legacy (TLS 1.2) and
	// the Rest of the input, then drop the Handshake.
	StateEstablished
	// StateFailed: write what Feed returned (crypto/tls's alert, if any) and
	// close.
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateNeedHello:
		return "need-hello"
	case StateWaitingSlot:
		return "waiting-slot"
	case StateHandshaking:
		return "handshaking"
	case StateEstablished:
		return "established"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Info describes an established connection (for logs and metrics).
type Info struct {
	Version     uint16 // tls.VersionTLS13 or tls.VersionTLS12
	CipherSuite uint16
	ALPN        string
	ServerName  string
	DidResume   bool
	// WriteSeq is the write sequence number the TLS 1.3 Session started at:
	// the records crypto/tls sealed under the application key after the
	// server Finished (its NewSessionTicket), counted, not assumed.
	WriteSeq uint64
	// Records is how many records the client's flights took, all consumed
	// by crypto/tls and not one more.
	Records int
}

// Handshake drives one connection from its first byte to an established
// session. All methods are for the connection's event loop (one goroutine);
// wake may be called from any goroutine, at any time, more than once: it
// only means "call Feed".
type Handshake struct {
	srv     *Server
	wake    func()
	state   State
	hello   Hello
	scratch []byte
	p       *pipe
	sec     secrets
	err     error

	// Set by the handshake goroutine under p.mu, read by the loop once
	// p.done is true.
	done    bool
	runErr  error
	info    Info
	session *tlsrecord.Session
	legacy  *Legacy
	rest    []byte

	// Server slot queue (guarded by srv.mu).
	queued, granted bool
	prev, next      *Handshake
}

// NewHandshake starts a connection in StateNeedHello. wake is called (from
// the handshake goroutine or another connection's) when Feed should be called
// again; with gnet it is the connection's Wake.
func (s *Server) NewHandshake(wake func()) *Handshake {
	return &Handshake{srv: s, wake: wake, p: newPipe(wake)}
}

// State returns the current state.
func (h *Handshake) State() State { return h.state }

// Hello returns what the ClientHello said (valid from StateWaitingSlot on).
func (h *Handshake) Hello() Hello { return h.hello }

// Err returns the error that failed the handshake.
func (h *Handshake) Err() error { return h.err }

// Info describes the established connection.
func (h *Handshake) Info() Info { return h.info }

// Session returns the TLS 1.3 session (nil for TLS 1.2).
func (h *Handshake) Session() *tlsrecord.Session { return h.session }

// Legacy returns the TLS 1.2 session (nil for TLS 1.3). Records that
// arrived with the client's Finished are already queued in it: call its Read
// right away, before waiting for the socket.
func (h *Handshake) Legacy() *Legacy { return h.legacy }

// Rest returns the bytes the client sent after its Finished that arrived
// during the handshake: records under its application key, to be opened with
// the Session before anything read later (for TLS 1.2 they are already queued
// inside the Legacy and Rest is nil).
func (h *Handshake) Rest() []byte { return h.rest }

// Feed gives the driver bytes read from the socket (all of them are taken;
// nil just polls). It returns bytes to write to the socket (possibly
// with an error: crypto/tls's alert), and the new state. In StateFailed the
// error says why, naming the phase. Once it has returned StateEstablished,
// later bytes belong to the session (after Rest), never to Feed: a loop that
// feeds a read in pieces must hand the remaining pieces to the session.
func (h *Handshake) Feed(in []byte) (out []byte, st State, err error) {
	switch h.state {
	case StateNeedHello:
		return h.feedHello(in)
	case StateWaitingSlot:
		if !h.p.feed(in, h.srv.cfg.MaxPending) {
			h.srv.cancel(h)
			st, err := h.fail(fmt.Errorf("tls handshake: client sent over %d bytes while waiting for a slot", h.srv.cfg.MaxPending))
			return nil, st, err
		}
		return h.start()
	case StateHandshaking:
		if !h.p.feed(in, h.srv.cfg.MaxPending) {
			h.p.Close()
			st, err := h.fail(fmt.Errorf("tls handshake: client sent over %d bytes during the handshake", h.srv.cfg.MaxPending))
			return nil, st, err
		}
		return h.poll()
	case StateEstablished:
		if len(in) > 0 {
			return nil, h.state, errors.New("tls: Feed after the handshake; use the session")
		}
	}
	return nil, h.state, h.err
}

func (h *Handshake) fail(err error) (State, error) {
	if h.state != StateFailed {
		h.srv.failed.Add(1)
	}
	h.state, h.err = StateFailed, err
	return h.state, err
}

func (h *Handshake) feedHello(in []byte) ([]byte, State, error) {
	// No goroutine exists yet, so the pipe is the loop's alone.
	if len(h.p.pend)+len(in) > MaxHello+4*1024 {
		h.srv.rejected.Add(1)
		st, err := h.fail(fmt.Errorf("tls handshake: ClientHello: %w", ErrHelloTooLarge))
		return nil, st, err
	}
	h.p.pend = append(h.p.pend, in...)
	hello, _, done, err := scanHello(h.p.pend, &h.scratch)
	if err != nil {
		if errors.Is(err, ErrPlainHTTP) {
			h.srv.plainHTTP.Add(1)
		} else {
			h.srv.rejected.Add(1)
		}
		st, err := h.fail(fmt.Errorf("tls handshake: ClientHello: %w", err))
		return nil, st, err
	}
	if !done {
		return nil, StateNeedHello, nil
	}
	h.hello, h.scratch = hello, nil
	h.state = StateWaitingSlot
	return h.start()
}

// start runs the handshake goroutine once a slot is ours.
func (h *Handshake) start() ([]byte, State, error) {
	if !h.srv.acquire(h) {
		return nil, StateWaitingSlot, nil
	}
	if !h.srv.keys.register(h.hello.Random, &h.sec) {
		h.srv.release()
		h.srv.rejected.Add(1)
		st, err := h.fail(errors.New("tls handshake: another handshake in progress has the same client random (replayed ClientHello)"))
		return nil, st, err
	}
	h.srv.started.Add(1)
	h.p.acct = &outAcct{sec: &h.sec}
	h.state = StateHandshaking
	go h.run()
	return nil, StateHandshaking, nil
}

// run is the handshake goroutine: crypto/tls over the pipe, then the
// session is built here too, so the loop does no key schedule.
func (h *Handshake) run() {
	conn := tls.Server(h.p, h.srv.tls)
	err := conn.Handshake()
	var (
		info    Info
		session *tlsrecord.Session
		legacy  *Legacy
	)
	if err == nil {
		info, session, legacy, err = h.establish(conn)
	} else {
		err = fmt.Errorf("tls handshake: %w", err)
	}
	h.srv.keys.unregister(h.hello.Random, &h.sec)
	h.sec.wipe()
	h.p.acct.wipe()
	h.p.mu.Lock()
	h.p.acct = nil
	h.done, h.runErr = true, err
	h.info, h.session, h.legacy = info, session, legacy
	h.p.mu.Unlock()
	h.srv.release()
	h.wake()
}

func (h *Handshake) establish(conn *tls.Conn) (Info, *tlsrecord.Session, *Legacy, error) {
	cs := conn.ConnectionState()
	info := Info{Version: cs.Version, CipherSuite: cs.CipherSuite, ALPN: cs.NegotiatedProtocol,
		ServerName: cs.ServerName, DidResume: cs.DidResume}
	p := h.p
	p.mu.Lock()
	unread, records := len(p.cur), p.records
	p.mu.Unlock()
	info.Records = records
	// One record at a time, and crypto/tls returned after the client's
	// Finished: it read every byte it was given and nothing after.
	if unread != 0 {
		return info, nil, nil, fmt.Errorf("tls handshake: crypto/tls left %d bytes of a record unread", unread)
	}
	if cs.Version == tls.VersionTLS12 {
		p.mu.Lock()
		p.nonblock, p.wake = true, nil
		p.mu.Unlock()
		return info, nil, &Legacy{conn: conn, p: p}, nil
	}
	if cs.Version != tls.VersionTLS13 {
		return info, nil, nil, fmt.Errorf("tls handshake: unexpected version %#x", cs.Version)
	}
	writeSeq, err := p.acct.result()
	if err != nil {
		return info, nil, nil, fmt.Errorf("tls handshake: %w", err)
	}
	if h.sec.clientApp == nil || h.sec.serverApp == nil {
		return info, nil, nil, errors.New("tls handshake: application secrets missing from the key log")
	}
	info.WriteSeq = writeSeq
	s, err := tlsrecord.NewSession(tlsrecord.Keys{
		Suite:       cs.CipherSuite,
		ReadSecret:  h.sec.clientApp,
		WriteSecret: h.sec.serverApp,
		ReadSeq:     0, // crypto/tls consumed no client record after Finished (above)
		WriteSeq:    writeSeq,
	})
	if err != nil {
		return info, nil, nil, fmt.Errorf("tls handshake: %w", err)
	}
	// conn is dropped here: its buffers go with it. The bytes behind the
	// Finished are taken by the loop when it sees the outcome (poll): it
	// may still be feeding the pipe now.
	return info, s, nil, nil
}

// poll collects output and, when the goroutine has finished, the outcome.
func (h *Handshake) poll() ([]byte, State, error) {
	out := h.p.take()
	h.p.mu.Lock()
	done := h.done
	h.p.mu.Unlock()
	if !done {
		return out, StateHandshaking, nil
	}
	if h.runErr != nil {
		h.p.Close()
		st, err := h.fail(h.runErr)
		return out, st, err
	}
	h.state = StateEstablished
	h.srv.established.Add(1)
	if h.info.DidResume {
		h.srv.resumed.Add(1)
	}
	if h.info.Version == tls.VersionTLS13 {
		h.srv.tls13.Add(1)
		// The goroutine is gone: only this goroutine touches the pipe now.
		if rest := h.p.pend[h.p.poff:]; len(rest) > 0 {
			h.rest = append([]byte(nil), rest...)
		}
		h.p = nil // the pipe and its buffers go
	} else {
		h.srv.tls12.Add(1)
	}
	return out, StateEstablished, nil
}

// Close abandons the handshake at any point (the connection closed or timed
// out): a waiting connection leaves the queue, a running handshake's
// goroutine is released (its Read fails) and frees its slot.
func (h *Handshake) Close() {
	switch h.state {
	case StateWaitingSlot, StateNeedHello:
		h.srv.cancel(h)
	}
	if h.p != nil {
		h.p.mu.Lock()
		legacy := h.legacy // written by the handshake goroutine under p.mu (run)
		h.p.mu.Unlock()
		if legacy == nil {
			h.p.Close()
		}
	}
	if h.state != StateEstablished && h.state != StateFailed {
		h.fail(errors.New("tls handshake: closed"))
	}
	if h.state != StateEstablished {
		// A session the goroutine built but the loop never took: wipe its keys.
		h.p.mu.Lock()
		s := h.session
		h.session = nil
		h.p.mu.Unlock()
		if s != nil {
			s.Close()
		}
	}
}
