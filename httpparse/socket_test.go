package httpparse

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestLoopbackStream sends a keep-alive sequence through a real loopback
// socket in small, delayed writes, so reads split heads and chunk framing at
// arbitrary places, and parses it the way the event loop does: one Parser
// and one ChunkedDecoder per connection, fed whatever each read returned.
func TestLoopbackStream(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 300) // 4800 bytes
	var stream bytes.Buffer
	stream.Write(browserGET)
	stream.WriteString("POST /upload HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
	var encoded bytes.Buffer
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 1000)
		encoded.WriteString(strconvHex(n) + ";part=x\r\n" + rest[:n] + "\r\n")
		rest = rest[n:]
	}
	encoded.WriteString("0\r\nX-Trailer: done\r\n\r\n")
	stream.Write(encoded.Bytes())
	stream.Write(wsUpgrade)
	want := stream.Bytes()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		c.(*net.TCPConn).SetNoDelay(true)
		for off, i := 0, 0; off < len(want); i++ {
			n := min(len(want)-off, 1+(i*37)%173)
			if _, err := c.Write(want[off : off+n]); err != nil {
				return
			}
			off += n
			if i%8 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))

	var (
		p       Parser
		req     Request
		dec     ChunkedDecoder
		in      []byte
		got     []string
		fwd     []byte // body bytes the proxy would forward, Skip or Feed alike
		inBody  bool
		reads   int
		readBuf = make([]byte, 512)
	)
	for len(got) < 3 && reads < 10000 {
		n, err := c.Read(readBuf)
		if err != nil {
			t.Fatalf("read after %d heads: %v", len(got), err)
		}
		reads++
		in = append(in, readBuf[:n]...)
		for progress := true; progress && len(got) < 3; {
			progress = false
			if inBody {
				if left := dec.DataLeft(); left > 0 {
					k := min(left, int64(len(in)))
					fwd = append(fwd, in[:k]...)
					dec.Skip(k)
					in = in[k:]
				}
				m, done, err := dec.Feed(in)
				if err != nil {
					t.Fatal(err)
				}
				fwd = append(fwd, in[:m]...)
				in = in[m:]
				if done {
					inBody, progress = false, true
					if !bytes.Equal(fwd, encoded.Bytes()) {
						t.Fatalf("forwarded body: %d bytes, want exactly the %d encoded", len(fwd), encoded.Len())
					}
				}
				continue
			}
			m, err := p.ParseRequest(in, &req)
			if errors.Is(err, ErrNeedMore) {
				continue
			}
			if err != nil {
				t.Fatalf("head %d: %v", len(got), err)
			}
			got = append(got, string(req.Method)+" "+string(req.Target)+" "+req.Framing.String())
			if req.Framing == FramingChunked {
				inBody = true
				dec.Reset()
			}
			in = in[m:]
			progress = true
		}
	}
	wantHeads := "GET /app/dashboard?tab=overview&sort=desc none|POST /upload chunked|GET /socket?room=42 none"
	if strings.Join(got, "|") != wantHeads {
		t.Fatalf("heads %q\nwant %q", strings.Join(got, "|"), wantHeads)
	}
	if reads < 10 {
		t.Fatalf("only %d reads: the stream was not split", reads)
	}
	if len(in) != 0 {
		t.Fatalf("%d bytes left over", len(in))
	}
}

func strconvHex(n int) string {
	const digits = "0123456789abcdef"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n >>= 4 {
		b = append([]byte{digits[n&15]}, b...)
	}
	return string(b)
}
