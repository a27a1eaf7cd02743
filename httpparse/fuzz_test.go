package httpparse

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/http/httputil"
	"testing"
)

// Seeds beyond the checked-in corpus (testdata/fuzz/<Target>) come from the
// table tests, so every rule is a starting point for mutation.

var fuzzLimits = []Limits{
	{}, // defaults
	{MaxHeadBytes: 300, MaxHeaders: 6, MaxTargetBytes: 40},
}

// looseLimits re-parses serialised heads, which can grow (": " after each
// colon) beyond the limits the original passed.
var looseLimits = Limits{MaxHeadBytes: 1 << 20, MaxHeaders: MaxHeadersCap, MaxTargetBytes: 1 << 20}

func FuzzParseRequest(f *testing.F) {
	for _, c := range reqCases {
		f.Add([]byte(c.in + c.extra))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 8<<10 {
			return // byte-by-byte feeding is O(n) per prefix copy below; keep runs fast
		}
		for _, lim := range fuzzLimits {
			one := oneShotRequest(lim, data)
			if one.status == 0 && (one.n < 4 || one.n > len(data) || string(data[one.n-4:one.n]) != "\r\n\r\n") {
				t.Fatalf("headLen %d does not end a head in %q", one.n, data)
			}
			if one.status > 0 && one.status != 400 && one.status != 414 && one.status != 431 &&
				one.status != 501 && one.status != 505 {
				t.Fatalf("unexpected status %d", one.status)
			}
			if bb := byteByByteRequest(lim, data); bb != one {
				t.Fatalf("byte by byte differs:\n%+v\n%+v", bb, one)
			}
			for _, k := range []int{len(data) / 2, len(data) / 3, len(data) - 1} {
				if k > 0 {
					if s := splitRequest(lim, data, k); s != one {
						t.Fatalf("split at %d differs:\n%+v\n%+v", k, s, one)
					}
				}
			}
			if one.status != 0 {
				continue
			}
			var p Parser
			p.Limits = lim
			var req Request
			if _, err := p.ParseRequest(data, &req); err != nil {
				t.Fatal(err)
			}
			checkRequestInvariants(t, &req)
			again := oneShotRequest(looseLimits, serializeRequest(&req))
			if again.status != 0 || again.head != one.head {
				t.Fatalf("re-serialised head parses differently:\n%+v\n%+v", again, one)
			}
		}
	})
}

func checkRequestInvariants(t *testing.T, r *Request) {
	t.Helper()
	if !IsToken(r.Method) || len(r.Target) == 0 || (r.Minor != 0 && r.Minor != 1) {
		t.Fatalf("bad request line %s", summarizeRequest(r))
	}
	if r.Minor == 1 && r.Host == nil {
		t.Fatal("HTTP/1.1 accepted without Host")
	}
	checkFields(t, r.Headers)
	odd := 0
	for _, h := range r.Headers {
		if !IsPlainName(h.Name) {
			odd++
		}
		if EqualFold(h.Name, "Connection") &&
			(HasToken(h.Value, "host") || HasToken(h.Value, "content-length") || HasToken(h.Value, "transfer-encoding")) {
			t.Fatalf("accepted Connection: %q", h.Value)
		}
	}
	if odd != r.OddNames {
		t.Fatalf("OddNames %d, counted %d", r.OddNames, odd)
	}
	// Path is the tail of Target; Authority, when set, is what lies between
	// "://" and Path, is a valid Host value and matches Host.
	if r.Path == nil || !bytes.HasSuffix(r.Target, r.Path) {
		t.Fatalf("Path %q is not the tail of Target %q", r.Path, r.Target)
	}
	if r.Authority != nil {
		pre := r.Target[:len(r.Target)-len(r.Path)]
		if len(r.Authority) == 0 || !bytes.HasSuffix(pre, r.Authority) || !bytes.HasSuffix(pre[:len(pre)-len(r.Authority)], []byte("://")) ||
			!validHost(r.Authority) || (r.Host != nil && !equalFold(r.Host, r.Authority)) {
			t.Fatalf("Authority %q of %q (Host %q)", r.Authority, r.Target, r.Host)
		}
	} else if r.Target[0] != '/' && string(r.Target) != "*" {
		t.Fatalf("target %q without Authority", r.Target)
	}
	te := headersHave(r.Headers, "Transfer-Encoding")
	cl := headersHave(r.Headers, "Content-Length")
	switch {
	case te && cl:
		t.Fatal("accepted Transfer-Encoding with Content-Length")
	case te && (r.Framing != FramingChunked || r.Minor != 1):
		t.Fatal("Transfer-Encoding accepted without chunked framing")
	case !te && cl && r.Framing != FramingLength:
		t.Fatal("Content-Length ignored")
	case !te && !cl && r.Framing != FramingNone:
		t.Fatal("body framing invented")
	}
}

func checkFields(t *testing.T, hs []Header) {
	t.Helper()
	for _, h := range hs {
		if !IsToken(h.Name) {
			t.Fatalf("field name %q is not a token", h.Name)
		}
		if bytes.ContainsAny(h.Value, "\r\n\x00") {
			t.Fatalf("field value %q holds CR, LF or NUL", h.Value)
		}
		if len(h.Value) > 0 && (h.Value[0] == ' ' || h.Value[0] == '\t' ||
			h.Value[len(h.Value)-1] == ' ' || h.Value[len(h.Value)-1] == '\t') {
			t.Fatalf("field value %q not trimmed", h.Value)
		}
	}
}

func headersHave(hs []Header, name string) bool {
	return headerValue(hs, name) != nil
}

func FuzzParseResponse(f *testing.F) {
	for _, c := range respCases {
		f.Add([]byte(c.in+c.extra), c.head)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		if len(data) > 8<<10 {
			return
		}
		for _, lim := range fuzzLimits {
			one := oneShotResponse(lim, data, head)
			if one.status > 0 && one.status != 502 {
				t.Fatalf("response error with status %d", one.status)
			}
			if bb := byteByByteResponse(lim, data, head); bb != one {
				t.Fatalf("byte by byte differs:\n%+v\n%+v", bb, one)
			}
			if k := len(data) / 2; k > 0 {
				if s := splitResponse(lim, data, head, k); s != one {
					t.Fatalf("split at %d differs:\n%+v\n%+v", k, s, one)
				}
			}
			if one.status != 0 {
				continue
			}
			var p Parser
			p.Limits = lim
			var r Response
			if _, err := p.ParseResponse(data, &r, head); err != nil {
				t.Fatal(err)
			}
			checkFields(t, r.Headers)
			if r.Status < 100 || r.Status > 599 {
				t.Fatalf("status %d accepted", r.Status)
			}
			if (head || r.Status < 200 || r.Status == 204 || r.Status == 304) && r.Framing != FramingNone {
				t.Fatal("body framing on a bodiless response")
			}
			if r.Framing == FramingUntilClose && r.KeepAlive {
				t.Fatal("until-close body on a persistent connection")
			}
			if cl := headerValue(r.Headers, "Content-Length"); (cl == nil) != (r.DeclaredLength < 0) ||
				(r.Framing == FramingLength && r.DeclaredLength != r.ContentLength) {
				t.Fatalf("DeclaredLength %d, Content-Length %q", r.DeclaredLength, cl)
			}
			again := oneShotResponse(looseLimits, serializeResponse(&r), head)
			if again.status != 0 || again.head != one.head {
				t.Fatalf("re-serialised head parses differently:\n%+v\n%+v", again, one)
			}
		}
	})
}

// FuzzChunkedDecoder checks that the decoder's verdict does not depend on
// how the body is cut into reads or whether data is skipped in bulk, and
// that an accepted body carries the same data net/http's reader finds.
func FuzzChunkedDecoder(f *testing.F) {
	for i, c := range chunkCases {
		f.Add([]byte(c.in+c.extra), uint64(i))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		if len(data) > 4<<10 {
			return
		}
		whole := feedPieces(data, nil, false)
		if whole.status != 0 && whole.status != 400 {
			t.Fatalf("status %d", whole.status)
		}
		if whole.n > len(data) {
			t.Fatalf("consumed %d of %d", whole.n, len(data))
		}
		ones := make([]int, len(data))
		for i := range ones {
			ones[i] = i
		}
		if got := feedPieces(data, ones, false); got != whole {
			t.Fatalf("byte by byte %+v, whole %+v", got, whole)
		}
		rng := rand.New(rand.NewPCG(seed, 7))
		var cuts []int
		for off := 0; off < len(data); off += 1 + rng.IntN(64) {
			cuts = append(cuts, off)
		}
		if got := feedPieces(data, cuts, seed%2 == 0); got != whole {
			t.Fatalf("random pieces %+v, whole %+v", got, whole)
		}
		if !whole.done {
			return
		}
		msg := data[:whole.n]
		ours := decodeData(t, msg)
		ref, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(msg)))
		if err == nil && string(ref) != ours {
			t.Fatalf("data differs from net/http's chunked reader: %q vs %q", ours, ref)
		}
	})
}

// FuzzDifferentialNetHTTP: wherever both parsers accept a request head they
// must agree on method, target, version, headers, Host, framing and
// persistence.
func FuzzDifferentialNetHTTP(f *testing.F) {
	for _, c := range reqCases {
		f.Add([]byte(c.in + c.extra))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Parser
		var req Request
		n, err := p.ParseRequest(data, &req)
		if err != nil {
			if !errors.Is(err, ErrNeedMore) && StatusOf(err) == 0 {
				t.Fatal("error without status")
			}
			return
		}
		if diff := diffNetHTTPRequest(data[:n], &req); diff != "" {
			t.Fatalf("%q: %s", data[:n], diff)
		}
	})
}
