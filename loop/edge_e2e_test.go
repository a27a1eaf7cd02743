package loop_test

// Framing edge cases where proxies classically desynchronise from their peers (RFC 9112 §6).

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestE2EHTTPContentLengthAndChunked: a request with both Content-Length and Transfer-Encoding is
// either refused (400) or forwarded with the Content-Length removed (RFC 9112 §6.3: TE wins, and an
// intermediary must not pass both on, or a backend that trusts Content-Length desyncs).
func TestE2EHTTPContentLengthAndChunked(t *testing.T) {
	t.Parallel()
	heads := make(chan http.Header, 4)
	be := newRawBackend(t, func(p *rawPeer) {
		heads <- p.Req.Header.Clone()
		io.Copy(io.Discard, p.Req.Body)
		io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.send(t, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	resp, _ := c.fullResponse(t, "POST")
	switch resp.StatusCode {
	case 400:
		if be.Accepted.Load() != 0 {
			t.Errorf("refused with 400 but the backend was still contacted")
		}
	case 200:
		select {
		case h := <-heads:
			if h.Get("Content-Length") != "" {
				t.Errorf("backend got Content-Length %q next to Transfer-Encoding %q: request smuggling vector",
					h.Get("Content-Length"), h.Get("Transfer-Encoding"))
			}
		case <-time.After(3 * time.Second):
			t.Fatal("backend head not seen")
		}
	default:
		t.Errorf("status %d, want 400 or the request forwarded without Content-Length", resp.StatusCode)
	}
}

// TestE2EHTTPResponseFraming: answers whose framing an HTTP/1.1 client must not misread.
func TestE2EHTTPResponseFraming(t *testing.T) {
	t.Parallel()
	body := string(textBytes(61, 5000))
	t.Run("cl-and-chunked", func(t *testing.T) {
		be := newRawBackend(t, func(p *rawPeer) {
			io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"5\r\nhello\r\n0\r\n\r\n")
			<-p.Done
		})
		_, addr := startProxy(t, be.Addr)
		c := dialRaw(t, addr)
		c.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, b := c.fullResponse(t, "GET")
		if resp.StatusCode == 502 {
			return // refusing an ambiguous answer is fine
		}
		if string(b) != "hello" || resp.Header.Get("Content-Length") != "" {
			t.Errorf("status %d body %q Content-Length %q: an ambiguous answer reached the client with both framings",
				resp.StatusCode, b, resp.Header.Get("Content-Length"))
		}
	})
	t.Run("http1.0-close-delimited", func(t *testing.T) {
		be := newRawBackend(t, func(p *rawPeer) {
			io.WriteString(p.Conn, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"+body)
		})
		_, addr := startProxy(t, be.Addr)
		c := dialRaw(t, addr)
		c.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, b := c.fullResponse(t, "GET")
		if resp.StatusCode != 200 || string(b) != body {
			t.Fatalf("status %d, %d of %d body bytes", resp.StatusCode, len(b), len(body))
		}
		if resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 && !resp.Close {
			t.Errorf("close-delimited body relayed without Connection: close")
		}
		if len(resp.TransferEncoding) == 0 && resp.ContentLength < 0 {
			c.expectClosed(t, 3*time.Second) // the only end of such a body is the close
		}
	})
	t.Run("http1.0-client-chunked-backend", func(t *testing.T) {
		be := newBackend(t, http.HandlerFunc(dataHandler))
		_, addr := startProxy(t, be.Addr)
		c := dialRaw(t, addr)
		c.send(t, "GET /data?n=5000&seed=61&mode=chunked HTTP/1.0\r\nHost: a\r\n\r\n")
		resp := c.response(t, "GET")
		if len(resp.TransferEncoding) > 0 {
			t.Fatalf("HTTP/1.0 client got Transfer-Encoding %v: it cannot decode chunked", resp.TransferEncoding)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || sumOf(b) != genSum(61, 5000) {
			t.Fatalf("HTTP/1.0 client: status %d, %d bytes, err %v", resp.StatusCode, len(b), err)
		}
		c.expectClosed(t, 3*time.Second)
	})
}

// TestE2ETunnel101ToPlainRequest: a backend switching protocols on a request that asked for no
// upgrade is not tunnelled (it would turn the client conn into a raw pipe the client never asked for).
func TestE2ETunnel101ToPlainRequest(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(p *rawPeer) {
		io.WriteString(p.Conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW")
		<-p.Done
	})
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, _ := c.fullResponse(t, "GET")
	if resp.StatusCode != 502 {
		t.Fatalf("101 to a plain GET: status %d, want 502", resp.StatusCode)
	}
	if rest := c.expectClosed(t, 3*time.Second); strings.Contains(string(rest), "RAW") {
		t.Errorf("bytes from behind the unrequested 101 reached the client: %q", rest)
	}
}
