package accesslog

import (
	"encoding/binary"
	"net/netip"
	"time"
	"unsafe"
)

// The records a Writer puts in its ring, little endian, one after the other:
//
//	common  u32 length of the whole record, u8 kind, i64 time (Unix ns), i32 zone offset (s),
//	        u8 address flags, [16]byte client IP (IPv4 mapped), u16 client port
//	request i32 status, i64 bytes in, i64 bytes out, i64 duration, i64 connect, u8 answered,
//	        u32 lengths of method, target, route, backend, detail; then those bytes
//	tunnel  i64 duration, i64 bytes up, i64 bytes down, u32 lengths of target, route, backend,
//	        reason; then those bytes
//
// A record carries the event's numbers as numbers and its text as it came, so the loop's part
// is a handful of copies; formatter turns records into lines on the drain goroutine.
const (
	kindRequest = 1
	kindTunnel  = 2

	addrValid = 1
	addrIs4   = 2

	commonFixed = 4 + 1 + 8 + 4 + 1 + 16 + 2
	reqFixed    = commonFixed + 4 + 8 + 8 + 8 + 8 + 1 + 5*4
	tunFixed    = commonFixed + 8 + 8 + 8 + 4*4
)

// formatter is the drain goroutine's state: it turns records into lines in out.
type formatter struct {
	format  Format
	clock   clock
	ln      line
	out     []byte
	wrapped []byte                   // a record that wraps around the ring's end, made whole
	zones   map[int32]*time.Location // one per zone offset seen, so that the clock's cache holds
	req     Request
	tun     Tunnel
}

func newFormatter(f Format) *formatter {
	return &formatter{format: f, out: make([]byte, 0, flushBytes+4096), zones: map[int32]*time.Location{}}
}

func (f *formatter) zone(off int32) *time.Location {
	loc := f.zones[off]
	if loc == nil {
		loc = time.FixedZone("", int(off))
		f.zones[off] = loc
	}
	return loc
}

// line appends the line for one record to f.out.
func (f *formatter) line(rec []byte) {
	le := binary.LittleEndian
	at := time.Unix(0, int64(le.Uint64(rec[5:]))).In(f.zone(int32(le.Uint32(rec[13:]))))
	var client netip.AddrPort
	if rec[17]&addrValid != 0 {
		a := netip.AddrFrom16([16]byte(rec[18:34]))
		if rec[17]&addrIs4 != 0 {
			a = a.Unmap()
		}
		client = netip.AddrPortFrom(a, le.Uint16(rec[34:]))
	}
	b := rec[commonFixed:]
	f.ln.b = f.out
	switch rec[4] {
	case kindRequest:
		r := &f.req
		*r = Request{Time: at, Client: client, Status: int(int32(le.Uint32(b[0:]))),
			BytesIn: int64(le.Uint64(b[4:])), BytesOut: int64(le.Uint64(b[12:])),
			Duration: time.Duration(le.Uint64(b[20:])), Connect: time.Duration(le.Uint64(b[28:])), Answered: Why(b[36])}
		v := rec[reqFixed:]
		r.Method, v = take(v, le.Uint32(b[37:]))
		r.Target, v = take(v, le.Uint32(b[41:]))
		r.Route, v = takeString(v, le.Uint32(b[45:]))
		r.Backend, v = takeString(v, le.Uint32(b[49:]))
		r.Detail, _ = takeString(v, le.Uint32(b[53:]))
		f.ln.request(f.format, &f.clock, r)
	case kindTunnel:
		t := &f.tun
		*t = Tunnel{Time: at, Client: client, Duration: time.Duration(le.Uint64(b[0:])),
			BytesUp: int64(le.Uint64(b[8:])), BytesDown: int64(le.Uint64(b[16:]))}
		v := rec[tunFixed:]
		t.Target, v = take(v, le.Uint32(b[24:]))
		t.Route, v = takeString(v, le.Uint32(b[28:]))
		t.Backend, v = takeString(v, le.Uint32(b[32:]))
		t.Reason, _ = takeString(v, le.Uint32(b[36:]))
		f.ln.tunnel(f.format, &f.clock, t)
	}
	f.out = f.ln.b
	f.ln.b = nil
}

func take(v []byte, n uint32) ([]byte, []byte) { return v[:n:n], v[n:] }

// takeString views the next n bytes as a string for the formatter, which only reads it while
// the record is in the ring.
func takeString(v []byte, n uint32) (string, []byte) {
	if n == 0 {
		return "", v
	}
	return unsafe.String(&v[0], int(n)), v[n:]
}
