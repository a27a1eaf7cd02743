//go:build linux

package handoff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := header{version: Version, typ: msgBatch, nfds: 253, seq: 0xdeadbeef, length: MaxFrameLen}
	var b [headerLen]byte
	h.put(b[:])
	if !bytes.Equal(b[:4], []byte{'W', 'G', 1, byte(msgBatch)}) {
		t.Fatalf("header starts % x", b[:4])
	}
	got, err := parseHeader(b[:])
	if err != nil || got != h {
		t.Fatalf("got %+v, %v", got, err)
	}
	bad := func(mut func(b []byte), want error, text string) {
		t.Helper()
		var c [headerLen]byte
		copy(c[:], b[:])
		mut(c[:])
		_, err := parseHeader(c[:])
		if !errors.Is(err, want) || !bytes.Contains([]byte(err.Error()), []byte(text)) {
			t.Errorf("%s: got %v", text, err)
		}
	}
	bad(func(b []byte) { b[0] = 'X' }, ErrProtocol, "bad magic")
	bad(func(b []byte) { b[2] = 2 }, ErrVersion, "peer speaks version 2, we speak 1")
	bad(func(b []byte) { b[3] = 0 }, ErrProtocol, "unknown message type 0")
	bad(func(b []byte) { b[3] = byte(msgMax) }, ErrProtocol, "unknown message type")
	bad(func(b []byte) { b[7] = 1 }, ErrProtocol, "reserved")
	bad(func(b []byte) { binary.BigEndian.PutUint32(b[12:], MaxFrameLen+1) }, ErrProtocol, "payload of")
	bad(func(b []byte) { binary.BigEndian.PutUint16(b[4:], 254) }, ErrProtocol, "announces 254 fds")
	bad(func(b []byte) { b[3] = byte(msgAck) }, ErrProtocol, "ACK carries 253 fds")
	// A version mismatch is reported even when the rest is from the future.
	bad(func(b []byte) { b[2], b[3], b[7] = 9, 77, 5 }, ErrVersion, "version 9")
}

func TestBatchRoundTrip(t *testing.T) {
	in := []*Item{
		{ID: 1, Kind: KindTunnel, FDs: []int{10, 11}, State: []byte("half-closed")},
		{ID: 1 << 60, Kind: KindTunnel, FDs: []int{12, 13, 14, 15}, State: bytes.Repeat([]byte{7}, MaxStateLen)},
		{ID: 3, Kind: KindIdleConn, FDs: []int{16}},
		{ID: 4, Kind: KindListener, FDs: []int{17}},
	}
	p, fds := batchPayload(in)
	orig := append([]byte(nil), p...)
	out, err := decodeBatch(p, fds, nil)
	if err != nil || len(out) != len(in) {
		t.Fatal(err, len(out))
	}
	for i := range in {
		if out[i].ID != in[i].ID || out[i].Kind != in[i].Kind || !bytes.Equal(out[i].State, in[i].State) || !equalInts(out[i].FDs, in[i].FDs) {
			t.Fatalf("item %d: %+v", i, out[i])
		}
	}
	// Appending to a decoded item's fds or state must not touch its neighbour.
	_ = append(out[0].FDs, 99)
	_ = append(out[0].State, 'x')
	if out[1].FDs[0] != 12 || !bytes.Equal(p, orig) {
		t.Fatal("decoded slices share capacity with the next item")
	}
	if _, err := decodeBatch(p, fds[:len(fds)-1], nil); !errors.Is(err, ErrProtocol) {
		t.Fatal("missing fd accepted:", err)
	}
	if _, err := decodeBatch(p, append(fds, 99), nil); !errors.Is(err, ErrProtocol) {
		t.Fatal("extra fd accepted:", err)
	}
	if _, err := decodeBatch(append(p, 0), fds, nil); !errors.Is(err, ErrProtocol) {
		t.Fatal("trailing byte accepted:", err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAckRoundTrip(t *testing.T) {
	in := []reject{{1, "state version 9"}, {5, string(bytes.Repeat([]byte("x"), 2000))}}
	out, err := decodeAck(appendAck(nil, in), 6)
	if err != nil || len(out) != 2 || out[0] != in[0] || len(out[1].reason) != maxText {
		t.Fatalf("%v %+v", err, out)
	}
	if _, err := decodeAck(appendAck(nil, in), 5); err == nil {
		t.Fatal("reject index past the batch accepted")
	}
	if _, err := decodeAck(appendAck(nil, []reject{{3, ""}, {3, ""}}), 6); err == nil {
		t.Fatal("duplicate reject accepted")
	}
}

// Encoding a batch allocates nothing per item once the buffer has grown.
func TestBatchEncodeAllocs(t *testing.T) {
	items := make([]*Item, 126)
	for i := range items {
		items[i] = &Item{ID: uint64(i), Kind: KindTunnel, FDs: []int{2 * i, 2*i + 1}, State: make([]byte, 64)}
	}
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		b := buf[:0]
		for _, it := range items {
			b = appendItem(b, it)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per batch", allocs)
	}
}

// FuzzBatch: decodeBatch never panics, and whatever it accepts re-encodes
// to the same bytes.
func FuzzBatch(f *testing.F) {
	p, _ := batchPayload([]*Item{
		{ID: 7, Kind: KindTunnel, FDs: []int{1, 2}, State: []byte("st")},
		{ID: 8, Kind: KindIdleConn, FDs: []int{3}},
	})
	f.Add(p, uint8(3))
	f.Add([]byte{0, 1, 0, 0}, uint8(0))
	f.Fuzz(func(t *testing.T, p []byte, nfds uint8) {
		fds := make([]int, nfds)
		for i := range fds {
			fds[i] = 100 + i
		}
		items, err := decodeBatch(p, fds, nil)
		if err != nil {
			return
		}
		ptrs := make([]*Item, len(items))
		for i := range items {
			ptrs[i] = &items[i]
		}
		q, qfds := batchPayload(ptrs)
		if !bytes.Equal(p, q) || !equalInts(fds, qfds) {
			t.Fatalf("re-encoding differs:\n% x\n% x", p, q)
		}
	})
}

// FuzzAck: decodeAck never panics and accepted ACKs re-encode identically.
func FuzzAck(f *testing.F) {
	f.Add(appendAck(nil, []reject{{0, "no"}, {4, "state"}}), uint8(5))
	f.Add(appendAck(nil, nil), uint8(1))
	f.Fuzz(func(t *testing.T, p []byte, n uint8) {
		rej, err := decodeAck(p, int(n))
		if err != nil {
			return
		}
		if q := appendAck(nil, rej); !bytes.Equal(p, q) {
			t.Fatalf("re-encoding differs:\n% x\n% x", p, q)
		}
	})
}

// FuzzHeader: parseHeader never panics and accepted headers re-encode
// identically.
func FuzzHeader(f *testing.F) {
	var b [headerLen]byte
	(&header{version: Version, typ: msgBatch, nfds: 2, seq: 1, length: 40}).put(b[:])
	f.Add(b[:])
	(&header{version: Version, typ: msgDone, length: 12}).put(b[:])
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := parseHeader(p)
		if err != nil {
			return
		}
		var q [headerLen]byte
		h.put(q[:])
		if !bytes.Equal(p[:headerLen], q[:]) {
			t.Fatalf("re-encoding differs:\n% x\n% x", p[:headerLen], q)
		}
	})
}
