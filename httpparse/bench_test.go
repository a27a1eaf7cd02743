package httpparse

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

// browserGET is what Firefox sends for a page load with a few cookies.
var browserGET = []byte("GET /app/dashboard?tab=overview&sort=desc HTTP/1.1\r\n" +
	"Host: app.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Referer: https://app.example.com/login\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; csrftoken=Zx81kQpL0aNv3mWc7TbR; _ga=GA1.2.1234567890.1700000000; theme=dark\r\n" +
	"Upgrade-Insecure-Requests: 1\r\n" +
	"Sec-Fetch-Dest: document\r\n" +
	"Sec-Fetch-Mode: navigate\r\n" +
	"Sec-Fetch-Site: same-origin\r\n" +
	"Sec-Fetch-User: ?1\r\n" +
	"Priority: u=0, i\r\n\r\n")

// wsUpgrade is Chrome's WebSocket opening handshake.
var wsUpgrade = []byte("GET /socket?room=42 HTTP/1.1\r\n" +
	"Host: app.example.com\r\n" +
	"Connection: Upgrade\r\n" +
	"Pragma: no-cache\r\n" +
	"Cache-Control: no-cache\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n" +
	"Upgrade: websocket\r\n" +
	"Origin: https://app.example.com\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")

// response200 is a typical backend answer head.
var response200 = []byte("HTTP/1.1 200 OK\r\n" +
	"Date: Tue, 24 Nov 2026 22:00:00 GMT\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"Content-Length: 5120\r\n" +
	"Cache-Control: no-cache, private\r\n" +
	"Vary: Accept-Encoding\r\n" +
	"X-Request-Id: 4f3c2a1b-9d8e-4c7b-a6f5-e4d3c2b1a098\r\n" +
	"Server: backend/1.0\r\n\r\n")

// chunkedBody is a body as a streaming backend writes it.
var chunkedBody = []byte("400;name=\"v\"\r\n" + strings.Repeat("x", 1024) + "\r\n" +
	"200\r\n" + strings.Repeat("y", 512) + "\r\n" +
	"1a\r\n" + strings.Repeat("z", 26) + "\r\n" +
	"0\r\nX-Checksum: 1234\r\n\r\n")

func TestBenchInputs(t *testing.T) {
	if n := len(browserGET); n < 550 || n > 700 {
		t.Fatalf("browser GET is %d bytes, want about 600", n)
	}
	var p Parser
	var req Request
	if n, err := p.ParseRequest(browserGET, &req); err != nil || n != len(browserGET) || len(req.Headers) != 14 {
		t.Fatalf("browser GET: %d %v %d", n, err, len(req.Headers))
	}
	if _, err := p.ParseRequest(wsUpgrade, &req); err != nil {
		t.Fatal(err)
	}
	if err := CheckWebSocketRequest(&req); err != nil {
		t.Fatal(err)
	}
	var resp Response
	if _, err := p.ParseResponse(response200, &resp, false); err != nil || resp.ContentLength != 5120 {
		t.Fatal(err, resp.ContentLength)
	}
	var d ChunkedDecoder
	if n, done, err := d.Feed(chunkedBody); !done || err != nil || n != len(chunkedBody) {
		t.Fatal(n, done, err)
	}
}

// TestZeroAllocs proves the hot paths allocate nothing, including the
// resumable path (a head arriving in two pieces) and the error path.
func TestZeroAllocs(t *testing.T) {
	var p Parser
	req := new(Request)
	resp := new(Response)
	var d ChunkedDecoder
	dst := make([]byte, 0, 64)
	bad := []byte("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
	absoluteOdd := []byte("POST http://a.example:8080?q HTTP/1.1\r\nHost: a.example:8080\r\nX_Forwarded_For: 1\r\nContent-Length: 5, 5\r\n\r\n")
	badPartial := []byte("GET / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n")
	cases := map[string]func(){
		"BrowserGET": func() {
			if _, err := p.ParseRequest(browserGET, req); err != nil {
				panic(err)
			}
		},
		"BrowserGETInTwoPieces": func() {
			if _, err := p.ParseRequest(browserGET[:300], req); err != ErrNeedMore {
				panic(err)
			}
			if _, err := p.ParseRequest(browserGET, req); err != nil {
				panic(err)
			}
		},
		"WebSocketUpgrade": func() {
			if _, err := p.ParseRequest(wsUpgrade, req); err != nil {
				panic(err)
			}
			if err := CheckWebSocketRequest(req); err != nil {
				panic(err)
			}
			dst = AppendAccept(dst[:0], req.Header("Sec-WebSocket-Key"))
			if !VerifyAccept(req.Header("Sec-WebSocket-Key"), dst) {
				panic("accept")
			}
			if !req.IsWebSocketUpgrade() || !req.HasToken("Connection", "upgrade") {
				panic("tokens")
			}
		},
		"Response200": func() {
			if _, err := p.ParseResponse(response200, resp, false); err != nil {
				panic(err)
			}
		},
		"ChunkedDecoder": func() {
			d.Reset()
			for off := 0; off < len(chunkedBody); off += 100 {
				if _, _, err := d.Feed(chunkedBody[off:min(off+100, len(chunkedBody))]); err != nil {
					panic(err)
				}
			}
			if !d.Done() {
				panic("not done")
			}
		},
		"AbsoluteFormOddNames": func() {
			if _, err := p.ParseRequest(absoluteOdd, req); err != nil || req.OddNames != 1 || req.Authority == nil {
				panic(err)
			}
		},
		"FailFastPartialHead": func() {
			if _, err := p.ParseRequest(badPartial, req); StatusOf(err) != 400 {
				panic(err)
			}
		},
		"ErrorPath": func() {
			_, err := p.ParseRequest(bad, req)
			if StatusOf(err) != 400 {
				panic(err)
			}
		},
	}
	for name, f := range cases {
		if a := testing.AllocsPerRun(200, f); a != 0 {
			t.Errorf("%s: %v allocs per run", name, a)
		}
	}
}

// reportCPU adds a cpu-ns/op metric next to ns/op; use as
// defer reportCPU(b)() before the b.Loop loop.
func reportCPU(b *testing.B) func() {
	start := processCPUNanos()
	return func() {
		end := processCPUNanos()
		if start >= 0 && end >= 0 && b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func BenchmarkBrowserGET(b *testing.B) {
	var p Parser
	req := new(Request)
	b.SetBytes(int64(len(browserGET)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := p.ParseRequest(browserGET, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNetHTTPBrowserGET(b *testing.B) {
	rd := bytes.NewReader(browserGET)
	br := bufio.NewReader(rd)
	b.SetBytes(int64(len(browserGET)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		rd.Reset(browserGET)
		br.Reset(rd)
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWebSocketUpgrade parses the handshake and validates it (what the
// proxy does before dialing the backend); its twin does the same checks on
// net/http's parse.
func BenchmarkWebSocketUpgrade(b *testing.B) {
	var p Parser
	req := new(Request)
	b.SetBytes(int64(len(wsUpgrade)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := p.ParseRequest(wsUpgrade, req); err != nil {
			b.Fatal(err)
		}
		if err := CheckWebSocketRequest(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNetHTTPWebSocketUpgrade(b *testing.B) {
	rd := bytes.NewReader(wsUpgrade)
	br := bufio.NewReader(rd)
	var key [18]byte
	b.SetBytes(int64(len(wsUpgrade)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		rd.Reset(wsUpgrade)
		br.Reset(rd)
		r, err := http.ReadRequest(br)
		if err != nil {
			b.Fatal(err)
		}
		if r.Method != "GET" || r.ProtoMinor != 1 ||
			!headerHasToken(r.Header, "Upgrade", "websocket") || !headerHasToken(r.Header, "Connection", "upgrade") ||
			r.Header.Get("Sec-WebSocket-Version") != "13" {
			b.Fatal("not a websocket handshake")
		}
		if n, err := base64.StdEncoding.Decode(key[:], []byte(r.Header.Get("Sec-WebSocket-Key"))); err != nil || n != 16 {
			b.Fatal("bad key")
		}
	}
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, e := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(e), token) {
				return true
			}
		}
	}
	return false
}

func BenchmarkResponse200(b *testing.B) {
	var p Parser
	resp := new(Response)
	b.SetBytes(int64(len(response200)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := p.ParseResponse(response200, resp, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNetHTTPResponse200(b *testing.B) {
	rd := bytes.NewReader(response200)
	br := bufio.NewReader(rd)
	b.SetBytes(int64(len(response200)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		rd.Reset(response200)
		br.Reset(rd)
		if _, err := http.ReadResponse(br, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrickle feeds the browser GET one byte at a time: linear resume
// keeps this within a small factor of the one-shot parse per byte.
func BenchmarkTrickle(b *testing.B) {
	var p Parser
	req := new(Request)
	b.SetBytes(int64(len(browserGET)))
	b.ReportAllocs()
	for b.Loop() {
		for i := 1; i < len(browserGET); i++ {
			if _, err := p.ParseRequest(browserGET[:i], req); err != ErrNeedMore {
				b.Fatal(err)
			}
		}
		if _, err := p.ParseRequest(browserGET, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChunkedDecoder(b *testing.B) {
	var d ChunkedDecoder
	b.SetBytes(int64(len(chunkedBody)))
	b.ReportAllocs()
	for b.Loop() {
		d.Reset()
		if _, done, err := d.Feed(chunkedBody); !done || err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendAccept(b *testing.B) {
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	dst := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendAccept(dst[:0], key)
	}
}

// BenchmarkParseSplit parses the browser GET arriving in two reads, so the
// resumable path (not the one-read fast path) does the work.
func BenchmarkParseSplit(b *testing.B) {
	var p Parser
	req := new(Request)
	b.SetBytes(int64(len(browserGET)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.ParseRequest(browserGET[:300], req); err != ErrNeedMore {
			b.Fatal(err)
		}
		if _, err := p.ParseRequest(browserGET, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseResponseSplit is BenchmarkParseSplit for a response head.
func BenchmarkParseResponseSplit(b *testing.B) {
	var p Parser
	resp := new(Response)
	b.SetBytes(int64(len(response200)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.ParseResponse(response200[:100], resp, false); err != ErrNeedMore {
			b.Fatal(err)
		}
		if _, err := p.ParseResponse(response200, resp, false); err != nil {
			b.Fatal(err)
		}
	}
}
