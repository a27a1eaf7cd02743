package loop_test

// End-to-end checks, through real sockets, for the head-level smuggling and spoofing classes of
// issue 8: Connection options naming framing fields, field names outside [A-Za-z0-9-], one
// Content-Length value, absolute-form targets, ASCII-only folding, and failing fast on a head that
// is already invalid. The backend records every byte it receives, so the tests assert what
// reached it, not only what the client saw.

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/loop"
)

// captureBackend answers every request with answer(req) and keeps the raw bytes it read.
type captureBackend struct {
	Addr     string
	Accepted atomic.Int64
	Requests atomic.Int64
	mu       sync.Mutex
	raw      bytes.Buffer
}

func (b *captureBackend) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.raw.Write(p)
}

func (b *captureBackend) bytes() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.raw.String()
}

func newCaptureBackend(t *testing.T, answer func(r *http.Request, body []byte) string) *captureBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("capture backend listen: %v", err)
	}
	b := &captureBackend{Addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.Accepted.Add(1)
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				br := bufio.NewReader(io.TeeReader(c, b))
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, err := io.ReadAll(req.Body)
					if err != nil {
						return
					}
					b.Requests.Add(1)
					if _, err := io.WriteString(c, answer(req, body)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	return b
}

func answerOK(*http.Request, []byte) string {
	return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
}

// A request whose Connection field names a framing field is refused before anything reaches the
// backend: obeying it would have turned the body (itself a request, with its own Host) into a
// second, unparsed request on the backend connection.
func TestE2EConnectionNamingFramingIsRefused(t *testing.T) {
	be := newCaptureBackend(t, answerOK)
	_, addr := startProxy(t, be.Addr)
	smuggled := "GET /admin HTTP/1.1\r\nHost: internal\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"
	for _, head := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nConnection: host\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n",
	} {
		c := dialRaw(t, addr)
		c.send(t, head+smuggled)
		resp, body := c.fullResponse(t, "POST")
		if resp.StatusCode != 400 || !resp.Close || !strings.Contains(string(body), "Connection names") {
			t.Fatalf("%q: got %d close=%v body %q, want 400 naming the Connection rule", head, resp.StatusCode, resp.Close, body)
		}
		c.expectClosed(t, 10*time.Second)
	}
	if n := be.Accepted.Load(); n != 0 {
		t.Fatalf("backend accepted %d connections (saw %q)", n, be.bytes())
	}
}

// The same rule for a backend's answer: the client gets 502, not a response it would frame
// differently from us.
func TestE2EResponseConnectionNamingFramingIs502(t *testing.T) {
	be := newCaptureBackend(t, func(*http.Request, []byte) string {
		return "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\nabc"
	})
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := c.fullResponse(t, "GET"); resp.StatusCode != 502 {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
}

// X_Forwarded_For is X-Forwarded-For to a CGI/WSGI backend: by default such fields never reach
// it, and with -header-names=reject the request is refused.
func TestE2EOddHeaderNames(t *testing.T) {
	be := newCaptureBackend(t, func(r *http.Request, _ []byte) string {
		xff := r.Header.Get("X-Forwarded-For")
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(xff)) + "\r\n\r\n" + xff
	})
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\nX.Real.IP: 1.2.3.4\r\nTransfer_Encoding: chunked\r\n\r\n")
	resp, body := c.fullResponse(t, "GET")
	if resp.StatusCode != 200 || string(body) != "127.0.0.1" {
		t.Fatalf("got %d, backend saw X-Forwarded-For %q, want only the client address", resp.StatusCode, body)
	}
	raw := be.bytes()
	for _, bad := range []string{"X_Forwarded_For", "X.Real.IP", "Transfer_Encoding", "1.2.3.4"} {
		if strings.Contains(raw, bad) {
			t.Fatalf("%q reached the backend: %q", bad, raw)
		}
	}
	c.expectQuiet(t, 200*time.Millisecond)

	strict := newCaptureBackend(t, answerOK)
	_, saddr := startProxy(t, strict.Addr, func(cfg *loop.Config) { cfg.HeaderNames = loop.HeaderNamesReject })
	c = dialRaw(t, saddr)
	c.send(t, "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n")
	resp, body = c.fullResponse(t, "GET")
	if resp.StatusCode != 400 || !strings.Contains(string(body), "field name") {
		t.Fatalf("reject: got %d %q", resp.StatusCode, body)
	}
	c = dialRaw(t, saddr)
	c.send(t, "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
	if resp, _ := c.fullResponse(t, "GET"); resp.StatusCode != 200 {
		t.Fatalf("reject policy refused a plain request: %d", resp.StatusCode)
	}
	if n := strict.Requests.Load(); n != 1 {
		t.Fatalf("backend saw %d requests, want only the plain one", n)
	}
}

// Content-Length: 5, 5 reaches the backend as one value; what follows the five bytes is the next
// request on the client connection, never part of this one.
func TestE2EContentLengthListIsOneValue(t *testing.T) {
	be := newCaptureBackend(t, func(r *http.Request, body []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body)
	})
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.send(t, "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []string{"hello", ""} {
		if resp, body := c.fullResponse(t, "POST"); resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	raw := be.bytes()
	if !strings.Contains(raw, "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n") || strings.Count(raw, "Content-Length") != 1 ||
		strings.Contains(strings.ToLower(raw), "5, 5") {
		t.Fatalf("backend saw %q, want exactly one Content-Length: 5", raw)
	}
}

// Absolute-form targets reach the backend in origin-form, with the authority as Host, including
// the empty-path and query-only forms.
func TestE2EAbsoluteFormTargets(t *testing.T) {
	be := newCaptureBackend(t, answerOK)
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	for _, req := range []string{
		"GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET http://h:1234 HTTP/1.1\r\nHost: h:1234\r\n\r\n",
		"GET HTTPS://[::1]:8443/a?b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	} {
		c.send(t, req)
		if resp, _ := c.fullResponse(t, "GET"); resp.StatusCode != 200 {
			t.Fatalf("%q: status %d", req, resp.StatusCode)
		}
	}
	raw := be.bytes()
	for _, want := range []string{"GET /?q HTTP/1.1\r\nHost: h\r\n", "GET / HTTP/1.1\r\nHost: h:1234\r\n", "GET /a?b HTTP/1.0\r\nHost: [::1]:8443\r\n"} {
		if !strings.Contains(raw, want) {
			t.Fatalf("backend did not see %q in %q", want, raw)
		}
	}
	// userinfo and a Host that names someone else are refused, with nothing forwarded.
	before := be.Requests.Load()
	for _, req := range []string{"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", "GET http://h/ HTTP/1.1\r\nHost: other\r\n\r\n"} {
		c := dialRaw(t, addr)
		c.send(t, req)
		if resp, _ := c.fullResponse(t, "GET"); resp.StatusCode != 400 {
			t.Fatalf("%q: status %d, want 400", req, resp.StatusCode)
		}
	}
	if n := be.Requests.Load(); n != before {
		t.Fatalf("refused targets reached the backend")
	}
}

// A Unicode lookalike of a token is not that token: Kelvin-sign keep-alive does not keep an
// HTTP/1.0 connection open, and a Connection option spelled with it does not remove X-Key.
func TestE2EUnicodeLookalikesAreNotTokens(t *testing.T) {
	be := newCaptureBackend(t, func(r *http.Request, _ []byte) string {
		v := r.Header.Get("X-Key") + "|" + r.Header.Get("Upgrade")
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(v)) + "\r\n\r\n" + v
	})
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.send(t, "GET / HTTP/1.0\r\nConnection: \u212aeep-alive, x-\u212aey\r\nX-Key: v\r\n\r\n")
	resp, body := c.fullResponse(t, "GET")
	if resp.StatusCode != 200 || string(body) != "v|" || !resp.Close {
		t.Fatalf("got %d %q close=%v, want 200 \"v|\" and the HTTP/1.0 connection closed", resp.StatusCode, body, resp.Close)
	}
	c.expectClosed(t, 10*time.Second)

	c = dialRaw(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websoc\u212aet\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, body = c.fullResponse(t, "GET")
	if resp.StatusCode != 200 || string(body) != "|" {
		t.Fatalf("lookalike upgrade: got %d %q, want a plain 200 without Upgrade", resp.StatusCode, body)
	}
}

// An invalid head sent without its blank line is answered as soon as the offending byte is in,
// not at -header-timeout (60 s here): the client sees 400, never 408.
func TestE2EInvalidHeadIsAnsweredAtOnce(t *testing.T) {
	be := newCaptureBackend(t, answerOK)
	const timeout = 60 * time.Second
	_, addr := startProxy(t, be.Addr, func(cfg *loop.Config) { cfg.HeaderTimeout = timeout })
	for _, head := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb",
		"GET / HTTP/1.1\r\nHost: a\r\nX(y",
		"GET / HTTP/1.1\r\nHost: a\r\nX-A : b",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00",
		"GET /a b",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded",
	} {
		c := dialRaw(t, addr)
		start := time.Now()
		c.send(t, head)
		resp, body := c.fullResponse(t, "GET")
		if elapsed := time.Since(start); resp.StatusCode != 400 || elapsed > timeout/4 {
			t.Fatalf("%q: got %d %q after %v, want 400 well before the %v head timeout", head, resp.StatusCode, body, elapsed, timeout)
		}
		c.expectClosed(t, 10*time.Second)
	}
	if n := be.Accepted.Load(); n != 0 {
		t.Fatalf("backend accepted %d connections", n)
	}
}

// The Content-Length of an answer to HEAD describes the representation: the client gets exactly
// the backend's value (one value however it was spelled) and no body; a 204 never carries one.
func TestE2EBodilessAnswersKeepDeclaredLength(t *testing.T) {
	be := newCaptureBackend(t, func(r *http.Request, _ []byte) string {
		if r.Method == "HEAD" {
			return "HTTP/1.1 200 OK\r\nContent-Length: 100, 100\r\n\r\n"
		}
		return "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
	})
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.send(t, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, _ := c.fullResponse(t, "HEAD")
	if resp.StatusCode != 200 || strings.Join(resp.Header["Content-Length"], "|") != "100" {
		t.Fatalf("HEAD: %d Content-Length %q, want 100", resp.StatusCode, resp.Header["Content-Length"])
	}
	resp, _ = c.fullResponse(t, "GET")
	if resp.StatusCode != 204 || resp.Header["Content-Length"] != nil {
		t.Fatalf("204: Content-Length %q relayed", resp.Header["Content-Length"])
	}
	c.expectQuiet(t, 200*time.Millisecond)
}
