package loop

import (
	"testing"

	"github.com/wsgate/wsgate/httpparse"
)

func parseReq(t testing.TB, raw string) *httpparse.Request {
	t.Helper()
	var p httpparse.Parser
	req := new(httpparse.Request)
	n, err := p.ParseRequest([]byte(raw), req)
	if err != nil || n != len(raw) {
		t.Fatalf("ParseRequest(%q) = %d, %v", raw, n, err)
	}
	return req
}

func parseResp(t testing.TB, raw string) *httpparse.Response {
	t.Helper()
	var p httpparse.Parser
	resp := new(httpparse.Response)
	n, err := p.ParseResponse([]byte(raw), resp, false)
	if err != nil || n != len(raw) {
		t.Fatalf("ParseResponse(%q) = %d, %v", raw, n, err)
	}
	return resp
}

func TestRequestHeadRewrite(t *testing.T) {
	be := []byte("127.0.0.1:3000")
	ip := []byte("10.1.2.3")
	cases := []struct {
		name string
		in   string
		o    reqHeadOpts
		want string
	}{
		{
			name: "hop-by-hop and Connection-named fields dropped, XFF appended",
			in: "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n" +
				"X-Secret: s\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nAccept: */*\r\n" +
				"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
			o: reqHeadOpts{backendHost: be, clientIP: ip, preserveHost: true, forwarded: true},
			want: "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n" +
				"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.1.2.3\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n\r\n",
		},
		{
			name: "Host replaced when not preserved; forwarded fields untouched when disabled",
			in:   "POST /p HTTP/1.1\r\nhost: example.com:8080\r\nContent-Length: 3\r\nX-Forwarded-For: 9.9.9.9\r\n\r\n",
			o:    reqHeadOpts{backendHost: be, clientIP: ip},
			want: "POST /p HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nContent-Length: 3\r\nX-Forwarded-For: 9.9.9.9\r\n\r\n",
		},
		{
			name: "absolute-form becomes origin-form and its authority the Host",
			in:   "GET http://Other.example:81?q HTTP/1.1\r\nHost: Other.example:81\r\n\r\n",
			o:    reqHeadOpts{backendHost: be, clientIP: ip, preserveHost: true, forwarded: true},
			want: "GET /?q HTTP/1.1\r\nHost: Other.example:81\r\n" +
				"X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: Other.example:81\r\n\r\n",
		},
		{
			name: "websocket keeps the upgrade, drops the rest",
			in: "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nKeep-Alive: 1\r\n\r\n",
			o: reqHeadOpts{backendHost: be, clientIP: ip, preserveHost: true, websocket: true},
			want: "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
				"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		},
		{
			name: "HTTP/1.0 without Host gets the backend address",
			in:   "GET / HTTP/1.0\r\n\r\n",
			o:    reqHeadOpts{backendHost: be, clientIP: ip, preserveHost: true, forwarded: true},
			want: "GET / HTTP/1.0\r\nHost: 127.0.0.1:3000\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendRequestHead(nil, parseReq(t, tc.in), &tc.o))
			if got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestResponseHeadRewrite(t *testing.T) {
	be := []byte("127.0.0.1:3000")
	in := "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:3000/login?next=%2F\r\nContent-Location: HTTP://127.0.0.1:3000\r\n" +
		"Link: <http://127.0.0.1:3000/x>\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\nTrailer: X-Sum\r\nContent-Length: 0\r\n\r\n"
	cases := []struct {
		name string
		o    respHeadOpts
		want string
	}{
		{"keep-alive", respHeadOpts{backendHost: be, clientHost: []byte("proxy.example")},
			"HTTP/1.1 302 Found\r\nLocation: http://proxy.example/login?next=%2F\r\nContent-Location: http://proxy.example\r\n" +
				"Link: <http://127.0.0.1:3000/x>\r\nTrailer: X-Sum\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"},
		{"close, no client host", respHeadOpts{backendHost: be, close: true},
			"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:3000/login?next=%2F\r\nContent-Location: HTTP://127.0.0.1:3000\r\n" +
				"Link: <http://127.0.0.1:3000/x>\r\nTrailer: X-Sum\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendResponseHead(nil, parseResp(t, in), &tc.o))
			if got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
	// A host that merely starts like the backend's is someone else.
	other := parseResp(t, "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:30001/x\r\nContent-Length: 0\r\n\r\n")
	got := string(appendResponseHead(nil, other, &respHeadOpts{backendHost: be, clientHost: []byte("p")}))
	want := "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:30001/x\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
	if got != want {
		t.Errorf("got %q want %q", got, want)
	}
	ws := parseResp(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
	got = string(appendResponseHead(nil, ws, &respHeadOpts{websocket: true}))
	want = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	if got != want {
		t.Errorf("101: got %q want %q", got, want)
	}
	early := parseResp(t, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
	got = string(appendResponseHead(nil, early, &respHeadOpts{interim: true}))
	want = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
	if got != want {
		t.Errorf("103: got %q want %q", got, want)
	}
}

func TestHeadRewriteAllocs(t *testing.T) {
	req := parseReq(t, "GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nAccept: */*\r\nUser-Agent: x\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n")
	resp := parseResp(t, "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:3000/x\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
	ro := reqHeadOpts{backendHost: []byte("127.0.0.1:3000"), clientIP: []byte("10.0.0.1"), preserveHost: true, forwarded: true}
	so := respHeadOpts{backendHost: []byte("127.0.0.1:3000"), clientHost: []byte("example.com")}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(200, func() {
		buf = appendRequestHead(buf[:0], req, &ro)
		buf = appendResponseHead(buf[:0], resp, &so)
		_ = isIdempotent(req.Method)
	}); n != 0 {
		t.Fatalf("head rewrite allocates %v times per run, want 0", n)
	}
}

func TestCannedErrors(t *testing.T) {
	for _, code := range []int{400, 408, 414, 426, 431, 501, 502, 503, 504, 505} {
		raw := errorResponse(code)
		var p httpparse.Parser
		var resp httpparse.Response
		n, err := p.ParseResponse(raw, &resp, false)
		if err != nil || resp.Status != code || resp.KeepAlive || resp.Framing != httpparse.FramingLength ||
			resp.ContentLength != int64(len(raw)-n) {
			t.Errorf("%d: %v: status %d keepalive %v framing %v length %d, body %d", code, err,
				resp.Status, resp.KeepAlive, resp.Framing, resp.ContentLength, len(raw)-n)
		}
	}
}

// rewriteBenchGET is a browser page load as it reaches wsgate.
const rewriteBenchGET = "GET /app/dashboard?tab=overview HTTP/1.1\r\nHost: app.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\nConnection: keep-alive\r\n" +
	"Cookie: session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark\r\nUpgrade-Insecure-Requests: 1\r\n" +
	"Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nPriority: u=0, i\r\n\r\n"

// BenchmarkRewriteRequest rebuilds a browser GET head for the backend.
func BenchmarkRewriteRequest(b *testing.B) {
	req := parseReq(b, rewriteBenchGET)
	o := reqHeadOpts{backendHost: []byte("127.0.0.1:3000"), clientIP: []byte("10.0.0.1"), preserveHost: true, forwarded: true}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendRequestHead(buf[:0], req, &o)
	}
}

// BenchmarkRewriteResponse rebuilds a typical backend answer head for the client.
func BenchmarkRewriteResponse(b *testing.B) {
	resp := parseResp(b, "HTTP/1.1 200 OK\r\nDate: Tue, 24 Nov 2026 22:00:00 GMT\r\nContent-Type: text/html; charset=utf-8\r\n"+
		"Content-Length: 5120\r\nCache-Control: no-cache, private\r\nVary: Accept-Encoding\r\n"+
		"X-Request-Id: 4f3c2a1b-9d8e-4c7b-a6f5-e4d3c2b1a098\r\nServer: backend/1.0\r\n\r\n")
	o := respHeadOpts{backendHost: []byte("127.0.0.1:3000"), clientHost: []byte("app.example.com")}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendResponseHead(buf[:0], resp, &o)
	}
}
