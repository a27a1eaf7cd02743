package httpparse

import (
	"errors"
	"fmt"
	"strings"
)

// outcome is everything a parse decides, flattened to compare runs that fed
// the same bytes in different pieces.
type outcome struct {
	n      int
	status int // 0 ok, -1 ErrNeedMore, else *Error.Status
	reason string
	head   string // summary of the parsed head when status == 0
}

func statusOrNeedMore(err error) (int, string) {
	switch {
	case err == nil:
		return 0, ""
	case errors.Is(err, ErrNeedMore):
		return -1, "need more"
	}
	var e *Error
	if !errors.As(err, &e) {
		panic(fmt.Sprintf("error of type %T: %v", err, err))
	}
	return e.Status, e.Reason
}

func summarizeRequest(r *Request) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q %q 1.%d host=%q auth=%q path=%q framing=%v cl=%d ka=%v e100=%v odd=%d", r.Method, r.Target, r.Minor,
		r.Host, r.Authority, r.Path, r.Framing, r.ContentLength, r.KeepAlive, r.Expect100, r.OddNames)
	for _, h := range r.Headers {
		fmt.Fprintf(&b, " [%q: %q]", h.Name, h.Value)
	}
	return b.String()
}

func summarizeResponse(r *Response) string {
	var b strings.Builder
	fmt.Fprintf(&b, "1.%d %d %q framing=%v cl=%d declared=%d ka=%v", r.Minor, r.Status, r.Reason, r.Framing,
		r.ContentLength, r.DeclaredLength, r.KeepAlive)
	for _, h := range r.Headers {
		fmt.Fprintf(&b, " [%q: %q]", h.Name, h.Value)
	}
	return b.String()
}

func oneShotRequest(lim Limits, data []byte) outcome {
	p := Parser{Limits: lim}
	var req Request
	n, err := p.ParseRequest(data, &req)
	return requestOutcome(n, err, &req)
}

func requestOutcome(n int, err error, req *Request) outcome {
	o := outcome{n: n}
	o.status, o.reason = statusOrNeedMore(err)
	if o.status == 0 {
		o.head = summarizeRequest(req)
	}
	return o
}

// byteByByteRequest feeds growing prefixes to one Parser, as an event loop
// does when the head trickles in.
func byteByByteRequest(lim Limits, data []byte) outcome {
	p := Parser{Limits: lim}
	var req Request
	for i := 1; i <= len(data); i++ {
		n, err := p.ParseRequest(data[:i], &req)
		if !errors.Is(err, ErrNeedMore) {
			return requestOutcome(n, err, &req)
		}
	}
	return outcome{status: -1, reason: "need more"}
}

// splitRequest feeds data[:k] and then all of data to one Parser.
func splitRequest(lim Limits, data []byte, k int) outcome {
	p := Parser{Limits: lim}
	var req Request
	n, err := p.ParseRequest(data[:k], &req)
	if !errors.Is(err, ErrNeedMore) {
		return requestOutcome(n, err, &req)
	}
	n, err = p.ParseRequest(data, &req)
	return requestOutcome(n, err, &req)
}

func responseOutcome(n int, err error, r *Response) outcome {
	o := outcome{n: n}
	o.status, o.reason = statusOrNeedMore(err)
	if o.status == 0 {
		o.head = summarizeResponse(r)
	}
	return o
}

func oneShotResponse(lim Limits, data []byte, head bool) outcome {
	p := Parser{Limits: lim}
	var r Response
	n, err := p.ParseResponse(data, &r, head)
	return responseOutcome(n, err, &r)
}

func byteByByteResponse(lim Limits, data []byte, head bool) outcome {
	p := Parser{Limits: lim}
	var r Response
	for i := 1; i <= len(data); i++ {
		n, err := p.ParseResponse(data[:i], &r, head)
		if !errors.Is(err, ErrNeedMore) {
			return responseOutcome(n, err, &r)
		}
	}
	return outcome{status: -1, reason: "need more"}
}

func splitResponse(lim Limits, data []byte, head bool, k int) outcome {
	p := Parser{Limits: lim}
	var r Response
	n, err := p.ParseResponse(data[:k], &r, head)
	if !errors.Is(err, ErrNeedMore) {
		return responseOutcome(n, err, &r)
	}
	n, err = p.ParseResponse(data, &r, head)
	return responseOutcome(n, err, &r)
}

// serializeRequest writes a parsed head back out in canonical form: what a
// proxy forwarding it unchanged would send.
func serializeRequest(r *Request) []byte {
	var b []byte
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, r.Target...)
	b = append(b, " HTTP/1."...)
	b = append(b, byte('0'+r.Minor))
	b = append(b, "\r\n"...)
	for _, h := range r.Headers {
		b = append(b, h.Name...)
		b = append(b, ": "...)
		b = append(b, h.Value...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

func serializeResponse(r *Response) []byte {
	b := fmt.Appendf(nil, "HTTP/1.%d %03d %s\r\n", r.Minor, r.Status, r.Reason)
	for _, h := range r.Headers {
		b = append(b, h.Name...)
		b = append(b, ": "...)
		b = append(b, h.Value...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}
