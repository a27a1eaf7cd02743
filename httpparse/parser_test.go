package httpparse

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
)

type reqCase struct {
	name   string
	in     string // the head; must be what headLen covers when status == 0
	extra  string // bytes after the head (body, next request): never part of headLen
	lim    Limits
	status int // 0 accepted, -1 need more, else the *Error status
	check  func(t *testing.T, r *Request)
}

func wantReq(method, target string, minor int, host string, f Framing, cl int64, ka bool) func(*testing.T, *Request) {
	return func(t *testing.T, r *Request) {
		t.Helper()
		if string(r.Method) != method || string(r.Target) != target || r.Minor != minor ||
			string(r.Host) != host || r.Framing != f || r.ContentLength != cl || r.KeepAlive != ka {
			t.Errorf("got %s\nwant method=%q target=%q minor=%d host=%q framing=%v cl=%d ka=%v",
				summarizeRequest(r), method, target, minor, host, f, cl, ka)
		}
	}
}

// wantForm checks what a proxy needs of the target: the authority of an
// absolute-form target (nil otherwise) and the path-and-query.
func wantForm(authority, path string, absolute bool) func(*testing.T, *Request) {
	return func(t *testing.T, r *Request) {
		t.Helper()
		if (r.Authority != nil) != absolute || string(r.Authority) != authority || string(r.Path) != path || r.Path == nil {
			t.Errorf("got %s\nwant authority=%q (absolute %v) path=%q", summarizeRequest(r), authority, absolute, path)
		}
	}
}

func both(fs ...func(*testing.T, *Request)) func(*testing.T, *Request) {
	return func(t *testing.T, r *Request) {
		t.Helper()
		for _, f := range fs {
			f(t, r)
		}
	}
}

func wantOdd(n int) func(*testing.T, *Request) {
	return func(t *testing.T, r *Request) {
		t.Helper()
		if r.OddNames != n {
			t.Errorf("OddNames %d, want %d (%s)", r.OddNames, n, summarizeRequest(r))
		}
	}
}

func manyHeaders(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("X-H: ")
		b.WriteByte(byte('a' + i%26))
		b.WriteString("\r\n")
	}
	return b.String()
}

var small = Limits{MaxHeadBytes: 200, MaxHeaders: 4, MaxTargetBytes: 32}

var reqCases = []reqCase{
	// Accepted heads.
	{name: "minimal 1.1", in: "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		check: wantReq("GET", "/", 1, "a", FramingNone, 0, true)},
	{name: "body bytes follow", in: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", extra: "hello",
		check: wantReq("POST", "/x", 1, "a", FramingLength, 5, true)},
	{name: "pipelined next request", in: "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n", extra: "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		check: wantReq("GET", "/1", 1, "a", FramingNone, 0, true)},
	{name: "1.0 without host closes", in: "GET / HTTP/1.0\r\n\r\n",
		check: wantReq("GET", "/", 0, "", FramingNone, 0, false)},
	{name: "1.0 keep-alive", in: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
		check: wantReq("GET", "/", 0, "", FramingNone, 0, true)},
	{name: "1.0 keep-alive and close", in: "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
		check: wantReq("GET", "/", 0, "", FramingNone, 0, false)},
	{name: "1.1 close", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		check: wantReq("GET", "/", 1, "a", FramingNone, 0, false)},
	{name: "1.1 close in list", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo ,\tCLOSE \r\n\r\n",
		check: wantReq("GET", "/", 1, "a", FramingNone, 0, false)},
	{name: "content-length zero", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		check: wantReq("POST", "/", 1, "a", FramingLength, 0, true)},
	{name: "content-length repeated identical", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n",
		check: wantReq("POST", "/", 1, "a", FramingLength, 7, true)},
	{name: "content-length list identical", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
		check: wantReq("POST", "/", 1, "a", FramingLength, 5, true)},
	{name: "content-length max int64", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n",
		check: wantReq("POST", "/", 1, "a", FramingLength, 1<<63-1, true)},
	{name: "chunked", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", extra: "0\r\n\r\n",
		check: wantReq("POST", "/", 1, "a", FramingChunked, 0, true)},
	{name: "chunked mixed case with OWS", in: "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  Chunked \r\n\r\n",
		check: wantReq("POST", "/", 1, "a", FramingChunked, 0, true)},
	{name: "absolute-form", in: "GET http://example.com/x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
		check: wantReq("GET", "http://example.com/x?y=1", 1, "example.com", FramingNone, 0, true)},
	{name: "absolute-form https no path", in: "GET https://example.com:8443 HTTP/1.1\r\nHost: example.com:8443\r\n\r\n",
		check: wantReq("GET", "https://example.com:8443", 1, "example.com:8443", FramingNone, 0, true)},
	{name: "absolute-form host differs", in: "GET http://evil.example/x HTTP/1.1\r\nHost: good.example\r\n\r\n", status: 400},
	{name: "absolute-form userinfo", in: "GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "absolute-form host case-insensitive", in: "GET HTTP://Example.COM?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
		check: wantReq("GET", "HTTP://Example.COM?q", 1, "example.com", FramingNone, 0, true)},
	{name: "absolute-form 1.0 without host", in: "GET http://a/x HTTP/1.0\r\n\r\n",
		check: wantReq("GET", "http://a/x", 0, "", FramingNone, 0, false)},
	{name: "asterisk-form OPTIONS", in: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		check: wantReq("OPTIONS", "*", 1, "a", FramingNone, 0, true)},
	{name: "empty lines before request line", in: "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		check: wantReq("GET", "/", 1, "a", FramingNone, 0, true)},
	{name: "extension method", in: "M-SEARCH!~ /x HTTP/1.1\r\nHost: a\r\n\r\n",
		check: wantReq("M-SEARCH!~", "/x", 1, "a", FramingNone, 0, true)},
	{name: "target with query punctuation", in: "GET /a/b;c?d=e&f=%20|{}^`\"<>\\ HTTP/1.1\r\nHost: a\r\n\r\n",
		check: wantReq("GET", "/a/b;c?d=e&f=%20|{}^`\"<>\\", 1, "a", FramingNone, 0, true)},
	{name: "ipv6 host with port", in: "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
		check: wantReq("GET", "/", 1, "[::1]:8080", FramingNone, 0, true)},
	{name: "empty host value", in: "GET / HTTP/1.1\r\nHost:\r\n\r\n",
		check: wantReq("GET", "/", 1, "", FramingNone, 0, true)},
	{name: "values trimmed, inner space kept", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: \t a b \t\r\nX-Empty:\r\nX-Sp:   \r\n\r\n",
		check: func(t *testing.T, r *Request) {
			if v := r.Header("x-a"); string(v) != "a b" {
				t.Errorf("X-A = %q", v)
			}
			if v := r.Header("X-EMPTY"); v == nil || len(v) != 0 {
				t.Errorf("X-Empty = %#v, want empty non-nil", v)
			}
			if v := r.Header("x-sp"); v == nil || len(v) != 0 {
				t.Errorf("X-Sp = %#v", v)
			}
			if r.Header("X-Missing") != nil {
				t.Error("missing header found")
			}
			if len(r.Headers) != 4 {
				t.Errorf("%d headers", len(r.Headers))
			}
		}},
	{name: "obs-text in value", in: "GET / HTTP/1.1\r\nHost: a\r\nX-U: caf\xc3\xa9 \xff\r\n\r\n",
		check: func(t *testing.T, r *Request) {
			if string(r.Header("X-U")) != "caf\xc3\xa9 \xff" {
				t.Errorf("X-U = %q", r.Header("X-U"))
			}
		}},
	{name: "expect 100-continue", in: "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
		check: func(t *testing.T, r *Request) {
			if !r.Expect100 {
				t.Error("Expect100 false")
			}
		}},
	{name: "firefox websocket", in: "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
		check: func(t *testing.T, r *Request) {
			if !r.IsWebSocketUpgrade() || !r.HasToken("connection", "KEEP-ALIVE") || r.HasToken("Connection", "alive") {
				t.Error("token matching across the Connection list failed")
			}
		}},
	{name: "connection tokens across lines", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nUpgrade: foo, WebSocket\r\nConnection: upgrade\r\n\r\n",
		check: func(t *testing.T, r *Request) {
			if !r.IsWebSocketUpgrade() {
				t.Error("IsWebSocketUpgrade false for tokens on separate lines")
			}
		}},
	{name: "exactly MaxHeaders", lim: small, in: "GET / HTTP/1.1\r\nHost: a\r\n" + manyHeaders(3) + "\r\n",
		check: func(t *testing.T, r *Request) {
			if len(r.Headers) != 4 {
				t.Errorf("%d headers", len(r.Headers))
			}
		}},
	{name: "target at limit", lim: small, in: "GET /" + strings.Repeat("a", 31) + " HTTP/1.1\r\nHost: a\r\n\r\n",
		check: wantReq("GET", "/"+strings.Repeat("a", 31), 1, "a", FramingNone, 0, true)},
	{name: "table of 256 headers", lim: Limits{MaxHeaders: 1000, MaxHeadBytes: 64 << 10},
		in: "GET / HTTP/1.1\r\nHost: a\r\n" + manyHeaders(255) + "\r\n",
		check: func(t *testing.T, r *Request) {
			if len(r.Headers) != MaxHeadersCap {
				t.Errorf("%d headers", len(r.Headers))
			}
		}},

	// Connection options never touch framing: a Connection field may not
	// name the fields that delimit the message.
	{name: "connection names content-length", in: "POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 27\r\n\r\n", status: 400},
	{name: "connection names transfer-encoding", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, Transfer-Encoding\r\n\r\n", status: 400},
	{name: "connection names host", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Host\r\n\r\n", status: 400},
	{name: "connection names host on a second line", in: "GET / HTTP/1.1\r\nConnection: close\r\nHost: a\r\nconnection: x ,\tHOST \r\n\r\n", status: 400},
	{name: "connection names content-length without one", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\n\r\n", status: 400},
	{name: "connection names other fields", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret, content-lengthy, hosts, te\r\n\r\n",
		check: wantReq("GET", "/", 1, "a", FramingNone, 0, true)},
	{name: "content-length list forwarded as one value", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n", extra: "hello",
		check: wantReq("POST", "/", 1, "a", FramingLength, 5, true)},

	// Field names outside [A-Za-z0-9-] are legal tokens; they are counted
	// so that a proxy can drop or refuse them.
	{name: "underscore name counted", in: "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\r\n",
		check: both(wantReq("GET", "/", 1, "a", FramingNone, 0, true), wantOdd(1))},
	{name: "punctuation names counted", in: "GET / HTTP/1.1\r\nHost: a\r\nX.Y: 1\r\nA!b: 2\r\n~: 3\r\nX-Plain-09: 4\r\n\r\n",
		check: wantOdd(3)},
	{name: "long odd name split by the word scanner", in: "GET / HTTP/1.1\r\nHost: a\r\nAbcdefghijklmnop_q: 1\r\nAbcdefghijklmnopq: 2\r\n\r\n",
		check: wantOdd(1)},
	{name: "Transfer_Encoding frames nothing", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
		check: both(wantReq("POST", "/", 1, "a", FramingNone, 0, true), wantOdd(1))},
	{name: "no odd names", in: "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", check: wantOdd(0)},

	// Methods are case-sensitive.
	{name: "lowercase head is another method", in: "head / HTTP/1.1\r\nHost: a\r\n\r\n",
		check: func(t *testing.T, r *Request) {
			if r.MethodIs("HEAD") || !r.MethodIs("head") || string(r.Method) != "head" {
				t.Errorf("method %q: MethodIs must compare exactly", r.Method)
			}
		}},

	// Absolute-form: the authority is parsed once, validated like Host,
	// and the path-and-query is what an origin server gets.
	{name: "origin-form path", in: "GET /a?b HTTP/1.1\r\nHost: a\r\n\r\n", check: wantForm("", "/a?b", false)},
	{name: "asterisk-form path", in: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", check: wantForm("", "*", false)},
	{name: "absolute-form only a query", in: "GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n",
		check: both(wantReq("GET", "http://h?q", 1, "h", FramingNone, 0, true), wantForm("h", "?q", true))},
	{name: "absolute-form empty path with port", in: "GET http://h:1234 HTTP/1.1\r\nHost: h:1234\r\n\r\n",
		check: wantForm("h:1234", "", true)},
	{name: "absolute-form path", in: "GET https://Example.com:8443/x/y?z#f HTTP/1.1\r\nHost: example.COM:8443\r\n\r\n",
		check: wantForm("Example.com:8443", "/x/y?z#f", true)},
	{name: "absolute-form 1.0 authority without Host", in: "GET http://a.example/x HTTP/1.0\r\n\r\n",
		check: both(wantReq("GET", "http://a.example/x", 0, "", FramingNone, 0, false), wantForm("a.example", "/x", true))},
	{name: "absolute-form ipv6", in: "GET http://[::1]:8080/x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
		check: wantForm("[::1]:8080", "/x", true)},
	{name: "absolute-form pct-encoded and empty port", in: "GET http://a%41b.c: HTTP/1.0\r\n\r\n",
		check: wantForm("a%41b.c:", "", true)},
	{name: "absolute-form userinfo refused", in: "GET http://user:pw@a/ HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form fragment in authority", in: "GET http://a#b HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form empty authority with query", in: "GET http://?q HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form empty authority at end", in: "GET http:// HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form port not digits", in: "GET http://a:b/ HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form two colons", in: "GET http://a:1:2/ HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form unclosed bracket", in: "GET http://[::1/x HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form empty brackets", in: "GET http://[]/x HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form ipvfuture", in: "GET http://[v1.x]/ HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form bad pct", in: "GET http://a%4g/ HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form scheme ftp", in: "GET ftp://a/x HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form scheme httpx", in: "GET httpx://a/x HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form scheme http only", in: "GET http HTTP/1.0\r\n\r\n", status: 400},
	{name: "absolute-form host mismatch by port", in: "GET http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "absolute-form host mismatch before the Host line ends", in: "GET http://a/ HTTP/1.1\r\nHost: b\r\nHost: a\r\n\r\n", status: 400},
	{name: "host with port letters", in: "GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", status: 400},
	{name: "host with two colons", in: "GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", status: 400},
	{name: "host with only a port", in: "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", status: 400},
	{name: "host with hash", in: "GET / HTTP/1.1\r\nHost: a#b\r\n\r\n", status: 400},
	{name: "host ipv6 unclosed", in: "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", status: 400},
	{name: "host with empty port", in: "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", check: wantReq("GET", "/", 1, "a:", FramingNone, 0, true)},

	// ASCII-only folding: lookalikes that Unicode folding would match.
	{name: "kelvin sign is not keep-alive", in: "GET / HTTP/1.0\r\nConnection: \u212aeep-alive\r\n\r\n",
		check: wantReq("GET", "/", 0, "", FramingNone, 0, false)},
	{name: "long s is not close", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: clo\u017fe\r\n\r\n",
		check: wantReq("GET", "/", 1, "a", FramingNone, 0, true)},
	{name: "kelvin sign is not a framing option", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: \u212aeep-alive, Content-Length\u212a\r\n\r\n",
		check: wantReq("GET", "/", 1, "a", FramingNone, 0, true)},
	{name: "kelvin sign is not websocket", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websoc\u212aet\r\n\r\n",
		check: func(t *testing.T, r *Request) {
			if r.IsWebSocketUpgrade() {
				t.Error("Upgrade: websoc\\u212aet taken for websocket")
			}
		}},
	{name: "kelvin sign is not chunked", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun\u212aed\r\n\r\n", status: 400},

	// Incomplete heads.
	{name: "need more: request line", in: "GET / HTT", status: -1},
	{name: "need more: CR pending", in: "GET / HTTP/1.1\r", status: -1},
	{name: "need more: headers", in: "GET / HTTP/1.1\r\nHost: a\r\n", status: -1},
	{name: "need more: final CR", in: "GET / HTTP/1.1\r\nHost: a\r\n\r", status: -1},
	{name: "need more: only empty lines", in: "\r\n\r\n", status: -1},

	// Request line.
	{name: "method not token", in: "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "leading space", in: " GET / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "double space", in: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "tab separator", in: "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "space before version twice", in: "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "trailing space", in: "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", status: 400},
	{name: "no version", in: "GET /\r\nHost: a\r\n\r\n", status: 400},
	{name: "lowercase version", in: "GET / http/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "version HTTP/1", in: "GET / HTTP/1\r\nHost: a\r\n\r\n", status: 400},
	{name: "version HTTP/1.10", in: "GET / HTTP/1.10\r\nHost: a\r\n\r\n", status: 400},
	{name: "version HTTP/11", in: "GET / HTTP/11\r\nHost: a\r\n\r\n", status: 400},
	{name: "version garbage", in: "GET / FTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "version HTTP/2.0", in: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", status: 505},
	{name: "version HTTP/1.2", in: "GET / HTTP/1.2\r\nHost: a\r\n\r\n", status: 505},
	{name: "version HTTP/0.9", in: "GET / HTTP/0.9\r\n\r\n", status: 505},
	{name: "version HTTP/3.0", in: "GET / HTTP/3.0\r\nHost: a\r\n\r\n", status: 505},
	{name: "http2 preface", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status: 505},
	{name: "control byte in target", in: "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "non-ascii in target", in: "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "DEL in target", in: "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "CONNECT", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", status: 501},
	{name: "asterisk with GET", in: "GET * HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "authority-form with GET", in: "GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "relative target", in: "GET foo/bar HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "scheme without slashes", in: "GET http:/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "absolute-form empty authority", in: "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	{name: "tls client hello", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", status: 400},
	{name: "bare CR in request line", in: "GET / HTTP/1.1\rX\r\nHost: a\r\n\r\n", status: 400},
	{name: "bare LF request line", in: "GET / HTTP/1.1\nHost: a\r\n\r\n", status: 400},
	{name: "bare LF everywhere", in: "GET / HTTP/1.1\nHost: a\n\n", status: 400},
	{name: "leading bare LF", in: "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},

	// Field lines.
	{name: "no host 1.1", in: "GET / HTTP/1.1\r\nX: y\r\n\r\n", status: 400},
	{name: "two host lines", in: "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", status: 400},
	{name: "two host lines 1.0", in: "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", status: 400},
	{name: "host with slash", in: "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", status: 400},
	{name: "host with inner space", in: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", status: 400},
	{name: "host with userinfo", in: "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", status: 400},
	{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", status: 400},
	{name: "tab before colon", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n", status: 400},
	{name: "obs-fold", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", status: 400},
	{name: "obs-fold tab", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", status: 400},
	{name: "first field line folded", in: "GET / HTTP/1.1\r\n Host: a\r\n\r\n", status: 400},
	{name: "bare CR in value", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", status: 400},
	{name: "bare CR ending value", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\r\n\r\n", status: 400},
	{name: "bare CR as line", in: "GET / HTTP/1.1\r\nHost: a\r\n\rX: y\r\n\r\n", status: 400},
	{name: "NUL in value", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", status: 400},
	{name: "control in value", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", status: 400},
	{name: "control deep in long value", in: "GET / HTTP/1.1\r\nHost: a\r\nCookie: " + strings.Repeat("k=v; ", 30) + "\x1b\r\n\r\n", status: 400},
	{name: "DEL in value", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n", status: 400},
	{name: "LF in value", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\nc\r\n\r\n", status: 400},
	{name: "bare LF header end", in: "GET / HTTP/1.1\r\nHost: a\r\nX: b\n\r\n", status: 400},
	{name: "bare LF final line", in: "GET / HTTP/1.1\r\nHost: a\r\n\n", status: 400},
	{name: "name not token", in: "GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", status: 400},
	{name: "empty name", in: "GET / HTTP/1.1\r\nHost: a\r\n: z\r\n\r\n", status: 400},
	{name: "no colon", in: "GET / HTTP/1.1\r\nHost: a\r\nFoo\r\n\r\n", status: 400},
	{name: "non-ascii name", in: "GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: z\r\n\r\n", status: 400},

	// Framing.
	{name: "TE and CL", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", status: 400},
	{name: "CL and TE", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
	{name: "CL conflicting lines", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", status: 400},
	{name: "CL conflicting list", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", status: 400},
	{name: "CL negative", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", status: 400},
	{name: "CL plus sign", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", status: 400},
	{name: "CL inner space", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", status: 400},
	{name: "CL empty", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", status: 400},
	{name: "CL empty element", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", status: 400},
	{name: "CL hex", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", status: 400},
	{name: "CL overflow", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", status: 400},
	{name: "CL huge", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", status: 400},
	{name: "TE in 1.0", in: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
	{name: "TE gzip", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", status: 501},
	{name: "TE chunked then gzip", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", status: 501},
	{name: "TE gzip then chunked", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", status: 501},
	{name: "TE chunked on two lines", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", status: 501},
	{name: "TE identity", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", status: 501},
	{name: "TE empty", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", status: 400},
	{name: "TE empty element", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", status: 400},
	{name: "TE leading empty element", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n", status: 400},
	{name: "TE with parameter", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", status: 400},
	{name: "TE quoted", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", status: 400},

	// Limits.
	{name: "target too long", lim: small, in: "GET /" + strings.Repeat("a", 32) + " HTTP/1.1\r\nHost: a\r\n\r\n", status: 414},
	{name: "target too long unterminated", lim: small, in: "GET /" + strings.Repeat("a", 40), status: 414},
	{name: "request line over head limit", lim: Limits{MaxHeadBytes: 64, MaxTargetBytes: 1000}, in: "GET /" + strings.Repeat("a", 100) + " HTTP/1.1\r\n\r\n", status: 414},
	{name: "method over head limit", lim: Limits{MaxHeadBytes: 64}, in: strings.Repeat("G", 100), status: 414},
	{name: "head too large", lim: small, in: "GET / HTTP/1.1\r\nHost: a\r\nCookie: " + strings.Repeat("c", 200) + "\r\n\r\n", status: 431},
	{name: "head too large unterminated", lim: small, in: "GET / HTTP/1.1\r\nHost: a\r\nCookie: " + strings.Repeat("c", 200), status: 431},
	{name: "head exactly at limit", lim: Limits{MaxHeadBytes: 27}, in: "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		check: wantReq("GET", "/", 1, "a", FramingNone, 0, true)},
	{name: "head one over limit", lim: Limits{MaxHeadBytes: 26}, in: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", status: 431},
	{name: "too many headers", lim: small, in: "GET / HTTP/1.1\r\nHost: a\r\n" + manyHeaders(4) + "\r\n", status: 431},
	{name: "too many headers default", in: "GET / HTTP/1.1\r\nHost: a\r\n" + manyHeaders(100) + "\r\n", status: 431},
	{name: "too many headers clamped", lim: Limits{MaxHeaders: 1000, MaxHeadBytes: 64 << 10},
		in: "GET / HTTP/1.1\r\nHost: a\r\n" + manyHeaders(256) + "\r\n", status: 431},
}

// TestRequestTable runs every case one-shot, byte by byte and split at every
// position, and requires the same outcome each way.
func TestRequestTable(t *testing.T) {
	for _, c := range reqCases {
		t.Run(c.name, func(t *testing.T) {
			data := []byte(c.in + c.extra)
			got := oneShotRequest(c.lim, data)
			if got.status != c.status {
				t.Fatalf("status %d (%s), want %d", got.status, got.reason, c.status)
			}
			if c.status == 0 {
				if got.n != len(c.in) {
					t.Fatalf("headLen %d, want %d", got.n, len(c.in))
				}
				p := Parser{Limits: c.lim}
				var req Request
				if _, err := p.ParseRequest(data, &req); err != nil {
					t.Fatal(err)
				}
				if c.check != nil {
					c.check(t, &req)
				}
				checkAliases(t, data, &req)
			}
			if bb := byteByByteRequest(c.lim, data); bb != got {
				t.Errorf("byte by byte:\n%+v\none shot:\n%+v", bb, got)
			}
			for k := 0; k <= len(data); k++ {
				if s := splitRequest(c.lim, data, k); s != got {
					t.Fatalf("split at %d:\n%+v\none shot:\n%+v", k, s, got)
				}
			}
		})
	}
}

// checkAliases proves zero copy: every slice of the parsed head lies inside
// the input buffer.
func checkAliases(t *testing.T, data []byte, r *Request) {
	t.Helper()
	in := func(b []byte) bool {
		if len(b) == 0 {
			return true
		}
		for i := range data {
			if &data[i] == &b[0] {
				return i+len(b) <= len(data)
			}
		}
		return false
	}
	ok := in(r.Method) && in(r.Target) && in(r.Host)
	for _, h := range r.Headers {
		ok = ok && in(h.Name) && in(h.Value)
	}
	if !ok {
		t.Error("parsed slices do not alias the input")
	}
}

// TestParserReuse parses pipelined requests with one Parser, the way a
// keep-alive connection does, including a restart on a new buffer.
func TestParserReuse(t *testing.T) {
	stream := []byte("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.0\r\n\r\n")
	var p Parser
	var req Request
	var targets []string
	for off, i := 0, 0; off < len(stream) && i < 10; i++ {
		n, err := p.ParseRequest(stream[off:], &req)
		if err != nil {
			t.Fatalf("at %d: %v", off, err)
		}
		targets = append(targets, string(req.Target))
		off += n + int(req.ContentLength)
	}
	if strings.Join(targets, ",") != "/1,/2,/3" {
		t.Fatalf("targets %v", targets)
	}
	// A partial head, then the caller moves to a shorter buffer: the parser
	// must notice rather than index past the end.
	if _, err := p.ParseRequest([]byte("GET /long/path HTTP/1."), &req); err != ErrNeedMore {
		t.Fatal(err)
	}
	if n, err := p.ParseRequest([]byte("GET / HTTP/1.0\r\n\r\n"), &req); err != nil || n != 18 {
		t.Fatalf("after buffer change: %d %v", n, err)
	}
}

type respCase struct {
	name   string
	in     string
	extra  string
	head   bool
	lim    Limits
	status int
	want   string // Framing/KeepAlive/Status summary "status framing cl ka"
}

var respCases = []respCase{
	{name: "200 length", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", extra: "hello", want: "200 length 5 true"},
	{name: "200 until close", in: "HTTP/1.1 200 OK\r\n\r\n", want: "200 until-close 0 false"},
	{name: "200 chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", want: "200 chunked 0 true"},
	{name: "gzip then chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", want: "200 chunked 0 true"},
	{name: "chunked then gzip", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", want: "200 until-close 0 false"},
	{name: "gzip only", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", want: "200 until-close 0 false"},
	{name: "chunked across lines", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", want: "200 chunked 0 true"},
	{name: "204", in: "HTTP/1.1 204 No Content\r\n\r\n", want: "204 none 0 true"},
	{name: "304 with length", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", want: "304 none 0 true"},
	{name: "100 continue", in: "HTTP/1.1 100 Continue\r\n\r\n", extra: "HTTP/1.1 200 OK\r\n", want: "100 none 0 true"},
	{name: "101 switching", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", want: "101 none 0 true"},
	{name: "103 early hints", in: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", want: "103 none 0 true"},
	{name: "HEAD with length", head: true, in: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", want: "200 none 0 true"},
	{name: "HEAD with chunked", head: true, in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", want: "200 none 0 true"},
	{name: "1.0 until close", in: "HTTP/1.0 200 OK\r\n\r\n", want: "200 until-close 0 false"},
	{name: "1.0 keep-alive length", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", want: "200 length 2 true"},
	{name: "1.1 close", in: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", want: "200 length 2 false"},
	{name: "no reason", in: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", want: "200 length 0 true"},
	{name: "empty reason", in: "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", want: "404 length 0 true"},
	{name: "reason with spaces and obs-text", in: "HTTP/1.1 500 Bad \xe2\x80\x94 thing\r\nContent-Length: 0\r\n\r\n", want: "500 length 0 true"},
	{name: "duplicate host irrelevant", in: "HTTP/1.1 200 OK\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n", want: "200 length 0 true"},
	{name: "304 length declared", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 7, 7\r\n\r\n", want: "304 none 0 true declared 7"},
	{name: "HEAD length declared", head: true, in: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", want: "200 none 0 true declared 100"},
	{name: "204 length declared", in: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", want: "204 none 0 true declared 0"},
	{name: "length declared", in: "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", want: "200 length 5 true declared 5"},
	{name: "none declared", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", want: "200 chunked 0 true declared -1"},
	{name: "connection names an ordinary field", in: "HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n", want: "200 length 0 true"},
	{name: "odd names are the client's business", in: "HTTP/1.1 200 OK\r\nX_Y: 1\r\nContent-Length: 0\r\n\r\n", want: "200 length 0 true"},
	{name: "need more", in: "HTTP/1.1 200 OK\r\nContent-Le", status: -1},

	{name: "version 2.0", in: "HTTP/2.0 200 OK\r\n\r\n", status: 502},
	{name: "version 1.2", in: "HTTP/1.2 200 OK\r\n\r\n", status: 502},
	{name: "lowercase version", in: "http/1.1 200 OK\r\n\r\n", status: 502},
	{name: "two digit status", in: "HTTP/1.1 20 OK\r\n\r\n", status: 502},
	{name: "four digit status", in: "HTTP/1.1 2000 OK\r\n\r\n", status: 502},
	{name: "status 099", in: "HTTP/1.1 099 X\r\n\r\n", status: 502},
	{name: "status 600", in: "HTTP/1.1 600 X\r\n\r\n", status: 502},
	{name: "status letters", in: "HTTP/1.1 2x0 X\r\n\r\n", status: 502},
	{name: "control in reason", in: "HTTP/1.1 200 O\x01K\r\n\r\n", status: 502},
	{name: "empty status line", in: "\r\nHTTP/1.1 200 OK\r\n\r\n", status: 502},
	{name: "TE and CL", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", status: 502},
	{name: "CL mismatch", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", status: 502},
	{name: "CL invalid", in: "HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\n", status: 502},
	{name: "chunked twice", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", status: 502},
	{name: "TE in 1.0", in: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", status: 502},
	{name: "TE empty element", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n", status: 502},
	{name: "bare LF", in: "HTTP/1.1 200 OK\nContent-Length: 0\n\n", status: 502},
	{name: "obs-fold", in: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", status: 502},
	{name: "space before colon", in: "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", status: 502},
	{name: "NUL in value", in: "HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n", status: 502},
	{name: "head too large", lim: small, in: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 300) + "\r\n\r\n", status: 502},
	{name: "too many headers", lim: small, in: "HTTP/1.1 200 OK\r\n" + manyHeaders(5) + "\r\n", status: 502},
	{name: "connection names content-length", in: "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\n", status: 502},
	{name: "connection names transfer-encoding", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n", status: 502},
	{name: "connection names host", in: "HTTP/1.1 200 OK\r\nConnection: close, host\r\n\r\n", status: 502},
	{name: "kelvin sign is not chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chun\u212aed\r\n\r\n", status: 502},
}

func TestResponseTable(t *testing.T) {
	for _, c := range respCases {
		t.Run(c.name, func(t *testing.T) {
			data := []byte(c.in + c.extra)
			got := oneShotResponse(c.lim, data, c.head)
			if got.status != c.status {
				t.Fatalf("status %d (%s), want %d", got.status, got.reason, c.status)
			}
			if c.status == 0 {
				if got.n != len(c.in) {
					t.Fatalf("headLen %d, want %d", got.n, len(c.in))
				}
				var p Parser
				p.Limits = c.lim
				var r Response
				if _, err := p.ParseResponse(data, &r, c.head); err != nil {
					t.Fatal(err)
				}
				s := strings.Join([]string{itoa(r.Status), r.Framing.String(), itoa(int(r.ContentLength)), boolStr(r.KeepAlive)}, " ")
				if strings.Contains(c.want, " declared ") {
					s += " declared " + itoa(int(r.DeclaredLength))
				}
				if s != c.want {
					t.Errorf("got %q, want %q (%s)", s, c.want, summarizeResponse(&r))
				}
			}
			if bb := byteByByteResponse(c.lim, data, c.head); bb != got {
				t.Errorf("byte by byte:\n%+v\none shot:\n%+v", bb, got)
			}
			for k := 0; k <= len(data); k++ {
				if s := splitResponse(c.lim, data, c.head, k); s != got {
					t.Fatalf("split at %d:\n%+v\none shot:\n%+v", k, s, got)
				}
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestDifferentialNetHTTP checks that where both this package and
// net/http.ReadRequest accept a table head they agree on method, target,
// headers and framing.
func TestDifferentialNetHTTP(t *testing.T) {
	compared := 0
	for _, c := range reqCases {
		if c.status != 0 {
			continue
		}
		data := []byte(c.in + c.extra)
		p := Parser{Limits: c.lim}
		var req Request
		n, err := p.ParseRequest(data, &req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if diff := diffNetHTTPRequest(data[:n], &req); diff != "" {
			t.Errorf("%s: %s", c.name, diff)
		}
		compared++
	}
	for _, c := range respCases {
		if c.status != 0 {
			continue
		}
		data := []byte(c.in + c.extra)
		p := Parser{Limits: c.lim}
		var r Response
		n, err := p.ParseResponse(data, &r, c.head)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if diff := diffNetHTTPResponse(data[:n], &r); diff != "" {
			t.Errorf("%s: %s", c.name, diff)
		}
		compared++
	}
	if compared < 40 {
		t.Fatalf("only %d heads compared", compared)
	}
}

// diffNetHTTPRequest returns "" when net/http rejects head or agrees with r.
func diffNetHTTPRequest(head []byte, r *Request) string {
	hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		return ""
	}
	if hr.Method != string(r.Method) || hr.RequestURI != string(r.Target) {
		return "request line: net/http " + hr.Method + " " + hr.RequestURI + ", ours " + summarizeRequest(r)
	}
	if hr.ProtoMinor != r.Minor {
		return "minor version differs"
	}
	ours := http.Header{}
	for _, h := range r.Headers {
		k := textproto.CanonicalMIMEHeaderKey(string(h.Name))
		if k == "Host" {
			continue
		}
		ours[k] = append(ours[k], string(h.Value))
	}
	normalizeLikeNetHTTP(ours, hr.Header, hr.TransferEncoding != nil, hr.Close)
	if !headersEqual(ours, hr.Header) {
		return "headers: net/http " + headerString(hr.Header) + ", ours " + headerString(ours)
	}
	if r.Target[0] == '/' && hr.Host != string(r.Host) {
		return "host: net/http " + hr.Host + ", ours " + string(r.Host)
	}
	// For an absolute-form target net/http's Host is the URL's host, which
	// it has percent-decoded; ours is the authority as sent (what is
	// forwarded), so the two are compared only without pct-encoding.
	if r.Authority != nil && !bytes.ContainsRune(r.Authority, '%') && !strings.EqualFold(hr.Host, string(r.Authority)) {
		return "authority: net/http " + hr.Host + ", ours " + string(r.Authority)
	}
	switch r.Framing {
	case FramingChunked:
		if len(hr.TransferEncoding) != 1 || hr.TransferEncoding[0] != "chunked" {
			return "net/http does not see chunked"
		}
	case FramingLength:
		if hr.ContentLength != r.ContentLength {
			return "content length differs"
		}
	case FramingNone:
		if hr.ContentLength != 0 || len(hr.TransferEncoding) != 0 {
			return "net/http sees a body"
		}
	}
	if hr.Close == r.KeepAlive {
		return "keep-alive differs"
	}
	return ""
}

func diffNetHTTPResponse(head []byte, r *Response) string {
	hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	if err != nil {
		return ""
	}
	if hr.StatusCode != r.Status || hr.ProtoMinor != r.Minor {
		return "status line differs"
	}
	ours := http.Header{}
	for _, h := range r.Headers {
		k := textproto.CanonicalMIMEHeaderKey(string(h.Name))
		ours[k] = append(ours[k], string(h.Value))
	}
	normalizeLikeNetHTTP(ours, hr.Header, hr.TransferEncoding != nil, hr.Close)
	switch r.Framing {
	case FramingChunked:
		if len(hr.TransferEncoding) == 0 || hr.TransferEncoding[len(hr.TransferEncoding)-1] != "chunked" {
			return "net/http does not see chunked"
		}
	case FramingLength:
		if hr.ContentLength != r.ContentLength {
			return "content length differs"
		}
	}
	if !headersEqual(ours, hr.Header) {
		return "headers: net/http " + headerString(hr.Header) + ", ours " + headerString(ours)
	}
	return ""
}

// normalizeLikeNetHTTP applies to our header map the rewrites net/http does
// once it has acted on a field: Transfer-Encoding is removed, repeated
// identical Content-Length lines are collapsed, and a response's
// "Connection: close" is removed.
func normalizeLikeNetHTTP(ours, theirs http.Header, te, close bool) {
	if te {
		delete(ours, "Transfer-Encoding")
		// net/http's fixTrailer moves a chunked message's Trailer field out of the header map.
		if theirs["Trailer"] == nil {
			delete(ours, "Trailer")
		}
	}
	if cl := ours["Content-Length"]; len(cl) > 1 && len(theirs["Content-Length"]) == 1 {
		ours["Content-Length"] = cl[:1]
	}
	if close && theirs["Connection"] == nil {
		delete(ours, "Connection")
	}
	// net/http's fixPragmaCacheControl: "Pragma: no-cache" without Cache-Control reads as if
	// "Cache-Control: no-cache" had been sent too (RFC 7234 section 5.4). A reader's rewrite, not
	// something on the wire, so mirror it rather than count it as a disagreement.
	if hp := ours["Pragma"]; len(hp) > 0 && hp[0] == "no-cache" && ours["Cache-Control"] == nil {
		ours["Cache-Control"] = []string{"no-cache"}
	}
}

func headersEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb := b[k]
		if len(va) != len(vb) {
			return false
		}
		for i := range va {
			if va[i] != vb[i] {
				return false
			}
		}
	}
	return true
}

func headerString(h http.Header) string {
	var b strings.Builder
	_ = h.Write(&b)
	return b.String()
}

func TestTokens(t *testing.T) {
	cases := []struct {
		list, tok string
		want      bool
	}{
		{"keep-alive, Upgrade", "upgrade", true},
		{"keep-alive, Upgrade", "keep-alive", true},
		{"keep-alive,Upgrade", "UPGRADE", true},
		{" \tclose\t ", "close", true},
		{"closed", "close", false},
		{"keep-alive", "alive", false},
		{"", "close", false},
		{",,close,,", "close", true},
		{"a b, close", "a", false},
		{"upgrade", "upgradeX", false},
		{"Kelvin", "kelvin", true},
		{"\u212aelvin", "kelvin", false}, // Kelvin sign must not fold to K
	}
	for _, c := range cases {
		if got := HasToken([]byte(c.list), c.tok); got != c.want {
			t.Errorf("HasToken(%q, %q) = %v", c.list, c.tok, got)
		}
	}
	eq := []struct {
		a, b string
		want bool
	}{
		{"Content-Length", "content-length", true},
		{"CONTENT-LENGTH", "content-length", true},
		{"content-lengtH", "Content-Length", true},
		{"[", "{", false}, // 0x5b|0x20 == 0x7b, but they are not letters
		{"@", "`", false},
		{"a", "ab", false},
		{"", "", true},
	}
	for _, c := range eq {
		if got := EqualFold([]byte(c.a), c.b); got != c.want {
			t.Errorf("EqualFold(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

func TestStatusOf(t *testing.T) {
	if StatusOf(nil) != 0 || StatusOf(ErrNeedMore) != 400 || StatusOf(reqErrs[kVersion]) != 505 {
		t.Fatal("StatusOf basic cases")
	}
	wrapped := &wrapErr{reqErrs[kConnect]}
	if StatusOf(wrapped) != 501 {
		t.Fatal("StatusOf does not unwrap")
	}
	for k, e := range reqErrs {
		if k == 0 {
			continue
		}
		if e == nil || respErrs[k] == nil || respErrs[k].Status != 502 || e.Reason == "" {
			t.Fatalf("error kind %d incomplete", k)
		}
		if !strings.Contains(e.Error(), e.Reason) {
			t.Fatalf("Error() %q lacks reason", e.Error())
		}
	}
}

type wrapErr struct{ err error }

func (w *wrapErr) Error() string { return "wrapped: " + w.err.Error() }
func (w *wrapErr) Unwrap() error { return w.err }

// TestResumeOffset feeds a large head one byte at a time and checks that
// after every ErrNeedMore the parser's scan offset has reached the end of
// what it was given: the next call starts at the new bytes, which is what
// makes trickled heads cost O(n). BenchmarkTrickle measures the same.
func TestResumeOffset(t *testing.T) {
	head := []byte("GET /" + strings.Repeat("p", 3000) + " HTTP/1.1\r\nHost: a\r\nCookie: " +
		strings.Repeat("c", 10000) + "\r\n" + manyHeaders(50) + "\r\n")
	var p Parser
	var req Request
	for i := 1; i <= len(head); i++ {
		n, err := p.ParseRequest(head[:i], &req)
		if err == nil {
			if n != len(head) || i != len(head) {
				t.Fatalf("headLen %d after %d bytes", n, i)
			}
			return
		}
		if err != ErrNeedMore {
			t.Fatal(err)
		}
		if int(p.scan) != i {
			t.Fatalf("after %d bytes the scan offset is %d", i, p.scan)
		}
	}
	t.Fatal("head never completed")
}

// TestWordScans compares the eight- and four-byte-at-a-time scanners with
// the obvious byte loops on random inputs rich in the boundary bytes.
func TestWordScans(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("aZ09 \t\r\n\x00\x01\x1f\x20\x7e\x7f\x80\xff:;\"(-_~!")
	for range 20000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			if rng.IntN(3) == 0 {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[i] = 'a' + byte(rng.IntN(26))
			}
		}
		start := 0
		if len(b) > 0 {
			start = rng.IntN(len(b) + 1)
		}
		want := start
		for want < len(b) && isValueByte[b[want]] {
			want++
		}
		if got := skipValueBytes(b, start); got != want {
			t.Fatalf("skipValueBytes(%q, %d) = %d, want %d", b, start, got, want)
		}
		want = start
		for want < len(b) && isTchar[b[want]] {
			want++
		}
		if got := skipToken(b, start); got != want {
			t.Fatalf("skipToken(%q, %d) = %d, want %d", b, start, got, want)
		}
	}
}
