package accesslog

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Format of access log lines and of wsgate's own log (-log-format).
type Format uint8

const (
	Text Format = iota // logfmt: key=value, values quoted as Go strings when they need it
	JSON               // one JSON object per line
)

// ParseFormat parses -log-format.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "text":
		return Text, nil
	case "json":
		return JSON, nil
	}
	return 0, fmt.Errorf("log format %q: want text or json", s)
}

func (f Format) String() string {
	if f == JSON {
		return "json"
	}
	return "text"
}

// Why says why wsgate answered a request itself instead of relaying a backend's answer.
type Why uint8

const (
	Relayed          Why = iota // the answer came from the backend (no "answered" field)
	ParseError                  // the request head was malformed (400/414/431/501/505)
	NoRoute                     // no route matched (404)
	WebSocketRefused            // the route does not allow WebSocket upgrades
	HeaderTimeout               // the head did not arrive within -header-timeout (408)
	ConnectRefused              // the backend refused the connection (502)
	ConnectTimeout              // connecting to the backend timed out (504)
	ConnectFailed               // any other connect error (502)
	ResponseTimeout             // no response head within -response-timeout (504)
	BadResponse                 // the backend's response head or framing was invalid (502)
	BackendReset                // the backend closed or reset before its answer was complete (502)
	BadUpgrade                  // a 101 that failed verification (502)
	Overloaded                  // -max-conns or the fd budget (503)
	Draining                    // the process is draining (503)
	ClientOverflow              // the client sent more than wsgate holds meanwhile: bytes before a 101, a body while the backend is dialled
	TunnelFailed                // a verified 101 could not become a tunnel (no fd for the hand-off, the tunnel plane closing, a client that half-closed)
	NoBackend                   // the route has no healthy backend (502)
	numWhy
)

var whyNames = [numWhy]string{"", "parse_error", "no_route", "websocket_refused", "header_timeout",
	"connect_refused", "connect_timeout", "connect_failed", "response_timeout", "bad_response",
	"backend_reset", "bad_upgrade", "overloaded", "draining", "client_overflow", "tunnel_failed", "no_backend"}

func (w Why) String() string {
	if w < numWhy {
		return whyNames[w]
	}
	return "invalid"
}

// Request is one finished HTTP exchange. The caller fills it from its own state (the slices
// may point into the loop's parse buffers: they are copied into the line before Writer.Request
// returns) and may reuse it at once.
type Request struct {
	Time     time.Time      // when the exchange ended
	Client   netip.AddrPort // client address and port
	Method   []byte         // as received
	Target   []byte         // request-target as received (path and query, or absolute-form)
	Status   int            // status sent to the client (0: none, the connection closed first)
	BytesIn  int64          // bytes received from the client for this exchange (head + body)
	BytesOut int64          // bytes sent to the client (head + body)
	Duration time.Duration  // first head byte to last response byte
	Route    string         // route name (metrics' "none" when nothing matched)
	Backend  string         // backend address, "" when none was chosen
	Connect  time.Duration  // time to connect to the backend; 0 for a pooled connection or none
	Answered Why            // Relayed, or why wsgate answered itself
	Detail   string         // optional: the parser's reason for a ParseError, e.g. "several Host header fields"
}

// Tunnel is one closed WebSocket tunnel.
type Tunnel struct {
	Time      time.Time      // when it closed
	Client    netip.AddrPort // client address and port
	Target    []byte         // request-target of the upgrade request
	Route     string
	Backend   string
	Duration  time.Duration // from the verified 101 to the close
	BytesUp   int64         // client to backend
	BytesDown int64         // backend to client
	Reason    string        // metrics.CloseReason.String(): client, backend, reset, idle_timeout, fin_timeout, drain, error
}

// clock caches the formatted second, so that a busy loop formats the date once a second and
// only appends milliseconds per line.
type clock struct {
	sec    int64
	loc    *time.Location
	prefix []byte // "2006-01-02T15:04:05"
	zone   []byte // "Z" or "+01:00"
}

func (c *clock) append(dst []byte, t time.Time) []byte {
	if s := t.Unix(); s != c.sec || t.Location() != c.loc || c.prefix == nil {
		c.sec, c.loc = s, t.Location()
		c.prefix = t.AppendFormat(c.prefix[:0], "2006-01-02T15:04:05")
		c.zone = t.AppendFormat(c.zone[:0], "Z07:00")
	}
	dst = append(dst, c.prefix...)
	ms := t.Nanosecond() / 1e6
	dst = append(dst, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(dst, c.zone...)
}

// appendSeconds writes d as seconds with microsecond resolution ("0.000812"); negative as 0.
func appendSeconds(dst []byte, d time.Duration) []byte {
	if d < 0 {
		d = 0
	}
	us := int64(d / time.Microsecond)
	dst = strconv.AppendInt(dst, us/1e6, 10)
	f := us % 1e6
	return append(dst, '.', byte('0'+f/100000), byte('0'+f/10000%10), byte('0'+f/1000%10),
		byte('0'+f/100%10), byte('0'+f/10%10), byte('0'+f%10))
}

// line builds lines field by field in either format, each appended to b. It remembers the
// last client address, route and backend it wrote, already encoded: lines in a batch mostly
// repeat them (keep-alive clients, one route), and copying the encoded bytes is cheaper than
// formatting an address or checking a value for bytes to quote again.
type line struct {
	b     []byte
	json  bool
	first bool

	lastAddr       netip.AddrPort
	addrText       []byte
	route, backend lastString
}

// lastString is a string field's last value (a copy: the value may be a view of a ring record)
// and its encoding in one format.
type lastString struct {
	s    []byte
	json bool
	enc  []byte
}

func (l *line) begin(f Format) {
	l.json, l.first = f == JSON, true
	if l.json {
		l.b = append(l.b, '{')
	}
}

// fieldKey is a key with its separator, prebuilt for both formats, so that a key costs one
// append: `,"status":` or ` status=` (the first key of a line skips the separator).
type fieldKey struct{ json, text string }

func mkKey(k string) fieldKey { return fieldKey{json: `,"` + k + `":`, text: " " + k + "="} }

var (
	kTime      = mkKey("time")
	kMsg       = mkKey("msg")
	kClient    = mkKey("client")
	kMethod    = mkKey("method")
	kTarget    = mkKey("target")
	kStatus    = mkKey("status")
	kBytesIn   = mkKey("bytes_in")
	kBytesOut  = mkKey("bytes_out")
	kDuration  = mkKey("duration")
	kRoute     = mkKey("route")
	kBackend   = mkKey("backend")
	kConnect   = mkKey("connect")
	kAnswered  = mkKey("answered")
	kDetail    = mkKey("detail")
	kBytesUp   = mkKey("bytes_up")
	kBytesDown = mkKey("bytes_down")
	kReason    = mkKey("reason")
)

func (l *line) key(k fieldKey) {
	s := k.text
	if l.json {
		s = k.json
	}
	if l.first {
		s, l.first = s[1:], false
	}
	l.b = append(l.b, s...)
}

func (l *line) end() {
	if l.json {
		l.b = append(l.b, '}')
	}
	l.b = append(l.b, '\n')
}

func strField[T text](l *line, k fieldKey, v T) {
	l.key(k)
	if l.json {
		l.b = appendJSONString(l.b, v)
	} else {
		l.b = appendTextValue(l.b, v)
	}
}

func (l *line) int(k fieldKey, v int64) {
	l.key(k)
	l.b = strconv.AppendInt(l.b, v, 10)
}

func (l *line) seconds(k fieldKey, d time.Duration) {
	l.key(k)
	l.b = appendSeconds(l.b, d)
}

func (l *line) time(c *clock, t time.Time) {
	l.key(kTime)
	if l.json {
		l.b = append(l.b, '"')
	}
	l.b = c.append(l.b, t)
	if l.json {
		l.b = append(l.b, '"')
	}
}

// cachedField writes a string field through its lastString cache.
func (l *line) cachedField(k fieldKey, v string, c *lastString) {
	l.key(k)
	if c.enc == nil || c.json != l.json || string(c.s) != v {
		c.enc = c.enc[:0]
		if l.json {
			c.enc = appendJSONString(c.enc, v)
		} else {
			c.enc = appendTextValue(c.enc, v)
		}
		c.s = append(c.s[:0], v...)
		c.json = l.json
	}
	l.b = append(l.b, c.enc...)
}

func (l *line) addr(k fieldKey, a netip.AddrPort) {
	l.key(k)
	if l.json {
		l.b = append(l.b, '"')
	}
	if a.IsValid() {
		if a != l.lastAddr || l.addrText == nil {
			l.lastAddr = a
			l.addrText = a.AppendTo(l.addrText[:0])
		}
		l.b = append(l.b, l.addrText...)
	} else if !l.json {
		l.b = append(l.b, '"', '"')
	}
	if l.json {
		l.b = append(l.b, '"')
	}
}

// The field order is fixed; docs/observability.md shows both formats.
func (l *line) request(f Format, c *clock, r *Request) {
	l.begin(f)
	l.time(c, r.Time)
	strField(l, kMsg, "request")
	l.addr(kClient, r.Client)
	strField(l, kMethod, r.Method)
	strField(l, kTarget, r.Target)
	l.int(kStatus, int64(r.Status))
	l.int(kBytesIn, r.BytesIn)
	l.int(kBytesOut, r.BytesOut)
	l.seconds(kDuration, r.Duration)
	l.cachedField(kRoute, r.Route, &l.route)
	l.cachedField(kBackend, r.Backend, &l.backend)
	l.seconds(kConnect, r.Connect)
	if r.Answered != Relayed {
		strField(l, kAnswered, r.Answered.String())
	}
	if r.Detail != "" {
		strField(l, kDetail, r.Detail)
	}
	l.end()
}

func (l *line) tunnel(f Format, c *clock, t *Tunnel) {
	l.begin(f)
	l.time(c, t.Time)
	strField(l, kMsg, "tunnel")
	l.addr(kClient, t.Client)
	strField(l, kTarget, t.Target)
	l.cachedField(kRoute, t.Route, &l.route)
	l.cachedField(kBackend, t.Backend, &l.backend)
	l.seconds(kDuration, t.Duration)
	l.int(kBytesUp, t.BytesUp)
	l.int(kBytesDown, t.BytesDown)
	strField(l, kReason, t.Reason)
	l.end()
}
