// Package httpparse reads HTTP/1.x message heads and chunked framing for an
// event-loop proxy: zero-copy, allocation free and strict.
//
// The bytes a connection has received so far go to Parser.ParseRequest (or
// ParseResponse for a backend's answer). While the head is incomplete it
// returns ErrNeedMore and remembers how far it has looked, so calling it
// again after every read costs O(n) for the whole head, however it was
// split. A complete head fills a Request whose Method, Target, Host and
// Headers are sub-slices of the caller's buffer, held in a fixed table
// inside the Request: nothing is copied or allocated, and the slices stay
// valid until the caller reuses the buffer.
//
// Strictness is the point. A proxy that frames a message differently from
// the backend behind it lets one client smuggle a request into another's
// connection, so the parser follows RFC 9110 and RFC 9112 to the letter and
// refuses instead of guessing: field names and methods must be tokens;
// whitespace before a colon, obsolete line folding, bare CR, bare LF and
// NUL/CR/LF or other controls in values are errors; only HTTP/1.0 and
// HTTP/1.1 are spoken; Transfer-Encoding with Content-Length, conflicting
// or malformed Content-Length, and Transfer-Encoding in HTTP/1.0 are
// rejected; a request's only accepted transfer coding is a single chunked.
// Some choices go beyond the letter of the RFCs, always toward refusing:
// a request's Transfer-Encoding must be exactly "chunked" (anything else is
// 501, or 400 when malformed), the request-target may hold only visible
// ASCII, an absolute-form target must use the http or https scheme and name
// a plain authority (host and optional port: no userinfo, no empty host;
// Host values are held to the same shape), and must name the same
// authority as Host; a Connection field that names Host, Content-Length or
// Transfer-Encoding is refused (400, or 502 in a response), because a hop
// that obeys it would drop the fields that delimit the message. Methods
// are compared exactly (RFC 9110 section 9.1: "head" is not HEAD) and all
// case folding is ASCII-only, never Unicode's (which folds the Kelvin sign
// into "k"). Empty lines before a request line are skipped (RFC 9112
// section 2.2) and counted in the returned head length.
//
// Every byte is judged as it arrives. The start line and each field line
// are checked as they grow, each complete field line is applied at once,
// and a head that can no longer become valid (a bare CR, a bad byte in a
// name, a second Content-Length that differs, Transfer-Encoding after
// Content-Length, a second Host, one header too many...) is refused at its
// first impossible byte rather than when its blank line arrives, which a
// stalling client could postpone until the server's head timeout. Only the
// absence of Host in HTTP/1.1 has to wait for the end of the head.
//
// Request.Authority and Request.Path give an absolute-form target already
// split for forwarding in origin-form; Request.OddNames counts field names
// with bytes outside [A-Za-z0-9-] (legal, but folded into "-" by CGI-style
// backends), so a proxy can drop or refuse them at no cost when there are
// none. Response.DeclaredLength keeps a Content-Length that describes a
// representation without framing a body (HEAD, 304).
//
// Every error is an *Error carrying the status to answer (400, 414, 431,
// 501, 505; 502 for a backend's malformed response) and is a preallocated
// package variable, so a flood of garbage costs no garbage.
//
// Request.Framing and Response.Framing say how the body is delimited. For
// FramingChunked a ChunkedDecoder follows the body as it streams past, again
// without copying: Feed says how many bytes belong to the message and when
// it ends, and DataLeft/Skip let a caller move chunk data in bulk (splice(2))
// without looking at it.
//
// CheckWebSocketRequest, AppendAccept and VerifyAccept cover the RFC 6455
// opening handshake, also without allocating.
package httpparse
