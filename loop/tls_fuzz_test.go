package loop

import (
	"bytes"
	"testing"

	"github.com/wsgate/wsgate/tlsrecord"
)

// FuzzTLSWireChunks: records of random sizes arrive in random chunks, and the state machine
// consumes random amounts between events; what it consumes is exactly the plaintext sent, in
// order, and once everything is consumed the wire holds no buffer. (The in-place compaction of
// opened records, the switch to the pooled buffer when a record completes from the session's
// borrowed one, and the copy of unconsumed plaintext out of gnet's buffer.)
func FuzzTLSWireChunks(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{200, 0, 17, 255, 3, 9, 64, 1, 1, 1})
	f.Add(bytes.Repeat([]byte{7}, 64))
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) == 0 {
			return
		}
		sm := newSeam(t)
		ccn := &clientConn{srv: sm.s, ls: sm.ls} // open and the wire need no socket
		srv, cli := sessionPair(t, tlsrecord.TLS_AES_128_GCM_SHA256)
		tc := &tlsConn{cc: ccn, rec: srv, sess: srv}
		ccn.tls, ccn.c = tc, tc
		// The stream: records whose sizes come from the script.
		var want, wire []byte
		for i, b := range script {
			n := int(b)*int(b)%3000 + 1
			p := bytes.Repeat([]byte{byte('a' + i%26)}, n)
			want = append(want, p...)
			rec, err := cli.Seal(nil, p)
			if err != nil {
				t.Fatal(err)
			}
			wire = append(wire, rec...)
		}
		var got []byte
		k := 0
		for off := 0; off < len(wire); k++ {
			step := int(script[k%len(script)])*7 + 1
			end := min(off+step, len(wire))
			chunk := append([]byte(nil), wire[off:end]...) // gnet's buffer: ours during the event
			off = end
			if !tc.open(chunk) {
				t.Fatalf("open failed: %v", srv.Err())
			}
			// consume some of what is buffered (all of it every third event)
			avail := tc.InboundBuffered()
			take := avail
			if k%3 != 0 {
				take = avail * int(script[(k+1)%len(script)]) / 256
			}
			b, _ := tc.Next(take)
			got = append(got, b...)
			tc.settle()
		}
		b, _ := tc.Next(-1)
		got = append(got, b...)
		tc.settle()
		if !bytes.Equal(got, want) {
			t.Fatalf("consumed %d bytes, want %d; first difference at %d", len(got), len(want), firstDiffAt(got, want))
		}
		if tc.plain != nil || srv.Holding() || srv.Partial() {
			t.Fatalf("buffers held after everything was consumed: plain %v record %v partial %v", tc.plain != nil, srv.Holding(), srv.Partial())
		}
	})
}

func firstDiffAt(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
