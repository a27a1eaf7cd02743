package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testDemo is a demo backend on a real loopback listener.
type testDemo struct {
	d      *demo
	srv    *httptest.Server
	addr   string // host:port
	cancel context.CancelFunc
}

func startDemo(t *testing.T, interval time.Duration) *testDemo {
	t.Helper()
	return startDemoRole(t, interval, roleAll)
}

func startDemoRole(t *testing.T, interval time.Duration, role string) *testDemo {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewUnstartedServer(nil)
	addr := srv.Listener.Addr().String()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d := newDemo(ctx, addr, interval, logger)
	d.role = role
	srv.Config.Handler = d.handler()
	srv.Start()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer wcancel()
		d.wait(wctx)
	})
	return &testDemo{d: d, srv: srv, addr: addr, cancel: cancel}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (td *testDemo) url(path string) string { return "http://" + td.addr + path }

// dialWS opens a WebSocket the way the page does: Origin is the origin it was served from.
func (td *testDemo) dialWS(t *testing.T, path string) *websocket.Conn {
	t.Helper()
	h := http.Header{"Origin": {"http://" + td.addr}}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+td.addr+path, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type tailFrame struct {
	Streams []struct {
		Stream map[string]string `json:"stream"`
		Values [][]string        `json:"values"`
	} `json:"streams"`
	DroppedEntries json.RawMessage `json:"dropped_entries"`
}

// readTail reads one frame and checks it has Loki's tail shape: one stream, one [ts, line] value.
func readTail(t *testing.T, c *websocket.Conn) (labels map[string]string, ts int64, line string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, p, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("reading tail frame: %v", err)
	}
	if mt != websocket.TextMessage {
		t.Fatalf("tail frame type %d, want text", mt)
	}
	var f tailFrame
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("tail frame %q: %v", p, err)
	}
	if string(f.DroppedEntries) != "null" {
		t.Fatalf("dropped_entries = %s, want null in %q", f.DroppedEntries, p)
	}
	if len(f.Streams) != 1 || len(f.Streams[0].Values) != 1 || len(f.Streams[0].Values[0]) != 2 {
		t.Fatalf("tail frame shape: %q", p)
	}
	v := f.Streams[0].Values[0]
	ts, err = strconv.ParseInt(v[0], 10, 64)
	if err != nil {
		t.Fatalf("timestamp %q is not integer nanoseconds: %v", v[0], err)
	}
	return f.Streams[0].Stream, ts, v[1]
}

func TestIndexPage(t *testing.T) {
	td := startDemo(t, time.Hour)
	resp, err := http.Get(td.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET / status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	if resp.ContentLength != int64(len(body)) || len(body) == 0 {
		t.Fatalf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
	}
	for _, want := range []string{
		"new WebSocket(url)",
		`location.host +`,
		`"/loki/api/v1/tail?query="`,
		`fetch("/api/headers"`,
		`id="status"`, `id="count"`, `id="pause"`, `id="sendform"`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Self-contained: nothing loaded from another origin.
	for _, bad := range []string{"<script src", `rel="stylesheet"`, `src="http`, `href="http`, "url(", "@import"} {
		if bytes.Contains(body, []byte(bad)) {
			t.Errorf("page references external resource (%q)", bad)
		}
	}
	// Unknown paths are 404, not the page.
	resp, err = http.Get(td.url("/nope"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("GET /nope status %d, want 404", resp.StatusCode)
	}
}

func TestTailStreamsLokiFormat(t *testing.T) {
	td := startDemo(t, 20*time.Millisecond)
	c := td.dialWS(t, `/loki/api/v1/tail?query=`+urlEscape(`{job="demo",env="dev", app=~"graf.*"}`)+`&limit=10`)
	before := time.Now().UnixNano()

	labels, _, hello := readTail(t, c)
	if labels["job"] != "demo" || labels["env"] != "dev" || len(labels) != 2 {
		t.Fatalf("hello labels %v, want job=demo env=dev only", labels)
	}
	for _, want := range []string{`msg="tail opened"`, `host="` + td.addr + `"`, `origin="http://` + td.addr + `"`, "seq=0"} {
		if !strings.Contains(hello, want) {
			t.Fatalf("hello line %q lacks %q", hello, want)
		}
	}
	var prevTS int64
	for seq := 1; seq <= 5; seq++ {
		labels, ts, line := readTail(t, c)
		if labels["job"] != "demo" || labels["source"] != "" {
			t.Fatalf("line %d labels %v", seq, labels)
		}
		if !strings.HasSuffix(line, " seq="+strconv.Itoa(seq)) || !strings.HasPrefix(line, "level=") {
			t.Fatalf("line %d = %q", seq, line)
		}
		if ts < before-int64(time.Second) || ts > time.Now().UnixNano() || ts < prevTS {
			t.Fatalf("line %d timestamp %d not a current, rising ns time (prev %d)", seq, ts, prevTS)
		}
		prevTS = ts
	}
}

func urlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func TestTailEchoesClientMessages(t *testing.T) {
	td := startDemo(t, 50*time.Millisecond)
	c := td.dialWS(t, `/loki/api/v1/tail?query=`+urlEscape(`{job="demo"}`))
	readTail(t, c) // hello
	msgs := []string{"hello through wsgate", `quotes " and \ and ünïcode`}
	for _, m := range msgs {
		if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	// Synthetic lines interleave with echoes; 100 frames is ample at one per 50ms.
	got := 0
	for i := 0; i < 100 && got < len(msgs); i++ {
		labels, _, line := readTail(t, c)
		if labels["source"] != "echo" {
			continue
		}
		if labels["job"] != "demo" {
			t.Fatalf("echo labels %v", labels)
		}
		want := `level=info msg="echo from client" text=` + strconv.Quote(msgs[got])
		if line != want {
			t.Fatalf("echo line %q, want %q", line, want)
		}
		got++
	}
	if got != len(msgs) {
		t.Fatalf("saw %d of %d echoes", got, len(msgs))
	}
}

func TestTailAnswersPing(t *testing.T) {
	td := startDemo(t, 20*time.Millisecond)
	c := td.dialWS(t, `/loki/api/v1/tail?query=`+urlEscape(`{job="demo"}`))
	pong := make(chan string, 1)
	c.SetPongHandler(func(data string) error {
		select {
		case pong <- data:
		default:
		}
		return nil
	})
	if err := c.WriteControl(websocket.PingMessage, []byte("are-you-there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Control frames are handled inside ReadMessage; keep reading lines until the pong arrives.
	for i := 0; i < 200; i++ {
		readTail(t, c)
		select {
		case p := <-pong:
			if p != "are-you-there" {
				t.Fatalf("pong payload %q", p)
			}
			return
		default:
		}
	}
	t.Fatal("no pong within 200 frames")
}

// rawUpgrade sends a hand-written upgrade request and returns the status line and the head.
func rawUpgrade(t *testing.T, addr, path, host, origin string) (string, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if origin != "" {
		req += "Origin: " + origin + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var head strings.Builder
	status := ""
	for i := 0; i < 64; i++ {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading response head: %v (so far %q)", err, head.String())
		}
		if status == "" {
			status = strings.TrimRight(line, "\r\n")
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	return status, head.String()
}

func TestOriginMustMatchHost(t *testing.T) {
	td := startDemo(t, time.Hour)
	const q = `/loki/api/v1/tail?query=%7Bjob%3D%22demo%22%7D`
	cases := []struct {
		name, path, host, origin, status string
	}{
		// What a browser sends through a proxy that preserves Host: accepted.
		{"preserved host", q, "127.0.0.1:8080", "http://127.0.0.1:8080", "HTTP/1.1 101 Switching Protocols"},
		// Through a proxy that rewrites Host to the backend: Grafana's 403.
		{"rewritten host", q, "127.0.0.1:3000", "http://127.0.0.1:8080", "HTTP/1.1 403 Forbidden"},
		{"case-insensitive", q, "Grafana.Example:8080", "http://grafana.example:8080", "HTTP/1.1 101 Switching Protocols"},
		{"bad origin", q, "127.0.0.1:8080", "::not a url", "HTTP/1.1 403 Forbidden"},
		{"no origin (logcli)", q, "127.0.0.1:3000", "", "HTTP/1.1 101 Switching Protocols"},
		{"live rewritten host", "/api/live/ws", "127.0.0.1:3000", "http://127.0.0.1:8080", "HTTP/1.1 403 Forbidden"},
		{"live preserved host", "/api/live/ws", "127.0.0.1:8080", "http://127.0.0.1:8080", "HTTP/1.1 101 Switching Protocols"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, head := rawUpgrade(t, td.addr, tc.path, tc.host, tc.origin)
			if status != tc.status {
				t.Fatalf("status %q, want %q\n%s", status, tc.status, head)
			}
			if strings.Contains(tc.status, "101") && !strings.Contains(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") {
				t.Fatalf("101 without the RFC 6455 accept value:\n%s", head)
			}
		})
	}

	// The gorilla client sees the refusal as a failed handshake with the 403 body.
	h := http.Header{"Origin": {"http://evil.example"}}
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+td.addr+q, h)
	if err != websocket.ErrBadHandshake || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("cross-origin dial: err %v resp %v", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `origin "http://evil.example" not allowed for host "`+td.addr+`"`) {
		t.Fatalf("403 body %q", body)
	}
}

func TestTailRequiresQuery(t *testing.T) {
	td := startDemo(t, time.Hour)
	status, head := rawUpgrade(t, td.addr, "/loki/api/v1/tail", td.addr, "http://"+td.addr)
	if status != "HTTP/1.1 400 Bad Request" {
		t.Fatalf("status %q\n%s", status, head)
	}
}

func TestLiveEcho(t *testing.T) {
	td := startDemo(t, time.Hour)
	c := td.dialWS(t, "/api/live/ws")
	sizes := []int{1, 125, 126, 65535, 65536, 1 << 20}
	if testing.Short() {
		sizes = sizes[:5]
	}
	for _, size := range sizes {
		for _, mt := range []int{websocket.TextMessage, websocket.BinaryMessage} {
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = 'a' + byte((i*7+size)%26)
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			gt, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("size %d type %d: %v", size, mt, err)
			}
			if gt != mt || !bytes.Equal(got, msg) {
				t.Fatalf("size %d type %d: echoed type %d, %d bytes, equal=%v", size, mt, gt, len(got), bytes.Equal(got, msg))
			}
		}
	}
	// A close started by the client is answered with a close.
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after client close: %v", err)
	}
}

func TestShutdownClosesSockets(t *testing.T) {
	td := startDemo(t, 20*time.Millisecond)
	tail := td.dialWS(t, `/loki/api/v1/tail?query=`+urlEscape(`{job="demo"}`))
	live := td.dialWS(t, "/api/live/ws")
	readTail(t, tail)
	td.cancel()
	for name, c := range map[string]*websocket.Conn{"tail": tail, "live": live} {
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err = c.ReadMessage()
		}
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("%s after shutdown: %v, want close 1001", name, err)
		}
	}
}

func TestHeadersReflectsRequest(t *testing.T) {
	td := startDemo(t, time.Hour)
	req, err := http.NewRequest("GET", td.url("/api/headers?x=1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "grafana.example:8080"
	req.Header.Set("X-Forwarded-For", "203.0.113.7, 127.0.0.1")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc headersDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Method != "GET" || doc.URI != "/api/headers?x=1" || doc.Proto != "HTTP/1.1" || doc.Host != "grafana.example:8080" {
		t.Fatalf("doc %+v", doc)
	}
	if host, _, err := net.SplitHostPort(doc.RemoteAddr); err != nil || host != "127.0.0.1" {
		t.Fatalf("remote_addr %q", doc.RemoteAddr)
	}
	if got := doc.Headers["X-Forwarded-For"]; len(got) != 1 || got[0] != "203.0.113.7, 127.0.0.1" {
		t.Fatalf("X-Forwarded-For %q", got)
	}
	if got := doc.Headers["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "https" {
		t.Fatalf("X-Forwarded-Proto %q", got)
	}
	if got := doc.Headers["X-Multi"]; len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Fatalf("X-Multi %q", got)
	}
}

func TestHealth(t *testing.T) {
	td := startDemo(t, time.Hour)
	resp, err := http.Get(td.url("/api/health"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc healthDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || doc.Database != "ok" || doc.Version != "wsgate-demo" || doc.UptimeSeconds < 0 {
		t.Fatalf("status %d doc %+v", resp.StatusCode, doc)
	}
}

func TestRedirectNamesBackend(t *testing.T) {
	td := startDemo(t, time.Hour)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ query, status, location string }{
		{"", "302 Found", "http://" + td.addr + "/"},
		{"?to=/api/health", "302 Found", "http://" + td.addr + "/api/health"},
		{"?to=//evil.example/", "400 Bad Request", ""},
		{"?to=http://evil.example/", "400 Bad Request", ""},
	} {
		resp, err := client.Get(td.url("/api/redirect" + tc.query))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Status != tc.status || resp.Header.Get("Location") != tc.location {
			t.Fatalf("%q: %s Location %q, want %s %q", tc.query, resp.Status, resp.Header.Get("Location"), tc.status, tc.location)
		}
	}
}

func TestBigExactBytes(t *testing.T) {
	td := startDemo(t, time.Hour)
	sizes := []int64{0, 1, 250, 251, 252, int64(len(bigPattern)) - 1, int64(len(bigPattern)), int64(len(bigPattern)) + 1, 3<<20 + 17}
	for _, n := range sizes {
		resp, err := http.Get(td.url("/api/big?bytes=" + strconv.FormatInt(n, 10)))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("bytes=%d: %v", n, err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != strconv.FormatInt(n, 10) || int64(len(body)) != n {
			t.Fatalf("bytes=%d: status %d Content-Length %q body %d", n, resp.StatusCode, resp.Header.Get("Content-Length"), len(body))
		}
		for i, b := range body {
			if b != bigByte(int64(i)) {
				t.Fatalf("bytes=%d: byte %d = %d, want %d", n, i, b, bigByte(int64(i)))
			}
		}
	}
	// Default size and HEAD.
	resp, err := http.Head(td.url("/api/big"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ContentLength != 1<<20 {
		t.Fatalf("HEAD default Content-Length %d", resp.ContentLength)
	}
	for _, bad := range []string{"-1", "x", "1e3", strconv.FormatInt(maxBigBytes+1, 10)} {
		resp, err := http.Get(td.url("/api/big?bytes=" + bad))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("bytes=%s: status %d, want 400", bad, resp.StatusCode)
		}
	}
}

func TestEchoStreamsBody(t *testing.T) {
	td := startDemo(t, time.Hour)

	// Streaming: the first piece must come back before the rest of the body is sent.
	pr, pw := io.Pipe()
	req, err := http.NewRequest("POST", td.url("/api/echo"), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/plain")
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		done <- result{resp, err}
	}()
	first := []byte("first piece;")
	if _, err := pw.Write(first); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("no response head while the body is still open: echo is not streaming")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.resp.Body.Close()
	if r.resp.StatusCode != 200 || len(r.resp.TransferEncoding) != 1 || r.resp.TransferEncoding[0] != "chunked" ||
		r.resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("status %d TE %v type %q", r.resp.StatusCode, r.resp.TransferEncoding, r.resp.Header.Get("Content-Type"))
	}
	got := make([]byte, len(first))
	readDone := make(chan error, 1)
	go func() { _, err := io.ReadFull(r.resp.Body, got); readDone <- err }()
	select {
	case err := <-readDone:
		if err != nil || !bytes.Equal(got, first) {
			t.Fatalf("first piece: %q, %v", got, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first piece not echoed while the body is still open")
	}

	// The rest: 1 MiB in uneven writes, then trailers carry count and digest.
	rest := make([]byte, 1<<20)
	for i := range rest {
		rest[i] = byte(i * 31)
	}
	go func() {
		for off := 0; off < len(rest); off += 7777 {
			end := min(off+7777, len(rest))
			if _, err := pw.Write(rest[off:end]); err != nil {
				return
			}
		}
		pw.Close()
	}()
	tail, err := io.ReadAll(r.resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tail, rest) {
		t.Fatalf("echoed %d bytes, want %d identical", len(tail), len(rest))
	}
	all := append(append([]byte{}, first...), rest...)
	sum := sha256.Sum256(all)
	if got := r.resp.Trailer.Get("X-Echo-Bytes"); got != strconv.Itoa(len(all)) {
		t.Fatalf("X-Echo-Bytes trailer %q, want %d", got, len(all))
	}
	if got := r.resp.Trailer.Get("X-Echo-Sha256"); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("X-Echo-Sha256 trailer %q", got)
	}

	// Empty body.
	resp, err := http.Post(td.url("/api/echo"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(body) != 0 || resp.Trailer.Get("X-Echo-Bytes") != "0" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("empty echo: %q trailers %v type %q", body, resp.Trailer, resp.Header.Get("Content-Type"))
	}
}

func TestLabelsFromQuery(t *testing.T) {
	for _, tc := range []struct {
		q    string
		want map[string]string
	}{
		{`{job="demo"}`, map[string]string{"job": "demo"}},
		{`{}`, map[string]string{"job": "demo"}},
		{`{job="api", env = "prod"} |= "error"`, map[string]string{"job": "api", "env": "prod"}},
		{`{app=~"graf.*", team!="x", ns!~"y", pod="p\"q"}`, map[string]string{"job": "demo", "pod": `p"q`}},
		{`{a="1"} | line_format "{{.b=\"2\"}}"`, map[string]string{"job": "demo", "a": "1"}},
	} {
		got := labelsFromQuery(tc.q)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("labelsFromQuery(%q) = %v, want %v", tc.q, got, tc.want)
		}
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-interval", "0"}, {"-interval", "soon"}, {"-nope"}, {"extra"}, {"-log-level", "loud"}} {
		var out bytes.Buffer
		if code := run(args, &out); code != 2 {
			t.Errorf("run(%q) = %d, want 2 (output %q)", args, code, out.String())
		}
		if out.Len() == 0 {
			t.Errorf("run(%q) said nothing", args)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"-h"}, &out); code != 0 || !strings.Contains(out.String(), "-listen") {
		t.Errorf("-h: code %d output %q", code, out.String())
	}
	// A busy port is a runtime failure (1) with a message naming the address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out.Reset()
	if code := run([]string{"-listen", ln.Addr().String()}, &out); code != 1 || !strings.Contains(out.String(), ln.Addr().String()) {
		t.Errorf("busy port: code %d output %q", code, out.String())
	}
}

func TestSlowAnswersLate(t *testing.T) {
	td := startDemo(t, time.Hour)
	start := time.Now()
	resp, err := http.Get(td.url("/api/slow?ms=150"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Fatalf("answered after %v, want >= 150ms", took)
	}
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "{\n  \"slept_ms\": 150\n}" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	for _, bad := range []string{"-1", "x", "60001"} {
		resp, err := http.Get(td.url("/api/slow?ms=" + bad))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("ms=%s: status %d, want 400", bad, resp.StatusCode)
		}
	}
}

// The Origin check folds case in ASCII only: a Kelvin sign (U+212A) is not a k.
func TestSameOriginFoldsASCIIOnly(t *testing.T) {
	for _, tc := range []struct {
		origin, host string
		want         bool
	}{
		{"http://Grafana.Example:8080", "grafana.example:8080", true},
		{"http://\u212aeep.example", "keep.example", false},
		{"http://keep.example", "keep.example.", false},
	} {
		r := httptest.NewRequest("GET", "/loki/api/v1/tail", nil)
		r.Host = tc.host
		r.Header.Set("Origin", tc.origin)
		if got := sameOrigin(r); got != tc.want {
			t.Errorf("sameOrigin(Origin %q, Host %q) = %v, want %v", tc.origin, tc.host, got, tc.want)
		}
	}
}

// The roles split the endpoints the way Grafana and Loki split them; every answer names the
// process, and the tail's first line does too.
func TestRoles(t *testing.T) {
	g := startDemoRole(t, 50*time.Millisecond, roleGrafana)
	l := startDemoRole(t, 50*time.Millisecond, roleLoki)
	for _, c := range []struct {
		td     *testDemo
		path   string
		status int
		server string
	}{
		{g, "/", 200, "grafana-like demo on " + g.addr},
		{g, "/api/headers", 200, "grafana-like demo on " + g.addr},
		{g, "/loki/api/v1/labels", 404, "grafana-like demo on " + g.addr},
		{g, "/ready", 404, "grafana-like demo on " + g.addr},
		{l, "/loki/api/v1/labels", 200, "loki-like demo on " + l.addr},
		{l, "/ready", 200, "loki-like demo on " + l.addr},
		{l, "/", 404, "loki-like demo on " + l.addr},
		{l, "/api/health", 404, "loki-like demo on " + l.addr},
	} {
		resp, err := http.Get(c.td.url(c.path))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("X-Demo-Server") != c.server {
			t.Errorf("%s on %s: %d, X-Demo-Server %q, want %d and %q (%s)", c.path, c.td.d.role, resp.StatusCode,
				resp.Header.Get("X-Demo-Server"), c.status, c.server, body)
		}
	}
	h := http.Header{"Origin": {"http://" + l.addr}}
	c, _, err := websocket.DefaultDialer.Dial("ws://"+l.addr+"/loki/api/v1/tail?query=%7Bjob%3D%22demo%22%7D", h)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, msg, err := c.ReadMessage()
	if err != nil || !strings.Contains(string(msg), `server=\"loki-like demo on `+l.addr+`\"`) {
		t.Fatalf("first tail line %s, %v: want the server named", msg, err)
	}
}
