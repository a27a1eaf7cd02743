package tlsrecord

import (
	"errors"
	"slices"
	"strconv"
	"sync"
)

// Event is what a record carried besides application data.
type Event uint8

const (
	EventNone Event = iota
	// EventCloseNotify: the peer sent close_notify. Its direction is over
	// (half-close): treat it as EOF. Anything it sends later is ignored
	// (RFC 8446 section 6.1).
	EventCloseNotify
	// EventKeyUpdate: the peer moved to its next traffic key.
	EventKeyUpdate
	// EventKeyUpdateRequested: the peer moved to its next key and asked us to
	// move ours. Our KeyUpdate goes out before the next application data in
	// Seal; call Flush to send it now even if there is nothing to write.
	EventKeyUpdateRequested
	// EventSessionTicket: a NewSessionTicket was received and ignored (client
	// role only; a server treats it as an error).
	EventSessionTicket
)

func (e Event) String() string {
	switch e {
	case EventNone:
		return "none"
	case EventCloseNotify:
		return "close_notify"
	case EventKeyUpdate:
		return "key_update"
	case EventKeyUpdateRequested:
		return "key_update(update_requested)"
	case EventSessionTicket:
		return "new_session_ticket"
	}
	return "event " + strconv.Itoa(int(e))
}

// Limits on records that carry no application data, so a peer cannot make us
// spin through key schedules and AEAD setups for free.
const (
	// maxUseless: consecutive empty application_data records and KeyUpdates
	// without application data in between (crypto/tls uses 16 too).
	maxUseless = 16
	// A peer may send keyUpdateBurst KeyUpdates at once; after that one more
	// per keyUpdateRefill bytes of application data it sent. A KeyUpdate costs
	// us an HKDF and an AEAD setup (a few microseconds); this keeps that below
	// the cost of decrypting the data the peer had to send for it.
	keyUpdateBurst  = 8
	keyUpdateRefill = 1 << 14
)

var (
	// ErrWriteClosed is returned by Seal after close_notify or a fatal alert
	// was sealed.
	ErrWriteClosed    = errors.New("tls: write after close_notify")
	errKeyUpdateFlood = &Error{AlertUnexpectedMessage, "too many KeyUpdates"}
	errUseless        = &Error{AlertUnexpectedMessage, "too many records without application data"}
	errTicketAtServer = &Error{AlertUnexpectedMessage, "NewSessionTicket sent to a server"}
)

// Keys are what a Session starts from: the suite, both application traffic
// secrets and the sequence numbers of the next record each way.
type Keys struct {
	Suite       uint16
	ReadSecret  []byte // the peer's traffic secret
	WriteSecret []byte // ours
	ReadSeq     uint64
	WriteSeq    uint64
	// Client makes the session accept (and ignore) NewSessionTicket
	// messages, which only a server may send.
	Client bool
}

// The pooled buffer a record borrows while it arrives in pieces.
type recordBody [MaxCiphertext]byte

var bodyPool = sync.Pool{New: func() any { return new(recordBody) }}

const (
	flagReadClosed  = 1 << iota // close_notify received
	flagWriteClosed             // close_notify or a fatal alert sealed
	flagKUPending               // we owe the peer a KeyUpdate
	flagLent                    // the last plaintext lives in body: release on the next Open
	flagClient
)

// Session is an established TLS 1.3 connection's record layer: both
// directions' keys, sequence numbers and KeyUpdate state, and at most one
// partial record. While idle it holds no buffer: about 300 bytes plus the two
// AEADs (Shrink drops those too).
//
// Reading: pass the bytes read from the socket to Open, which decrypts
// complete records in place and keeps an incomplete tail in a pooled buffer
// it borrows until that record completes. Writing: Seal appends records to the
// caller's buffer. One goroutine at a time.
type Session struct {
	r, w     State
	err      error // sticky read/protocol failure
	body     *recordBody
	blen     int32 // bytes of the partial record's body held in body
	clen     int32 // the partial record's body length once its header is in
	hdr      [HeaderLen]byte
	hlen     uint8
	flags    uint8
	useless  uint8
	kuTokens uint8
	refill   uint32

	// Counters for metrics: KeyUpdates received and sent.
	KeyUpdatesIn, KeyUpdatesOut uint32
}

// NewSession returns a Session for the given keys.
func NewSession(k Keys) (*Session, error) {
	s := new(Session)
	if err := s.Init(k); err != nil {
		return nil, err
	}
	return s, nil
}

// Init (re)initialises s, which must not hold a partial record.
func (s *Session) Init(k Keys) error {
	*s = Session{kuTokens: keyUpdateBurst}
	if err := s.r.Init(k.Suite, k.ReadSecret); err != nil {
		return err
	}
	if err := s.w.Init(k.Suite, k.WriteSecret); err != nil {
		return err
	}
	s.r.seq, s.w.seq = k.ReadSeq, k.WriteSeq
	if k.Client {
		s.flags |= flagClient
	}
	return nil
}

// ReadState and WriteState expose the two directions (kernel TLS needs their
// keys and sequence numbers; tests inspect them).
func (s *Session) ReadState() *State  { return &s.r }
func (s *Session) WriteState() *State { return &s.w }

// Partial reports whether an incomplete record is held (a loop should bound
// how long that may last, as it bounds a slow request head).
func (s *Session) Partial() bool { return s.hlen != 0 }

// Holding reports whether a pooled buffer is borrowed right now.
func (s *Session) Holding() bool { return s.body != nil }

// ReadClosed reports whether the peer sent close_notify.
func (s *Session) ReadClosed() bool { return s.flags&flagReadClosed != 0 }

// WriteClosed reports whether we sealed close_notify or a fatal alert.
func (s *Session) WriteClosed() bool { return s.flags&flagWriteClosed != 0 }

// Err returns the sticky error that ended reading, if any.
func (s *Session) Err() error { return s.err }

// Shrink releases both AEADs while the connection is idle; they are rebuilt
// from the stored keys on the next Open or Seal (about a microsecond for
// AES-GCM). It does nothing while a record is partially received.
func (s *Session) Shrink() {
	if s.body == nil {
		s.r.Drop()
		s.w.Drop()
	}
}

// Close returns a borrowed buffer and wipes the keys. The Session is unusable
// afterwards.
func (s *Session) Close() {
	s.putBody()
	s.r.Wipe()
	s.w.Wipe()
	if s.err == nil {
		s.err = errors.New("tls: session closed")
	}
}

func (s *Session) putBody() {
	if s.body != nil {
		bodyPool.Put(s.body)
		s.body = nil
	}
	s.flags &^= flagLent
}

func (s *Session) fail(err error) error {
	s.err = err
	s.putBody()
	s.hlen, s.blen = 0, 0
	return err
}

// Open consumes bytes read from the peer. Each call handles at most one
// record and returns how many bytes of in it consumed (n), the application
// data that record carried (plain, decrypted in place: a sub-slice of in, or
// of the borrowed buffer when the record arrived in pieces) and an Event.
//
// plain is valid until the next call to Open. Call Open again with in[n:]
// until it returns n == 0: that final call also returns the borrowed buffer
// to the pool, so a connection between reads holds nothing. An incomplete
// record at the end of in is consumed into the borrowed buffer (n ==
// len(in), plain == nil).
//
// Any error is fatal and sticky; seal the alert AlertFor(err) gives with
// AppendAlert, write it and close. Nothing of a record that fails
// authentication is returned.
func (s *Session) Open(in []byte) (n int, plain []byte, ev Event, err error) {
	if s.flags&flagLent != 0 {
		s.putBody()
	}
	if s.err != nil {
		return 0, nil, EventNone, s.err
	}
	if len(in) == 0 {
		return 0, nil, EventNone, nil
	}
	if s.flags&flagReadClosed != 0 {
		return len(in), nil, EventNone, nil
	}
	if s.hlen < HeaderLen {
		if s.hlen == 0 && len(in) >= HeaderLen {
			clen, err := ParseHeader(in)
			if err != nil {
				return 0, nil, EventNone, s.fail(err)
			}
			if len(in) >= HeaderLen+clen {
				// The common case: a whole record in the input, opened where it lies.
				plain, ev, err = s.record(in[:HeaderLen], in[HeaderLen:HeaderLen+clen])
				return HeaderLen + clen, plain, ev, err
			}
		}
		k := copy(s.hdr[s.hlen:], in)
		s.hlen += uint8(k)
		n, in = k, in[k:]
		if s.hlen < HeaderLen {
			return n, nil, EventNone, nil
		}
		clen, err := ParseHeader(s.hdr[:])
		if err != nil {
			return n, nil, EventNone, s.fail(err)
		}
		s.clen = int32(clen)
	}
	clen := int(s.clen)
	if s.body == nil && len(in) >= clen {
		// Only the header was split off: the body is contiguous in the input.
		s.hlen = 0
		plain, ev, err = s.record(s.hdr[:], in[:clen])
		return n + clen, plain, ev, err
	}
	if len(in) == 0 {
		return n, nil, EventNone, nil
	}
	if s.body == nil {
		s.body = bodyPool.Get().(*recordBody)
	}
	k := copy(s.body[s.blen:clen], in)
	s.blen += int32(k)
	n += k
	if int(s.blen) < clen {
		return n, nil, EventNone, nil
	}
	s.hlen, s.blen = 0, 0
	s.flags |= flagLent
	plain, ev, err = s.record(s.hdr[:], s.body[:clen])
	return n, plain, ev, err
}

// record opens one complete record and applies what it carries.
func (s *Session) record(hdr, body []byte) ([]byte, Event, error) {
	typ, content, err := s.r.OpenRecord(hdr, body)
	if err != nil {
		return nil, EventNone, s.fail(err)
	}
	switch typ {
	case ApplicationData:
		if len(content) == 0 {
			return nil, EventNone, s.noData()
		}
		s.useless = 0
		s.refill += uint32(len(content))
		for s.refill >= keyUpdateRefill {
			s.refill -= keyUpdateRefill
			if s.kuTokens < keyUpdateBurst {
				s.kuTokens++
			}
		}
		return content, EventNone, nil
	case TypeAlert:
		if len(content) != 2 {
			return nil, EventNone, s.fail(errAlertLen)
		}
		if a := Alert(content[1]); a != AlertCloseNotify {
			return nil, EventNone, s.fail(&PeerAlertError{a})
		}
		s.flags |= flagReadClosed
		s.putBody()
		return nil, EventCloseNotify, nil
	case Handshake:
		return s.handshake(content)
	}
	return nil, EventNone, s.fail(&Error{AlertUnexpectedMessage, "unexpected " + typ.String() + " record after the handshake"})
}

func (s *Session) noData() error {
	s.useless++
	if s.useless > maxUseless {
		return s.fail(errUseless)
	}
	return nil
}

func (s *Session) handshake(content []byte) ([]byte, Event, error) {
	if len(content) == 0 {
		return nil, EventNone, s.fail(errEmptyHandshake)
	}
	ev := EventNone
	for len(content) > 0 {
		typ, body, rest, err := NextHandshake(content)
		if err != nil {
			return nil, EventNone, s.fail(err)
		}
		switch typ {
		case TypeKeyUpdate:
			// A key change must end its record (RFC 8446 section 5.1).
			if len(rest) != 0 {
				return nil, EventNone, s.fail(errKeyUpdateAlign)
			}
			requested, err := ParseKeyUpdate(body)
			if err != nil {
				return nil, EventNone, s.fail(err)
			}
			if s.kuTokens == 0 {
				return nil, EventNone, s.fail(errKeyUpdateFlood)
			}
			s.kuTokens--
			if err := s.noData(); err != nil {
				return nil, EventNone, err
			}
			if err := s.r.Update(); err != nil {
				return nil, EventNone, s.fail(err)
			}
			s.KeyUpdatesIn++
			ev = EventKeyUpdate
			if requested {
				s.flags |= flagKUPending
				ev = EventKeyUpdateRequested
			}
		case TypeNewSessionTicket:
			if s.flags&flagClient == 0 {
				return nil, EventNone, s.fail(errTicketAtServer)
			}
			if err := s.noData(); err != nil {
				return nil, EventNone, err
			}
			ev = EventSessionTicket
		default:
			return nil, EventNone, s.fail(&Error{AlertUnexpectedMessage, "unexpected post-handshake message type " + strconv.Itoa(int(typ))})
		}
		content = rest
	}
	return nil, ev, nil
}

// KeyUpdatePending reports whether we owe the peer a KeyUpdate.
func (s *Session) KeyUpdatePending() bool { return s.flags&flagKUPending != 0 }

// Seal appends p to dst as application_data records of at most 2^14 bytes
// each, preceded by any KeyUpdate we owe the peer (and by one of our own when
// an AES-GCM key has sealed 2^24 records). It does not allocate when dst has
// room for len(p) plus 22 bytes per record plus 54.
func (s *Session) Seal(dst, p []byte) ([]byte, error) {
	if s.flags&flagWriteClosed != 0 {
		return dst, ErrWriteClosed
	}
	nrec := (len(p) + MaxPlaintext - 1) / MaxPlaintext
	dst = slices.Grow(dst, len(p)+nrec*Overhead+2*(Overhead+5))
	dst, err := s.Flush(dst)
	if err != nil {
		return dst, err
	}
	limit := s.w.info().rekeyAfter
	for len(p) > 0 {
		if limit != 0 && s.w.seq >= limit {
			if dst, err = s.appendKeyUpdate(dst, false); err != nil {
				return dst, err
			}
		}
		chunk := min(len(p), MaxPlaintext)
		if dst, err = s.w.AppendRecord(dst, ApplicationData, p[:chunk]); err != nil {
			return dst, s.failWrite(err)
		}
		p = p[chunk:]
	}
	return dst, nil
}

func (s *Session) failWrite(err error) error {
	s.flags |= flagWriteClosed
	return err
}

// Flush appends the KeyUpdate we owe the peer, if any (after
// EventKeyUpdateRequested), and moves our write key forward.
func (s *Session) Flush(dst []byte) ([]byte, error) {
	if s.flags&flagKUPending == 0 {
		return dst, nil
	}
	s.flags &^= flagKUPending
	return s.appendKeyUpdate(dst, false)
}

// AppendKeyUpdate seals a KeyUpdate of our own (asking the peer to update
// too if requestPeer) and moves our write key forward.
func (s *Session) AppendKeyUpdate(dst []byte, requestPeer bool) ([]byte, error) {
	if s.flags&flagWriteClosed != 0 {
		return dst, ErrWriteClosed
	}
	s.flags &^= flagKUPending // ours answers an outstanding request too
	return s.appendKeyUpdate(dst, requestPeer)
}

func (s *Session) appendKeyUpdate(dst []byte, requested bool) ([]byte, error) {
	m := keyUpdateMsg(requested)
	dst, err := s.w.AppendRecord(dst, Handshake, m[:])
	if err != nil {
		return dst, s.failWrite(err)
	}
	if err := s.w.Update(); err != nil {
		return dst, s.failWrite(err)
	}
	s.KeyUpdatesOut++
	return dst, nil
}

// AppendCloseNotify seals close_notify: our direction is finished (the
// caller then shuts the socket down for writing). Reading may go on.
func (s *Session) AppendCloseNotify(dst []byte) ([]byte, error) {
	return s.appendAlert(dst, 1, AlertCloseNotify)
}

// AppendAlert seals a fatal alert; nothing can be sealed after it.
func (s *Session) AppendAlert(dst []byte, a Alert) ([]byte, error) {
	return s.appendAlert(dst, 2, a)
}

func (s *Session) appendAlert(dst []byte, level byte, a Alert) ([]byte, error) {
	if s.flags&flagWriteClosed != 0 {
		return dst, ErrWriteClosed
	}
	s.flags |= flagWriteClosed
	msg := [2]byte{level, byte(a)}
	return s.w.AppendRecord(dst, TypeAlert, msg[:])
}
