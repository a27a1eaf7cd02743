package httpparse_test

import (
	"errors"
	"fmt"

	"github.com/wsgate/wsgate/httpparse"
)

// conn is the per-connection state an event loop keeps: an inbound buffer
// and the parser state, no goroutine.
type conn struct {
	in     []byte
	p      httpparse.Parser
	req    httpparse.Request
	body   httpparse.ChunkedDecoder
	inBody bool
}

// onTraffic runs whenever the socket has produced more bytes.
func (c *conn) onTraffic(data []byte) {
	c.in = append(c.in, data...)
	if !c.inBody {
		n, err := c.p.ParseRequest(c.in, &c.req)
		if errors.Is(err, httpparse.ErrNeedMore) {
			fmt.Printf("need more (%d bytes buffered)\n", len(c.in))
			return
		}
		if err != nil {
			fmt.Printf("answer %d and close: %v\n", httpparse.StatusOf(err), err)
			return
		}
		// c.req's slices point into c.in: forward or copy what is needed
		// before the buffer is reused.
		fmt.Printf("head: %s %s host=%s framing=%v keep-alive=%v (%d bytes)\n",
			c.req.Method, c.req.Target, c.req.Host, c.req.Framing, c.req.KeepAlive, n)
		c.in = c.in[n:]
		if c.req.Framing != httpparse.FramingChunked {
			return
		}
		c.inBody = true
		c.body.Reset()
	}
	n, done, err := c.body.Feed(c.in)
	if err != nil {
		fmt.Printf("bad body: answer %d\n", httpparse.StatusOf(err))
		return
	}
	fmt.Printf("body: forward %d bytes, done=%v\n", n, done)
	c.in = c.in[n:]
	if done {
		c.inBody = false
		fmt.Printf("left for the next request: %q\n", c.in)
	}
}

// Example shows the intended use by an event loop: bytes arrive in pieces,
// ParseRequest says ErrNeedMore until the head is complete, then the chunked
// body is tracked by a ChunkedDecoder without copying it.
func Example() {
	var c conn
	for _, read := range []string{
		"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransf",
		"er-Encoding: chunked\r\n",
		"\r\n5\r\nhel",
		"lo\r\n0\r\n\r\nGET /next HTTP/1.1\r\n",
	} {
		c.onTraffic([]byte(read))
	}
	// Output:
	// need more (48 bytes buffered)
	// need more (70 bytes buffered)
	// head: POST /upload host=example.com framing=chunked keep-alive=true (72 bytes)
	// body: forward 6 bytes, done=false
	// body: forward 9 bytes, done=true
	// left for the next request: "GET /next HTTP/1.1\r\n"
}

// ExampleAppendAccept answers a WebSocket handshake without allocating.
func ExampleAppendAccept() {
	var p httpparse.Parser
	var req httpparse.Request
	head := []byte("GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n" +
		"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\n\r\n")
	if _, err := p.ParseRequest(head, &req); err != nil {
		panic(err)
	}
	if err := httpparse.CheckWebSocketRequest(&req); err != nil {
		fmt.Println("answer", httpparse.StatusOf(err))
		return
	}
	out := make([]byte, 0, 128)
	out = append(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	out = httpparse.AppendAccept(out, req.Header("Sec-WebSocket-Key"))
	out = append(out, "\r\n\r\n"...)
	fmt.Printf("%q\n", out)
	// Output:
	// "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
}
