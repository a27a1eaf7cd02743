package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format, version 1. Every message is one frame: a 16-byte header and
// a payload, all integers big-endian.
//
//	offset size field
//	0      2    magic 0x5747 ("WG")
//	2      1    version (1)
//	3      1    type (msgReady ... msgBye)
//	4      2    nfds: descriptors attached to this frame with SCM_RIGHTS (batches only, <= 253)
//	6      2    reserved, 0
//	8      4    seq: batch sequence number (BATCH, ACK, NACK, COMMIT), else 0
//	12     4    length of the payload that follows (<= MaxFrameLen)
//
// Magic and version stay at offsets 0..2 in every future version, so two
// different binaries can always tell each other which version they speak.
const (
	// Version is the protocol version this package speaks.
	Version = 1

	magic     = 0x5747
	headerLen = 16

	// MaxBatchFDs is the kernel's SCM_MAX_FD: no sendmsg may carry more.
	MaxBatchFDs = 253
	// MaxItemFDs bounds one item: a tunnel's two sockets and up to two
	// pipes (both ends) holding bytes in flight, with room to spare.
	MaxItemFDs = 8
	// MaxStateLen bounds an item's opaque state: two 64 KiB copy-path
	// buffers plus TLS record state and the rest of a tunnel fit.
	MaxStateLen = 256 << 10
	// MaxFrameLen bounds any payload. The sender closes a batch before it
	// would pass this, so one item always fits (MaxStateLen + its header).
	MaxFrameLen = 1 << 20

	maxText       = 1024 // FAIL, ABORT, NACK and reject reasons are cut to this
	itemHeaderLen = 16
	batchHeadLen  = 4
)

type msgType uint8

// Message types. Direction: O = old process (sender), N = new (receiver).
const (
	msgReady  msgType = 1 + iota // N->O: listeners bound; payload pid u32
	msgFail                      // either way: giving up; payload text
	msgBatch                     // O->N: items + their fds; seq
	msgAck                       // N->O: batch seq prepared; payload rejects
	msgNack                      // N->O: batch seq refused whole; payload code u8 + text
	msgCommit                    // O->N: the accepted items of batch seq are yours
	msgAbort                     // O->N: no more commits; payload flags u8 + text
	msgDone                      // O->N: everything sent; payload batches u32, items u64
	msgBye                       // N->O: taken over; payload items u64
	msgMax
)

var msgNames = [...]string{"?", "READY", "FAIL", "BATCH", "ACK", "NACK", "COMMIT", "ABORT", "DONE", "BYE"}

func (t msgType) String() string {
	if t < msgMax {
		return msgNames[t]
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// NACK codes: why a whole batch was refused.
const (
	nackTruncated uint8 = 1 + iota // fewer fds arrived than announced (MSG_CTRUNC: RLIMIT_NOFILE)
	nackMalformed                  // the payload did not decode
	nackRefusing                   // an earlier batch was refused; the receiver takes nothing more
)

// ABORT flags.
const (
	// abortKeepServing: the old process has stopped accepting (Send had
	// started), so the new one keeps its listeners and whatever it has
	// committed; without it the upgrade is cancelled and the new process
	// should exit.
	abortKeepServing uint8 = 1
)

// Errors. Every error returned by this package is an *Error naming the
// peer and the phase and wrapping one of these (or an errno / io error).
var (
	ErrVersion   = errors.New("protocol version mismatch")
	ErrProtocol  = errors.New("protocol error")
	ErrTruncated = errors.New("descriptors truncated in transit (MSG_CTRUNC: receiver at RLIMIT_NOFILE?)")
	ErrRefused   = errors.New("batch refused")
	ErrRejected  = errors.New("item rejected")
	ErrAborted   = errors.New("hand-off aborted")
	ErrTimeout   = errors.New("timeout")
	ErrPeerFail  = errors.New("peer gave up")
	ErrState     = errors.New("call not valid in this state")
)

// Error names the peer and the phase, e.g.
// "handoff: successor pid 4242: ack of batch 3: timeout after 10s".
type Error struct {
	Peer  string // "successor pid 4242", "predecessor pid 4100"
	Phase string // "ready", "batch 3", "ack of batch 3", "commit of batch 3", "done", "bye", ...
	Err   error
}

func (e *Error) Error() string {
	return "handoff: " + e.Peer + ": " + e.Phase + ": " + e.Err.Error()
}
func (e *Error) Unwrap() error { return e.Err }

type header struct {
	version uint8
	typ     msgType
	nfds    uint16
	seq     uint32
	length  uint32
}

func (h *header) put(b []byte) {
	binary.BigEndian.PutUint16(b[0:], magic)
	b[2] = h.version
	b[3] = uint8(h.typ)
	binary.BigEndian.PutUint16(b[4:], h.nfds)
	binary.BigEndian.PutUint16(b[6:], 0)
	binary.BigEndian.PutUint32(b[8:], h.seq)
	binary.BigEndian.PutUint32(b[12:], h.length)
}

// parseHeader checks a header. Magic and version come first so that a peer
// speaking another version is reported as such and not as garbage.
func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerLen {
		return h, fmt.Errorf("%w: short header (%d bytes)", ErrProtocol, len(b))
	}
	if m := binary.BigEndian.Uint16(b[0:]); m != magic {
		return h, fmt.Errorf("%w: bad magic %#04x", ErrProtocol, m)
	}
	h.version = b[2]
	if h.version != Version {
		return h, fmt.Errorf("%w: peer speaks version %d, we speak %d", ErrVersion, h.version, Version)
	}
	h.typ = msgType(b[3])
	h.nfds = binary.BigEndian.Uint16(b[4:])
	h.seq = binary.BigEndian.Uint32(b[8:])
	h.length = binary.BigEndian.Uint32(b[12:])
	switch {
	case h.typ == 0 || h.typ >= msgMax:
		return h, fmt.Errorf("%w: unknown message type %d", ErrProtocol, uint8(h.typ))
	case binary.BigEndian.Uint16(b[6:]) != 0:
		return h, fmt.Errorf("%w: reserved header bits set", ErrProtocol)
	case h.length > MaxFrameLen:
		return h, fmt.Errorf("%w: %v payload of %d bytes (max %d)", ErrProtocol, h.typ, h.length, MaxFrameLen)
	case h.nfds > MaxBatchFDs:
		return h, fmt.Errorf("%w: %v announces %d fds (max %d)", ErrProtocol, h.typ, h.nfds, MaxBatchFDs)
	case h.nfds > 0 && h.typ != msgBatch:
		return h, fmt.Errorf("%w: %v carries %d fds", ErrProtocol, h.typ, h.nfds)
	}
	return h, nil
}

// Kind says what an item is; the handoff layer only checks it is not 0.
type Kind uint8

// Item kinds wsgate hands over.
const (
	KindTunnel   Kind = 1 // client fd, backend fd, optionally pipe ends with bytes in flight
	KindIdleConn Kind = 2 // an idle keep-alive client connection, at a request boundary
	KindListener Kind = 3 // a listening socket
	KindLock     Kind = 4 // a lock fd (the one-instance-per-port guard)
)

func (k Kind) String() string {
	switch k {
	case KindTunnel:
		return "tunnel"
	case KindIdleConn:
		return "idle-conn"
	case KindListener:
		return "listener"
	case KindLock:
		return "lock"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// Item is one thing handed over: its descriptors and an opaque state the
// owning plane defines (half-close flags, timers, counters, route, pending
// bytes, TLS keys...). See the package doc for who owns the fds when.
type Item struct {
	ID    uint64 // the caller's id, unique within a hand-off; echoed in errors
	Kind  Kind
	FDs   []int  // 1..MaxItemFDs descriptors, sent in this order
	State []byte // <= MaxStateLen bytes; the receiver's copy is never reused by this package
	Ref   any    // the caller's own pointer; never sent
}

// Batch payload:
//
//	count u16, reserved u16
//	count x item: id u64, kind u8, nfds u8, reserved u16, stateLen u32, state
//
// The frame's fds are the items' fds in order; their sum must equal nfds.

// checkItem validates an item before it is sent.
func checkItem(it *Item) error {
	switch {
	case it.Kind == 0:
		return errors.New("kind 0")
	case len(it.FDs) == 0 || len(it.FDs) > MaxItemFDs:
		return fmt.Errorf("%d fds (want 1..%d)", len(it.FDs), MaxItemFDs)
	case len(it.State) > MaxStateLen:
		return fmt.Errorf("state of %d bytes (max %d)", len(it.State), MaxStateLen)
	}
	for i, fd := range it.FDs {
		if fd < 0 {
			return fmt.Errorf("fd %d is negative", fd)
		}
		for _, o := range it.FDs[:i] {
			if o == fd {
				return fmt.Errorf("fd %d listed twice", fd)
			}
		}
	}
	return nil
}

func itemWireLen(it *Item) int { return itemHeaderLen + len(it.State) }

func appendItem(b []byte, it *Item) []byte {
	var h [itemHeaderLen]byte
	binary.BigEndian.PutUint64(h[0:], it.ID)
	h[8] = uint8(it.Kind)
	h[9] = uint8(len(it.FDs))
	binary.BigEndian.PutUint32(h[12:], uint32(len(it.State)))
	b = append(b, h[:]...)
	return append(b, it.State...)
}

// decodeBatch parses a batch payload and deals fds out to the items in
// order. Items' State alias payload and their FDs alias fds. It never
// closes anything: on error the caller closes fds.
func decodeBatch(payload []byte, fds []int, items []Item) ([]Item, error) {
	if len(payload) < batchHeadLen {
		return items, fmt.Errorf("%w: batch payload of %d bytes", ErrProtocol, len(payload))
	}
	count := int(binary.BigEndian.Uint16(payload))
	if count == 0 || count > MaxBatchFDs {
		return items, fmt.Errorf("%w: batch of %d items", ErrProtocol, count)
	}
	if binary.BigEndian.Uint16(payload[2:]) != 0 {
		return items, fmt.Errorf("%w: reserved batch bits set", ErrProtocol)
	}
	p := payload[batchHeadLen:]
	used := 0
	for i := 0; i < count; i++ {
		if len(p) < itemHeaderLen {
			return items, fmt.Errorf("%w: item %d: short header", ErrProtocol, i)
		}
		it := Item{ID: binary.BigEndian.Uint64(p), Kind: Kind(p[8])}
		n := int(p[9])
		sl := binary.BigEndian.Uint32(p[12:])
		switch {
		case it.Kind == 0:
			return items, fmt.Errorf("%w: item %d (id %d): kind 0", ErrProtocol, i, it.ID)
		case n == 0 || n > MaxItemFDs:
			return items, fmt.Errorf("%w: item %d (id %d): %d fds", ErrProtocol, i, it.ID, n)
		case binary.BigEndian.Uint16(p[10:]) != 0:
			return items, fmt.Errorf("%w: item %d (id %d): reserved bits set", ErrProtocol, i, it.ID)
		case sl > MaxStateLen:
			return items, fmt.Errorf("%w: item %d (id %d): state of %d bytes", ErrProtocol, i, it.ID, sl)
		case int(sl) > len(p)-itemHeaderLen:
			return items, fmt.Errorf("%w: item %d (id %d): state runs past the payload", ErrProtocol, i, it.ID)
		case used+n > len(fds):
			return items, fmt.Errorf("%w: item %d (id %d): needs fds %d..%d, frame has %d", ErrProtocol, i, it.ID, used, used+n-1, len(fds))
		}
		it.State = p[itemHeaderLen : itemHeaderLen+int(sl) : itemHeaderLen+int(sl)]
		it.FDs = fds[used : used+n : used+n]
		used += n
		p = p[itemHeaderLen+int(sl):]
		items = append(items, it)
	}
	if len(p) != 0 {
		return items, fmt.Errorf("%w: %d bytes after the last item", ErrProtocol, len(p))
	}
	if used != len(fds) {
		return items, fmt.Errorf("%w: items use %d fds, frame has %d", ErrProtocol, used, len(fds))
	}
	return items, nil
}

// ACK payload: nrejects u16, reserved u16, then per reject: index u16,
// textLen u16, text. Rejected items stay with the sender.
type reject struct {
	index  int
	reason string
}

func appendAck(b []byte, rejects []reject) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(rejects)))
	b = binary.BigEndian.AppendUint16(b, 0)
	for _, r := range rejects {
		b = binary.BigEndian.AppendUint16(b, uint16(r.index))
		t := clip(r.reason)
		b = binary.BigEndian.AppendUint16(b, uint16(len(t)))
		b = append(b, t...)
	}
	return b
}

func decodeAck(p []byte, batchLen int) ([]reject, error) {
	if len(p) < 4 {
		return nil, fmt.Errorf("%w: ACK payload of %d bytes", ErrProtocol, len(p))
	}
	n := int(binary.BigEndian.Uint16(p))
	if binary.BigEndian.Uint16(p[2:]) != 0 {
		return nil, fmt.Errorf("%w: reserved ACK bits set", ErrProtocol)
	}
	p = p[4:]
	var out []reject
	last := -1
	for i := 0; i < n; i++ {
		if len(p) < 4 {
			return nil, fmt.Errorf("%w: ACK reject %d: short", ErrProtocol, i)
		}
		idx := int(binary.BigEndian.Uint16(p))
		tl := int(binary.BigEndian.Uint16(p[2:]))
		if idx >= batchLen || idx <= last {
			return nil, fmt.Errorf("%w: ACK rejects item index %d of a %d-item batch (after %d)", ErrProtocol, idx, batchLen, last)
		}
		if tl > maxText || tl > len(p)-4 {
			return nil, fmt.Errorf("%w: ACK reject %d: bad text length %d", ErrProtocol, i, tl)
		}
		out = append(out, reject{index: idx, reason: string(p[4 : 4+tl])})
		last = idx
		p = p[4+tl:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the ACK", ErrProtocol, len(p))
	}
	return out, nil
}

func clip(s string) string {
	if len(s) > maxText {
		return s[:maxText]
	}
	return s
}
