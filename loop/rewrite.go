package loop

import (
	"bytes"
	"strconv"
	"sync"

	"github.com/wsgate/wsgate/httpparse"
)

// reqHeadOpts says how a request head is rebuilt for the backend.
type reqHeadOpts struct {
	backendHost  []byte // Host sent when PreserveHost is off or the client sent none
	clientIP     []byte // appended to X-Forwarded-For
	preserveHost bool
	forwarded    bool
	websocket    bool // keep the upgrade: emit Connection: Upgrade and Upgrade: websocket
}

// respHeadOpts says how a response head is rebuilt for the client.
type respHeadOpts struct {
	backendHost []byte // Location values pointing here are rewritten ...
	clientHost  []byte // ... to point here (the Host the client used); nil disables the rewrite
	close       bool   // we close the client connection after this response
	websocket   bool   // a verified 101: emit Connection: Upgrade and Upgrade: websocket
	interim     bool   // 1xx: no Connection field of our own
}

const crlf = "\r\n"

// isHopByHop reports the fields that describe one connection, not the message (RFC 9110 7.6.1,
// plus Proxy-Connection and Trailer as net/http/httputil strips them).
func isHopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return httpparse.EqualFold(name, "TE")
	case 7:
		return httpparse.EqualFold(name, "Upgrade") || httpparse.EqualFold(name, "Trailer")
	case 10:
		return httpparse.EqualFold(name, "Connection") || httpparse.EqualFold(name, "Keep-Alive")
	case 16:
		return httpparse.EqualFold(name, "Proxy-Connection")
	}
	return false
}

// namedByConnection reports whether a Connection field lists name: such fields are hop-by-hop too.
func namedByConnection(hs []httpparse.Header, name []byte) bool {
	for i := range hs {
		if len(hs[i].Name) == 10 && httpparse.EqualFold(hs[i].Name, "Connection") && listHas(hs[i].Value, name) {
			return true
		}
	}
	return false
}

// listHas is httpparse.HasToken for a []byte token, so no string conversion is needed.
func listHas(list, tok []byte) bool {
	for len(list) > 0 {
		i := bytes.IndexByte(list, ',')
		var el []byte
		if i < 0 {
			el, list = list, nil
		} else {
			el, list = list[:i], list[i+1:]
		}
		el = bytes.Trim(el, " \t")
		if bytes.EqualFold(el, tok) {
			return true
		}
	}
	return false
}

// splitAbsolute splits an absolute-form target into authority and the rest (path?query).
func splitAbsolute(t []byte) (authority, rest []byte, ok bool) {
	var n int
	switch {
	case len(t) >= 7 && httpparse.EqualFold(t[:7], "http://"):
		n = 7
	case len(t) >= 8 && httpparse.EqualFold(t[:8], "https://"):
		n = 8
	default:
		return nil, nil, false
	}
	t = t[n:]
	i := bytes.IndexAny(t, "/?")
	if i < 0 {
		return t, nil, true
	}
	return t[:i], t[i:], true
}

// appendRequestHead rebuilds req for the backend: origin-form target, Host per PreserveHost,
// hop-by-hop fields dropped, X-Forwarded-* set. It allocates nothing when dst has room.
func appendRequestHead(dst []byte, req *httpparse.Request, o *reqHeadOpts) []byte {
	target, host := req.Target, req.Host
	if auth, rest, ok := splitAbsolute(target); ok {
		// RFC 9112 3.2.2: an absolute-form target overrides Host.
		target, host = rest, auth
	}
	dst = append(dst, req.Method...)
	dst = append(dst, ' ')
	if len(target) == 0 || target[0] == '?' {
		dst = append(dst, '/')
	}
	dst = append(dst, target...)
	if req.Minor == 0 {
		dst = append(dst, " HTTP/1.0\r\n"...)
	} else {
		dst = append(dst, " HTTP/1.1\r\n"...)
	}
	dst = append(dst, "Host: "...)
	if o.preserveHost && len(host) > 0 {
		dst = append(dst, host...)
	} else {
		dst = append(dst, o.backendHost...)
	}
	dst = append(dst, crlf...)
	hs := req.Headers
	for i := range hs {
		name := hs[i].Name
		if httpparse.EqualFold(name, "Host") || isHopByHop(name) || namedByConnection(hs, name) {
			continue
		}
		if o.forwarded && isForwardedField(name) {
			continue
		}
		dst = append(dst, name...)
		dst = append(dst, ": "...)
		dst = append(dst, hs[i].Value...)
		dst = append(dst, crlf...)
	}
	if o.forwarded {
		dst = append(dst, "X-Forwarded-For: "...)
		for i := range hs {
			if httpparse.EqualFold(hs[i].Name, "X-Forwarded-For") && len(hs[i].Value) > 0 {
				dst = append(dst, hs[i].Value...)
				dst = append(dst, ", "...)
			}
		}
		dst = append(dst, o.clientIP...)
		dst = append(dst, "\r\nX-Forwarded-Proto: http\r\n"...)
		if len(host) > 0 {
			dst = append(dst, "X-Forwarded-Host: "...)
			dst = append(dst, host...)
			dst = append(dst, crlf...)
		}
	}
	if o.websocket {
		dst = append(dst, "Connection: Upgrade\r\nUpgrade: websocket\r\n"...)
	}
	return append(dst, crlf...)
}

func isForwardedField(name []byte) bool {
	return len(name) >= 15 && (httpparse.EqualFold(name, "X-Forwarded-For") ||
		httpparse.EqualFold(name, "X-Forwarded-Proto") || httpparse.EqualFold(name, "X-Forwarded-Host"))
}

// appendResponseHead rebuilds a backend response head for the client: hop-by-hop fields dropped,
// Location/Content-Location rewritten back to the client's Host, our own Connection field added.
func appendResponseHead(dst []byte, resp *httpparse.Response, o *respHeadOpts) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(resp.Status), 10)
	dst = append(dst, ' ')
	dst = append(dst, resp.Reason...)
	dst = append(dst, crlf...)
	hs := resp.Headers
	for i := range hs {
		name := hs[i].Name
		// Trailer stays: the chunked body, trailer section included, is relayed verbatim, and
		// strict clients only accept trailer fields that were announced (RFC 9110 6.6.2).
		if (isHopByHop(name) && !httpparse.EqualFold(name, "Trailer")) || namedByConnection(hs, name) {
			continue
		}
		dst = append(dst, name...)
		dst = append(dst, ": "...)
		if isLocationField(name) {
			dst = appendLocation(dst, hs[i].Value, o)
		} else {
			dst = append(dst, hs[i].Value...)
		}
		dst = append(dst, crlf...)
	}
	switch {
	case o.websocket:
		dst = append(dst, "Connection: Upgrade\r\nUpgrade: websocket\r\n"...)
	case o.interim:
	case o.close:
		dst = append(dst, "Connection: close\r\n"...)
	default:
		dst = append(dst, "Connection: keep-alive\r\n"...)
	}
	return append(dst, crlf...)
}

func isLocationField(name []byte) bool {
	return (len(name) == 8 && httpparse.EqualFold(name, "Location")) ||
		(len(name) == 16 && httpparse.EqualFold(name, "Content-Location"))
}

// appendLocation is ProxyPassReverse: http://<backend>/x becomes http://<client Host>/x.
func appendLocation(dst, v []byte, o *respHeadOpts) []byte {
	const scheme = "http://"
	if len(o.clientHost) == 0 || len(v) < len(scheme)+len(o.backendHost) || !httpparse.EqualFold(v[:len(scheme)], scheme) {
		return append(dst, v...)
	}
	rest := v[len(scheme):]
	if !bytes.EqualFold(rest[:len(o.backendHost)], o.backendHost) {
		return append(dst, v...)
	}
	rest = rest[len(o.backendHost):]
	if len(rest) > 0 && rest[0] != '/' && rest[0] != '?' && rest[0] != '#' {
		return append(dst, v...) // a longer host or port that merely starts like the backend's
	}
	dst = append(dst, scheme...)
	dst = append(dst, o.clientHost...)
	return append(dst, rest...)
}

// errorResponse returns the complete canned answer for status; wsgate only ever closes after one.
func errorResponse(status int) []byte {
	if b, ok := cannedErrors[status]; ok {
		return b
	}
	return cannedErrors[400]
}

var cannedErrors = map[int][]byte{}

// statusTexts are the reason phrases of every status wsgate answers by itself.
var statusTexts = map[int]string{
	400: "Bad Request",
	408: "Request Timeout",
	414: "URI Too Long",
	426: "Upgrade Required",
	431: "Request Header Fields Too Large",
	501: "Not Implemented",
	502: "Bad Gateway",
	503: "Service Unavailable",
	504: "Gateway Timeout",
	505: "HTTP Version Not Supported",
}

func init() {
	for code := range statusTexts {
		cannedErrors[code] = buildErrorResponse(code, "")
	}
}

// buildErrorResponse makes a complete closing answer; detail, when set, tells the client what
// was wrong with its request (the parser's reason), so a rejected request is never a mystery.
func buildErrorResponse(code int, detail string) []byte {
	text, ok := statusTexts[code]
	if !ok {
		code, text = 400, statusTexts[400]
	}
	extra := ""
	if code == 426 {
		extra = "Sec-WebSocket-Version: 13\r\n"
	}
	body := strconv.Itoa(code) + " " + text
	if detail != "" {
		body += ": " + detail
	}
	body += "\n"
	return []byte("HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" + extra +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
}

// rejectResponses caches one answer per parser error: httpparse's errors are a fixed set of
// preallocated values, so after the first of each kind a flood of bad requests allocates nothing.
var rejectResponses sync.Map // *httpparse.Error -> []byte

// rejectResponse is the answer to a request the parser refused, naming the reason.
func rejectResponse(err error) []byte {
	pe, ok := err.(*httpparse.Error) // httpparse returns its errors unwrapped
	if !ok {
		return errorResponse(httpparse.StatusOf(err))
	}
	if b, ok := rejectResponses.Load(pe); ok {
		return b.([]byte)
	}
	b := buildErrorResponse(pe.Status, pe.Reason)
	rejectResponses.Store(pe, b)
	return b
}
