package httpparse

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/http/httputil"
	"strings"
	"testing"
)

// chunkResult is what a whole feeding session decides.
type chunkResult struct {
	n      int // bytes that belong to the message (when done) or were accepted before the error
	done   bool
	status int // 0 ok, else *Error status
}

// feedPieces feeds msg cut at the given points, as a proxy sees a body
// arrive. When bulk is set it moves chunk data without Feed whenever
// DataLeft says it may (the splice path).
func feedPieces(msg []byte, cuts []int, bulk bool) chunkResult {
	var d ChunkedDecoder
	off := 0
	pieces := append(append([]int{}, cuts...), len(msg))
	for _, end := range pieces {
		if end < off {
			continue
		}
		p := msg[off:end]
		for len(p) > 0 {
			if bulk {
				if left := d.DataLeft(); left > 0 {
					k := min(int64(len(p)), left)
					d.Skip(k)
					p = p[k:]
					off += int(k)
					continue
				}
			}
			n, done, err := d.Feed(p)
			if err != nil {
				return chunkResult{n: off + n, status: StatusOf(err)}
			}
			off += n
			p = p[n:]
			if done {
				return chunkResult{n: off, done: true}
			}
			if n == 0 {
				panic("Feed made no progress on non-empty input")
			}
		}
	}
	return chunkResult{n: off}
}

var chunkCases = []struct {
	name   string
	in     string
	extra  string
	status int
	done   bool
	data   string
}{
	{name: "simple", in: "5\r\nhello\r\n0\r\n\r\n", done: true, data: "hello"},
	{name: "two chunks", in: "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", extra: "GET / HTTP/1.1\r\n", done: true, data: "abcde"},
	{name: "hex upper and lower", in: "a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n", done: true},
	{name: "leading zeros", in: "0005\r\nhello\r\n000\r\n\r\n", done: true},
	{name: "empty body", in: "0\r\n\r\n", extra: "x", done: true},
	{name: "data holds CRLF", in: "4\r\n\r\n\r\n\r\n0\r\n\r\n", done: true},
	{name: "extension token", in: "5;name=value\r\nhello\r\n0;last\r\n\r\n", done: true},
	{name: "extension quoted", in: "5 ; a = \"q\\\"x;y\" ; b\t;c=d\r\nhello\r\n0\r\n\r\n", done: true},
	{name: "extension obs-text quoted", in: "1;a=\"\xff\"\r\nx\r\n0\r\n\r\n", done: true},
	{name: "trailers", in: "1\r\nx\r\n0\r\nX-Sum: abc\r\nX-Other:\t v \r\n\r\n", extra: "next", done: true},
	{name: "max size accepted", in: "3fffffffffffffff\r\nabc", done: false},
	{name: "incomplete size", in: "5", done: false},
	{name: "incomplete data", in: "5\r\nhel", done: false},
	{name: "incomplete final", in: "0\r\n\r", done: false},

	{name: "invalid hex", in: "g\r\n", status: 400},
	{name: "0x prefix", in: "0x5\r\nhello\r\n", status: 400},
	{name: "empty size", in: "\r\nhello\r\n", status: 400},
	{name: "negative size", in: "-5\r\n", status: 400},
	{name: "overflow 2^62", in: "4000000000000000\r\n", status: 400},
	{name: "overflow 20 digits", in: "ffffffffffffffffffff\r\n", status: 400},
	{name: "space then CRLF", in: "5 \r\nhello\r\n", status: 400},
	{name: "ext without name", in: "5;\r\nhello\r\n", status: 400},
	{name: "ext without value", in: "5;a=\r\nhello\r\n", status: 400},
	{name: "ext bad byte in name", in: "5;a@b\r\nhello\r\n", status: 400},
	{name: "ext space in name", in: "5;a b\r\nhello\r\n", status: 400},
	{name: "ext control in quoted", in: "5;a=\"\x01\"\r\nhello\r\n", status: 400},
	{name: "ext unterminated quote", in: "5;a=\"x\r\nhello\r\n", status: 400},
	{name: "ext NUL", in: "5;\x00\r\nhello\r\n", status: 400},
	{name: "ext too long", in: "5;a=" + strings.Repeat("b", 5000) + "\r\n", status: 400},
	{name: "size line too long (zeros)", in: strings.Repeat("0", 5000) + "5\r\n", status: 400},
	{name: "missing CRLF after data", in: "3\r\nabcX\r\n0\r\n\r\n", status: 400},
	{name: "CR without LF after data", in: "3\r\nabc\rX0\r\n\r\n", status: 400},
	{name: "data longer than size", in: "3\r\nabcd\r\n0\r\n\r\n", status: 400},
	{name: "bare LF after size", in: "3\nabc\r\n0\r\n\r\n", status: 400},
	{name: "bare CR after size", in: "3\rabc\r\n0\r\n\r\n", status: 400},
	{name: "bare LF final", in: "0\r\n\n", status: 400},
	{name: "trailer obs-fold", in: "0\r\nX: a\r\n b\r\n\r\n", status: 400},
	{name: "trailer space before colon", in: "0\r\nX : a\r\n\r\n", status: 400},
	{name: "trailer NUL", in: "0\r\nX: \x00\r\n\r\n", status: 400},
	{name: "trailer no colon", in: "0\r\nX\r\n\r\n", status: 400},
	{name: "trailer bare LF", in: "0\r\nX: a\n\r\n", status: 400},
	{name: "trailers too long", in: "0\r\n" + strings.Repeat("X-A: "+strings.Repeat("v", 100)+"\r\n", 200) + "\r\n", status: 400},
}

// TestChunkedTable feeds every case whole, byte by byte, split at every
// position, and with bulk Skip of chunk data; all must agree.
func TestChunkedTable(t *testing.T) {
	for _, c := range chunkCases {
		t.Run(c.name, func(t *testing.T) {
			msg := []byte(c.in + c.extra)
			whole := feedPieces(msg, nil, false)
			if whole.status != c.status || whole.done != c.done {
				t.Fatalf("got %+v, want status %d done %v", whole, c.status, c.done)
			}
			if c.done && whole.n != len(c.in) {
				t.Fatalf("n = %d, want %d", whole.n, len(c.in))
			}
			if c.status == 0 && !c.done && whole.n != len(msg) {
				t.Fatalf("incomplete body: consumed %d of %d", whole.n, len(msg))
			}
			ones := make([]int, len(msg))
			for i := range ones {
				ones[i] = i
			}
			for _, bulk := range []bool{false, true} {
				if got := feedPieces(msg, ones, bulk); got.n != whole.n || got.done != whole.done || got.status != whole.status {
					t.Fatalf("byte by byte (bulk %v): %+v, whole %+v", bulk, got, whole)
				}
				// Every position for normal cases; the few multi-KiB limit
				// cases use a stride (still hundreds of positions) to keep
				// the test fast.
				stride := 1 + len(msg)/1500
				for k := 0; k <= len(msg); k += stride {
					if got := feedPieces(msg, []int{k}, bulk); got.n != whole.n || got.done != whole.done || got.status != whole.status {
						t.Fatalf("split at %d (bulk %v): %+v, whole %+v", k, bulk, got, whole)
					}
				}
			}
			if c.data != "" {
				if got := decodeData(t, msg); got != c.data {
					t.Fatalf("data %q, want %q", got, c.data)
				}
			}
		})
	}
}

// decodeData collects the chunk data using only DataLeft and Skip, the way
// the splice plane moves it.
func decodeData(t *testing.T, msg []byte) string {
	t.Helper()
	var d ChunkedDecoder
	var out []byte
	for i := 0; len(msg) > 0 && i < 1<<20; i++ {
		if left := d.DataLeft(); left > 0 {
			k := min(left, int64(len(msg)))
			out = append(out, msg[:k]...)
			d.Skip(k)
			msg = msg[k:]
			continue
		}
		// Feed framing one byte at a time so it stops as soon as data begins.
		n, done, err := d.Feed(msg[:1])
		if err != nil {
			t.Fatal(err)
		}
		msg = msg[n:]
		if done {
			return string(out)
		}
	}
	if !d.Done() {
		t.Fatal("message did not end")
	}
	return string(out)
}

// TestChunkedRoundTrip encodes random bodies with net/http/httputil's
// chunked writer in random write sizes and checks the decoder finds the
// exact end and, through DataLeft/Skip, the exact data.
func TestChunkedRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rounds := 200
	if testing.Short() {
		rounds = 40
	}
	for round := range rounds {
		body := make([]byte, rng.IntN(20000))
		for i := range body {
			body[i] = byte(rng.IntN(256))
		}
		var enc bytes.Buffer
		w := httputil.NewChunkedWriter(&enc)
		for rest := body; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(3000))
			if _, err := w.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			rest = rest[k:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if round%2 == 1 {
			enc.WriteString("Trailer-A: x\r\n")
		}
		enc.WriteString("\r\n")
		msg := enc.Bytes()
		extra := []byte("HTTP/1.1 200 OK\r\n")
		full := append(append([]byte{}, msg...), extra...)

		var cuts []int
		for off := 0; off < len(full); off += 1 + rng.IntN(4000) {
			cuts = append(cuts, off)
		}
		got := feedPieces(full, cuts, round%3 == 0)
		if !got.done || got.status != 0 || got.n != len(msg) {
			t.Fatalf("round %d: %+v, message is %d bytes", round, got, len(msg))
		}
		if data := decodeData(t, full); data != string(body) {
			t.Fatalf("round %d: decoded data differs", round)
		}
		// Cross-check the framing with the reference reader.
		ref, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(msg)))
		if err != nil || !bytes.Equal(ref, body) {
			t.Fatalf("round %d: reference reader disagrees: %v", round, err)
		}
	}
}

func TestChunkedStickyAndDone(t *testing.T) {
	var d ChunkedDecoder
	if n, done, err := d.Feed([]byte("0\r\n\r\nrest")); n != 5 || !done || err != nil {
		t.Fatalf("%d %v %v", n, done, err)
	}
	if n, done, err := d.Feed([]byte("more")); n != 0 || !done || err != nil {
		t.Fatalf("after done: %d %v %v", n, done, err)
	}
	d.Reset()
	if _, _, err := d.Feed([]byte("z")); StatusOf(err) != 400 {
		t.Fatalf("want 400, got %v", err)
	}
	if _, _, err := d.Feed([]byte("0\r\n\r\n")); StatusOf(err) != 400 {
		t.Fatal("error is not sticky")
	}
	d.Reset()
	if _, _, err := d.Feed([]byte("5\r\nab")); err != nil {
		t.Fatal(err)
	}
	if d.DataLeft() != 3 {
		t.Fatalf("DataLeft %d", d.DataLeft())
	}
	d.Skip(4)
	if d.DataLeft() != 0 {
		t.Fatal("DataLeft after bad Skip")
	}
	if _, _, err := d.Feed([]byte("c")); StatusOf(err) != 500 {
		t.Fatalf("Skip beyond data: %v", err)
	}
	d.Reset()
	d.Skip(0) // harmless anywhere
	if _, done, err := d.Feed([]byte("1\r\nx\r\n0\r\n\r\n")); !done || err != nil {
		t.Fatal(done, err)
	}
}
