package httpparse

import (
	"errors"
	"strconv"
)

// ErrNeedMore means the head (or chunk framing) is not complete yet: call
// again with more bytes appended. It is not a protocol error.
var ErrNeedMore = errors.New("httpparse: need more data")

// Error is a protocol violation together with the status a server should
// answer with. Every *Error the package returns is a preallocated package
// variable, so rejecting a malicious peer costs no allocation; callers must
// not modify it.
type Error struct {
	Status int    // 400, 414, 431, 501, 505 for requests; 502 for bad responses; 426 for the WebSocket version
	Reason string // what was wrong, in words fit for a log line
}

func (e *Error) Error() string {
	return "httpparse: " + strconv.Itoa(e.Status) + " " + e.Reason
}

// StatusOf returns the status to answer for err: the Status of an *Error,
// 400 for any other non-nil error (ErrNeedMore included: a caller that gives
// up on an incomplete head has received a bad request), 0 for nil.
func StatusOf(err error) int {
	if err == nil {
		return 0
	}
	if e, ok := err.(*Error); ok {
		return e.Status
	}
	return wrappedStatus(err)
}

// wrappedStatus is split out because errors.As makes its target escape: the
// common unwrapped case above stays allocation free.
func wrappedStatus(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 400
}

// errKind names a head-parsing failure independently of the message
// direction: the request table answers the client, the response table turns
// every failure into a 502 for the client of a bad backend.
type errKind uint8

const (
	kBareLF errKind = iota + 1
	kBareCR
	kBadMethod
	kBadTarget
	kBadVersion
	kVersion
	kBadRequestLine
	kConnect
	kAsterisk
	kBadTargetForm
	kTargetTooLong
	kLineTooLong
	kHeadTooLarge
	kTooManyHeaders
	kObsFold
	kSpaceBeforeColon
	kBadFieldName
	kBadFieldValue
	kNoHost
	kMultiHost
	kBadHost
	kBadCL
	kCLMismatch
	kTEAndCL
	kTE10
	kBadTE
	kTEUnsupported
	kChunkedTwice
	kBadStatusLine
	kBadStatus
	kHostMismatch
	kConnFraming
	kBadAuthority
	numKinds
)

var reqErrs = [numKinds]*Error{
	kBareLF:           {400, "line ends in bare LF (CR missing)"},
	kBareCR:           {400, "bare CR not followed by LF"},
	kBadMethod:        {400, "method is not a token"},
	kBadTarget:        {400, "invalid byte in request target"},
	kBadVersion:       {400, "malformed HTTP version"},
	kVersion:          {505, "HTTP version not supported (only HTTP/1.0 and HTTP/1.1)"},
	kBadRequestLine:   {400, "malformed request line"},
	kConnect:          {501, "CONNECT (authority-form) is not supported"},
	kAsterisk:         {400, "asterisk-form target with a method other than OPTIONS"},
	kBadTargetForm:    {400, "request target is neither origin-form nor absolute-form with an http or https scheme"},
	kTargetTooLong:    {414, "request target too long"},
	kLineTooLong:      {414, "request line too long"},
	kHeadTooLarge:     {431, "header section too large"},
	kTooManyHeaders:   {431, "too many header fields"},
	kObsFold:          {400, "obsolete line folding in header section"},
	kSpaceBeforeColon: {400, "whitespace between field name and colon"},
	kBadFieldName:     {400, "field name is not a token or colon missing"},
	kBadFieldValue:    {400, "NUL, CR, LF or control byte in field value"},
	kNoHost:           {400, "HTTP/1.1 request without Host"},
	kMultiHost:        {400, "more than one Host field line"},
	kBadHost:          {400, "invalid Host value"},
	kBadCL:            {400, "invalid Content-Length"},
	kCLMismatch:       {400, "conflicting Content-Length values"},
	kTEAndCL:          {400, "both Transfer-Encoding and Content-Length"},
	kTE10:             {400, "Transfer-Encoding in an HTTP/1.0 message"},
	kBadTE:            {400, "malformed Transfer-Encoding"},
	kTEUnsupported:    {501, "transfer coding other than a single chunked"},
	kChunkedTwice:     {400, "chunked transfer coding applied more than once"},
	kBadStatusLine:    {400, "malformed status line"},
	kBadStatus:        {400, "status code out of range"},
	kHostMismatch:     {400, "Host differs from the authority of the absolute-form target"},
	kConnFraming:      {400, "Connection names Host, Content-Length or Transfer-Encoding (they frame the message and cannot be dropped)"},
	kBadAuthority:     {400, "invalid authority in absolute-form target (want host[:port], no userinfo)"},
}

// respErrs mirrors reqErrs with Status 502: whatever a backend got wrong,
// the client is owed a Bad Gateway, never the backend's mistake.
var respErrs [numKinds]*Error

func init() {
	for k, e := range reqErrs {
		if e != nil {
			respErrs[k] = &Error{Status: 502, Reason: "response: " + e.Reason}
		}
	}
	respErrs[kVersion] = &Error{Status: 502, Reason: "response: HTTP version other than 1.0 or 1.1"}
	respErrs[kTEUnsupported] = &Error{Status: 502, Reason: "response: unsupported transfer coding"}
}

// Chunked framing errors.
var (
	errChunkSize      = &Error{400, "chunked: invalid chunk size"}
	errChunkOverflow  = &Error{400, "chunked: chunk size overflows"}
	errChunkExt       = &Error{400, "chunked: invalid chunk extension"}
	errChunkLine      = &Error{400, "chunked: chunk size line too long"}
	errChunkCRLF      = &Error{400, "chunked: missing CRLF after chunk data"}
	errChunkBareLF    = &Error{400, "chunked: line ends in bare LF or bare CR"}
	errTrailer        = &Error{400, "chunked: invalid trailer field"}
	errTrailerTooLong = &Error{400, "chunked: trailer section too large"}
	errChunkSkip      = &Error{500, "chunked: Skip beyond the current chunk data (caller bug)"}
)

// WebSocket handshake errors.
var (
	errWSMethod     = &Error{400, "websocket: handshake method is not GET"}
	errWSProto      = &Error{400, "websocket: handshake is not HTTP/1.1"}
	errWSUpgrade    = &Error{400, "websocket: Upgrade lacks websocket"}
	errWSConnection = &Error{400, "websocket: Connection lacks upgrade"}
	errWSVersion    = &Error{426, "websocket: Sec-WebSocket-Version is not 13"}
	errWSKey        = &Error{400, "websocket: Sec-WebSocket-Key is not base64 of 16 bytes"}
)
