package loop

import (
	"bytes"
	"strconv"
	"sync"

	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/route"
)

// reqHeadOpts says how a request head is rebuilt for the backend.
type reqHeadOpts struct {
	backendHost  []byte // Host sent when PreserveHost is off or the client sent none
	clientIP     []byte // appended to X-Forwarded-For
	preserveHost bool
	forwarded    bool
	websocket    bool         // keep the upgrade: emit Connection: Upgrade and Upgrade: websocket
	https        bool         // the client came over TLS: X-Forwarded-Proto: https
	route        *route.Route // the target is written as the route forwards it (strip_prefix); nil: as is

	backendHostAt int // out: offset of backendHost in the head when it was sent as Host, else -1
}

// respHeadOpts says how a response head is rebuilt for the client.
type respHeadOpts struct {
	backendHost []byte // Location values pointing here are rewritten ...
	clientHost  []byte // ... to point here (the Host the client used); nil disables the rewrite
	close       bool   // we close the client connection after this response
	websocket   bool   // a verified 101: emit Connection: Upgrade and Upgrade: websocket
	interim     bool   // 1xx: no Connection field of our own
	https       bool   // the client came over TLS: rewritten Locations say https://
	stripped    string // the prefix a strip_prefix route removed: put back into rewritten Locations
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

// isFramingField reports the fields that delimit a message: the rewrites never copy them, they
// emit them from what httpparse made of the message, so no client or backend spelling ("5, 5", a
// list of codings over several lines) and no Connection option can make the next hop frame the
// body differently from us.
func isFramingField(name []byte) bool {
	switch len(name) {
	case 14:
		return httpparse.EqualFold(name, "Content-Length")
	case 17:
		return httpparse.EqualFold(name, "Transfer-Encoding")
	}
	return false
}

// namesFields reports whether some Connection field lists an option other than keep-alive and
// upgrade, i.e. names a field that must go too (close is counted: it would drop a field called
// Close). Browsers send only keep-alive or upgrade, so the per-field search is usually skipped.
func namesFields(hs []httpparse.Header) bool {
	for i := range hs {
		if len(hs[i].Name) != 10 || !httpparse.EqualFold(hs[i].Name, "Connection") {
			continue
		}
		for list := hs[i].Value; len(list) > 0; {
			var el []byte
			el, list = nextElement(list)
			if len(el) > 0 && !httpparse.EqualFold(el, "keep-alive") && !httpparse.EqualFold(el, "upgrade") {
				return true
			}
		}
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

// listHas is httpparse.HasToken for a []byte token. The comparison folds ASCII case only: with
// Unicode folding "X-\u212aey" (Kelvin sign) would name the field X-Key.
func listHas(list, tok []byte) bool {
	for len(list) > 0 {
		var el []byte
		el, list = nextElement(list)
		if httpparse.EqualFoldBytes(el, tok) {
			return true
		}
	}
	return false
}

// nextElement splits the first element off a comma-separated list, without surrounding OWS.
func nextElement(list []byte) (el, rest []byte) {
	i := bytes.IndexByte(list, ',')
	if i < 0 {
		el = list
	} else {
		el, rest = list[:i], list[i+1:]
	}
	for len(el) > 0 && (el[0] == ' ' || el[0] == '\t') {
		el = el[1:]
	}
	for len(el) > 0 && (el[len(el)-1] == ' ' || el[len(el)-1] == '\t') {
		el = el[:len(el)-1]
	}
	return el, rest
}

// requestHost is the host a request names: the authority of an absolute-form target (RFC 9112
// 3.2.2; httpparse has checked that a Host field agrees with it), else the Host field, nil if none.
func requestHost(req *httpparse.Request) []byte {
	if req.Authority != nil {
		return req.Authority
	}
	return req.Host
}

// appendRequestHead rebuilds req for the backend: origin-form target, Host per PreserveHost, framing
// from the parsed message, hop-by-hop fields and names outside [A-Za-z0-9-] dropped, X-Forwarded-*
// set. It allocates nothing when dst has room.
func appendRequestHead(dst []byte, req *httpparse.Request, o *reqHeadOpts) []byte {
	host := requestHost(req)
	dst = append(dst, req.Method...)
	dst = append(dst, ' ')
	switch {
	case len(req.Path) == 0 || req.Path[0] == '?':
		dst = append(dst, '/') // "http://h" and "http://h?q" are "/" and "/?q" in origin-form
		dst = append(dst, req.Path...)
	case o.route != nil:
		dst = o.route.AppendTarget(dst, req.Path) // strip_prefix, without allocating
	default:
		dst = append(dst, req.Path...)
	}
	if req.Minor == 0 {
		dst = append(dst, " HTTP/1.0\r\n"...)
	} else {
		dst = append(dst, " HTTP/1.1\r\n"...)
	}
	dst = append(dst, "Host: "...)
	o.backendHostAt = -1
	if o.preserveHost && len(host) > 0 {
		dst = append(dst, host...)
	} else {
		o.backendHostAt = len(dst)
		dst = append(dst, o.backendHost...)
	}
	dst = append(dst, crlf...)
	switch req.Framing {
	case httpparse.FramingLength:
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, req.ContentLength, 10)
		dst = append(dst, crlf...)
	case httpparse.FramingChunked:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...) // the only coding httpparse accepts in a request
	}
	hs := req.Headers
	named := namesFields(hs)
	odd := req.OddNames > 0
	for i := range hs {
		name := hs[i].Name
		if (len(name) == 4 && httpparse.EqualFold(name, "Host")) || isFramingField(name) || isHopByHop(name) {
			continue
		}
		// X_Forwarded_For is X-Forwarded-For to a CGI/WSGI backend: such names never pass.
		if (named && namedByConnection(hs, name)) || (odd && !httpparse.IsPlainName(name)) {
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
			if len(hs[i].Value) > 0 && len(hs[i].Name) == 15 && httpparse.EqualFold(hs[i].Name, "X-Forwarded-For") &&
				!(named && namedByConnection(hs, hs[i].Name)) {
				dst = append(dst, hs[i].Value...)
				dst = append(dst, ", "...)
			}
		}
		dst = append(dst, o.clientIP...)
		if o.https {
			dst = append(dst, "\r\nX-Forwarded-Proto: https\r\n"...)
		} else {
			dst = append(dst, "\r\nX-Forwarded-Proto: http\r\n"...)
		}
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

// appendResponseHead rebuilds a backend response head for the client: framing from the parsed
// response, hop-by-hop fields dropped, Location/Content-Location rewritten back to the client's
// Host, our own Connection field added.
func appendResponseHead(dst []byte, resp *httpparse.Response, o *respHeadOpts) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(resp.Status), 10)
	dst = append(dst, ' ')
	dst = append(dst, resp.Reason...)
	dst = append(dst, crlf...)
	hs := resp.Headers
	named := namesFields(hs)
	for i := range hs {
		name := hs[i].Name
		// Trailer stays: the chunked body, trailer section included, is relayed verbatim, and
		// strict clients only accept trailer fields that were announced (RFC 9110 6.6.2).
		if isFramingField(name) || (isHopByHop(name) && !httpparse.EqualFold(name, "Trailer")) || (named && namedByConnection(hs, name)) {
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
	dst = appendResponseFraming(dst, resp)
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

// appendResponseFraming emits a response's framing fields from the parsed message (RFC 9110 8.6,
// RFC 9112 6.1 and 6.3): none on 1xx and 204; the transfer codings, normalised to one line, when
// they frame the body (chunked last) or leave it to the close; otherwise the Content-Length value,
// which for an answer to HEAD and for 304 describes the representation and is relayed although no
// body follows. A Transfer-Encoding on a HEAD answer or a 304 frames nothing and is not relayed.
func appendResponseFraming(dst []byte, resp *httpparse.Response) []byte {
	switch {
	case resp.Status < 200 || resp.Status == 204:
	case resp.Framing == httpparse.FramingChunked || resp.Framing == httpparse.FramingUntilClose:
		dst = appendCodings(dst, resp.Headers)
	case resp.DeclaredLength >= 0:
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, resp.DeclaredLength, 10)
		dst = append(dst, crlf...)
	}
	return dst
}

// appendCodings writes every coding of every Transfer-Encoding line, in order, as one line
// (httpparse has checked that each element is a plain token).
func appendCodings(dst []byte, hs []httpparse.Header) []byte {
	n := 0
	for i := range hs {
		if len(hs[i].Name) != 17 || !httpparse.EqualFold(hs[i].Name, "Transfer-Encoding") {
			continue
		}
		for list := hs[i].Value; len(list) > 0; {
			var el []byte
			el, list = nextElement(list)
			if n == 0 {
				dst = append(dst, "Transfer-Encoding: "...)
			} else {
				dst = append(dst, ", "...)
			}
			dst = append(dst, el...)
			n++
		}
	}
	if n > 0 {
		dst = append(dst, crlf...)
	}
	return dst
}

func isLocationField(name []byte) bool {
	return (len(name) == 8 && httpparse.EqualFold(name, "Location")) ||
		(len(name) == 16 && httpparse.EqualFold(name, "Content-Location"))
}

// appendLocation is ProxyPassReverse: http://<backend>/x becomes http://<client Host>/x (https://
// for a client that came over TLS). Behind a strip_prefix route the removed prefix goes back in
// front of the path, in absolute URLs naming the backend and in absolute paths ("/x" ->
// "/loki/x": the backend thinks it is served at /).
func appendLocation(dst, v []byte, o *respHeadOpts) []byte {
	const scheme = "http://"
	if o.stripped != "" && len(v) > 0 && v[0] == '/' && (len(v) == 1 || v[1] != '/') {
		return appendUnstripped(dst, v, o.stripped) // not "//host/x", a network-path reference
	}
	if len(o.clientHost) == 0 || len(v) < len(scheme)+len(o.backendHost) || !httpparse.EqualFold(v[:len(scheme)], scheme) {
		return append(dst, v...)
	}
	rest := v[len(scheme):]
	if !httpparse.EqualFoldBytes(rest[:len(o.backendHost)], o.backendHost) {
		return append(dst, v...)
	}
	rest = rest[len(o.backendHost):]
	if len(rest) > 0 && rest[0] != '/' && rest[0] != '?' && rest[0] != '#' {
		return append(dst, v...) // a longer host or port that merely starts like the backend's
	}
	if o.https {
		dst = append(dst, "https://"...)
	} else {
		dst = append(dst, scheme...)
	}
	dst = append(dst, o.clientHost...)
	if o.stripped != "" {
		return appendUnstripped(dst, rest, o.stripped)
	}
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
	403: "Forbidden",
	404: "Not Found",
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
