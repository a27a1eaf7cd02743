package loop

import (
	"strings"
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

// Framing, Host and the target are emitted from the parsed message, never copied: no client
// spelling reaches the backend in a form it could frame differently.
func TestRequestHeadRewriteFraming(t *testing.T) {
	be := []byte("127.0.0.1:3000")
	ip := []byte("10.1.2.3")
	fwd := reqHeadOpts{backendHost: be, clientIP: ip, preserveHost: true, forwarded: true}
	plain := reqHeadOpts{backendHost: be, clientIP: ip, preserveHost: true}
	cases := []struct {
		name string
		in   string
		o    reqHeadOpts
		want string
	}{
		{
			name: "a Content-Length list goes out as one value",
			in:   "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nAccept: */*\r\ncontent-length: 5\r\n\r\n",
			o:    plain,
			want: "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nAccept: */*\r\n\r\n",
		},
		{
			name: "Content-Length 0 is kept",
			in:   "GET / HTTP/1.1\r\nContent-Length: 0\r\nHost: h\r\n\r\n",
			o:    plain,
			want: "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name: "chunked in the one canonical spelling",
			in:   "POST /p HTTP/1.1\r\nHost: h\r\ntransfer-encoding:  Chunked \r\nTE: trailers\r\nTrailer: X-Sum\r\n\r\n",
			o:    plain,
			want: "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
		},
		{
			name: "names outside [A-Za-z0-9-] never pass, so X-Forwarded-For cannot be spoofed",
			in: "GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX.Real.IP: 1.2.3.4\r\n" +
				"Transfer_Encoding: chunked\r\nContent_Length: 9\r\nX-Ok-9: y\r\n\r\n",
			o: fwd,
			want: "GET / HTTP/1.1\r\nHost: h\r\nX-Ok-9: y\r\nX-Forwarded-For: 5.6.7.8, 10.1.2.3\r\nX-Forwarded-Proto: http\r\n" +
				"X-Forwarded-Host: h\r\n\r\n",
		},
		{
			name: "odd names dropped with X-Forwarded-* off too",
			in:   "GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\r\n",
			o:    plain,
			want: "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 5.6.7.8\r\n\r\n",
		},
		{
			name: "absolute-form with only a query",
			in:   "GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n",
			o:    plain,
			want: "GET /?q HTTP/1.1\r\nHost: h\r\n\r\n",
		},
		{
			name: "absolute-form with an empty path",
			in:   "GET http://h:1234 HTTP/1.1\r\nHost: H:1234\r\n\r\n",
			o:    fwd,
			want: "GET / HTTP/1.1\r\nHost: h:1234\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h:1234\r\n\r\n",
		},
		{
			name: "absolute-form https keeps path and query",
			in:   "DELETE HTTPS://[::1]:8443/a/b?c=d HTTP/1.0\r\n\r\n",
			o:    plain,
			want: "DELETE /a/b?c=d HTTP/1.0\r\nHost: [::1]:8443\r\n\r\n",
		},
		{
			name: "absolute-form authority not preserved",
			in:   "GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
			o:    reqHeadOpts{backendHost: be, clientIP: ip},
			want: "GET /x HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n\r\n",
		},
		{
			name: "asterisk-form",
			in:   "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
			o:    plain,
			want: "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
		},
		{
			name: "ASCII folding only: a Kelvin-sign lookalike names no field",
			in:   "GET / HTTP/1.1\r\nHost: h\r\nConnection: x-\u212aey, \u212aeep-alive\r\nX-Key: v\r\n\r\n",
			o:    plain,
			want: "GET / HTTP/1.1\r\nHost: h\r\nX-Key: v\r\n\r\n",
		},
		{
			name: "the same name in ASCII is hop-by-hop",
			in:   "GET / HTTP/1.1\r\nHost: h\r\nConnection: x-KEY\r\nX-Key: v\r\n\r\n",
			o:    plain,
			want: "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		},
		{
			name: "X-Forwarded-For named by Connection contributes nothing",
			in:   "GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Forwarded-For\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
			o:    fwd,
			want: "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
		},
		{
			name: "a field called Close goes with Connection: close",
			in:   "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nClose: x\r\nX: y\r\n\r\n",
			o:    plain,
			want: "GET / HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n",
		},
		{
			name: "lowercase method stays what it is",
			in:   "head / HTTP/1.1\r\nHost: h\r\n\r\n",
			o:    plain,
			want: "head / HTTP/1.1\r\nHost: h\r\n\r\n",
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

// Responses: framing from the parsed answer. A Content-Length describing a representation (HEAD,
// 304) is relayed exactly; 1xx and 204 never carry one; transfer codings go out as one line.
func TestResponseHeadRewriteFraming(t *testing.T) {
	cases := []struct {
		name string
		in   string
		head bool
		o    respHeadOpts
		want string
	}{
		{"one Content-Length value", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nX: y\r\nContent-Length: 5\r\n\r\n", false, respHeadOpts{},
			"HTTP/1.1 200 OK\r\nX: y\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"},
		{"HEAD answer keeps its Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true, respHeadOpts{},
			"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n"},
		{"304 keeps its Content-Length", "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 7, 7\r\n\r\n", false, respHeadOpts{},
			"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 7\r\nConnection: keep-alive\r\n\r\n"},
		{"204 never has one", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false, respHeadOpts{},
			"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"},
		{"1xx never has one", "HTTP/1.1 103 Early Hints\r\nContent-Length: 4\r\nLink: </a>\r\n\r\n", false, respHeadOpts{interim: true},
			"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"},
		{"101 never has framing", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 9\r\n\r\n", false,
			respHeadOpts{websocket: true}, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"codings on one line", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nX: y\r\ntransfer-encoding:  Chunked \r\n\r\n", false, respHeadOpts{},
			"HTTP/1.1 200 OK\r\nX: y\r\nTransfer-Encoding: gzip, Chunked\r\nConnection: keep-alive\r\n\r\n"},
		{"codings that leave the body to the close", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked ,gzip\r\n\r\n", false, respHeadOpts{close: true},
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nConnection: close\r\n\r\n"},
		{"HEAD answer drops a Transfer-Encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, respHeadOpts{},
			"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"},
		{"close-delimited without codings", "HTTP/1.0 200 OK\r\nX: y\r\n\r\n", false, respHeadOpts{close: true},
			"HTTP/1.1 200 OK\r\nX: y\r\nConnection: close\r\n\r\n"},
		{"Kelvin-sign lookalike names no field", "HTTP/1.1 200 OK\r\nConnection: x-\u212aey\r\nX-Key: v\r\nContent-Length: 0\r\n\r\n", false, respHeadOpts{},
			"HTTP/1.1 200 OK\r\nX-Key: v\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p httpparse.Parser
			resp := new(httpparse.Response)
			if n, err := p.ParseResponse([]byte(tc.in), resp, tc.head); err != nil || n != len(tc.in) {
				t.Fatalf("ParseResponse: %d %v", n, err)
			}
			got := string(appendResponseHead(nil, resp, &tc.o))
			if got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// listHas and appendLocation fold ASCII only (bytes.EqualFold would match the Kelvin sign to k).
func TestRewriteFoldsASCIIOnly(t *testing.T) {
	if listHas([]byte("x-\u212aey"), []byte("X-Key")) || listHas([]byte("\u212aeep-alive"), []byte("keep-alive")) {
		t.Fatal("listHas folds Unicode")
	}
	if !listHas([]byte(" a , X-KEY\t"), []byte("x-key")) {
		t.Fatal("listHas misses an ASCII match")
	}
	o := respHeadOpts{backendHost: []byte("k8s:3000"), clientHost: []byte("p")}
	if got := string(appendLocation(nil, []byte("http://K8S:3000/x"), &o)); got != "http://p/x" {
		t.Fatalf("ASCII case not folded: %q", got)
	}
	if got := string(appendLocation(nil, []byte("http://\u212a8s:3000/x"), &o)); got != "http://\u212a8s:3000/x" {
		t.Fatalf("Kelvin sign taken for k: %q", got)
	}
}

func TestCheckFieldNames(t *testing.T) {
	odd := parseReq(t, "GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n")
	plain := parseReq(t, "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
	if checkFieldNames(odd, HeaderNamesDrop) != nil || checkFieldNames(plain, HeaderNamesReject) != nil {
		t.Fatal("refused under drop, or a plain request under reject")
	}
	err := checkFieldNames(odd, HeaderNamesReject)
	if httpparse.StatusOf(err) != 400 || !strings.Contains(string(rejectResponse(err)), "400 Bad Request: field name") {
		t.Fatalf("reject: %v: %q", err, rejectResponse(err))
	}
	var p HeaderNamePolicy
	for _, c := range []struct {
		in   string
		want HeaderNamePolicy
		ok   bool
	}{{"drop", HeaderNamesDrop, true}, {"reject", HeaderNamesReject, true}, {"Drop", 0, false}, {"", 0, false}} {
		err := p.UnmarshalText([]byte(c.in))
		if (err == nil) != c.ok || (c.ok && (p != c.want || p.String() != c.in)) {
			t.Errorf("UnmarshalText(%q) = %v, %v", c.in, p, err)
		}
	}
}

func TestHeadRewriteAllocs(t *testing.T) {
	req := parseReq(t, "GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nAccept: */*\r\nUser-Agent: x\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n")
	resp := parseResp(t, "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:3000/x\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
	ro := reqHeadOpts{backendHost: []byte("127.0.0.1:3000"), clientIP: []byte("10.0.0.1"), preserveHost: true, forwarded: true}
	so := respHeadOpts{backendHost: []byte("127.0.0.1:3000"), clientHost: []byte("example.com")}
	odd := parseReq(t, "POST http://example.com?q HTTP/1.1\r\nHost: example.com\r\nX_Forwarded_For: 1\r\nConnection: x-a, close\r\n"+
		"Content-Length: 5, 5\r\n\r\n")
	var p httpparse.Parser
	chunked := new(httpparse.Response)
	if _, err := p.ParseResponse([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close, x-b\r\n\r\n"), chunked, false); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(200, func() {
		buf = appendRequestHead(buf[:0], req, &ro)
		buf = appendResponseHead(buf[:0], resp, &so)
		buf = appendRequestHead(buf[:0], odd, &ro)
		buf = appendResponseHead(buf[:0], chunked, &so)
		_ = checkFieldNames(odd, HeaderNamesReject)
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
