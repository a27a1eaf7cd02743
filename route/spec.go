package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Spec is one route as written by the operator, before it joins a Table.
type Spec struct {
	Host     string   // stored form (ParseHost); "" matches every host
	Prefix   string   // path prefix, starts with '/'
	Backends []string // "host:port", at least one
	Options
}

// Options are a route's settings. Pointer fields are nil when the route does not set them: the
// Table then uses Defaults (the global flags).
type Options struct {
	// StripPrefix removes the matched prefix from the forwarded path, keeping a leading '/'.
	StripPrefix bool
	// PreserveHost passes the client's Host to the backend; nil: Defaults.PreserveHost.
	PreserveHost *bool
	// WebSocket allows upgrades on the route; nil: on. Off, the loop refuses upgrades (403).
	WebSocket *bool
	// HeaderTimeout replaces Defaults.HeaderTimeout for the next request head on a keep-alive
	// connection whose previous exchange used this route (the head that selects a route is
	// read before the route is known, so it always runs under the global value).
	HeaderTimeout *time.Duration
	// ResponseTimeout bounds the wait for the backend's response head; nil: the global value.
	ResponseTimeout *time.Duration
	// TunnelIdleTimeout closes a tunnel of this route quiet both ways this long; 0 = never;
	// nil: the global value.
	TunnelIdleTimeout *time.Duration
	// Balance is the pool's policy; nil: Defaults.Balance (least-conn unless changed).
	Balance *Balance
	// HealthPath turns on active probes (GET HealthPath) for the route's members; "" = off;
	// nil: Defaults.HealthPath.
	HealthPath *string
	// HealthInterval is the time between probes; nil: Defaults.HealthInterval.
	HealthInterval *time.Duration
	// SourceAddrs are local addresses that dials to the route's members are spread over; nil:
	// Defaults.SourceAddrs (usually none: the kernel picks).
	SourceAddrs []netip.Addr
}

// String writes the spec in -route syntax, for messages.
func (s *Spec) String() string {
	return s.Host + s.Prefix + "=" + strings.Join(s.Backends, ",")
}

// Match returns the spec's [HOST]/PREFIX, as written in a config file's match key.
func (s *Spec) Match() string { return s.Host + s.Prefix }

// Balance is a pool's balancing policy.
type Balance uint8

const (
	// LeastConn picks the usable member with the fewest in-flight requests plus open tunnels
	// (ties go round-robin). The default: a tunnel may live for hours, so counting only requests
	// would pile WebSockets onto one member.
	LeastConn Balance = iota
	// RoundRobin picks usable members in turn.
	RoundRobin
	// ClientHash keeps a client IP on one member (rendezvous hashing: when a member is down only
	// its own clients move, and they come back when it does).
	ClientHash
)

var balanceNames = [...]string{LeastConn: "least-conn", RoundRobin: "round-robin", ClientHash: "client-hash"}

func (b Balance) String() string {
	if int(b) < len(balanceNames) {
		return balanceNames[b]
	}
	return "balance(" + strconv.Itoa(int(b)) + ")"
}

// ParseBalance reads "least-conn", "round-robin" or "client-hash".
func ParseBalance(s string) (Balance, error) {
	for i, n := range balanceNames {
		if s == n {
			return Balance(i), nil
		}
	}
	return 0, fmt.Errorf("balance %q: want least-conn, round-robin or client-hash", s)
}

// ParseSpec reads the -route syntax [HOST]/PREFIX=ADDR[,ADDR...]:
//
//	/=127.0.0.1:3000
//	/loki/=127.0.0.1:3100,127.0.0.1:3101
//	logs.example.com/=127.0.0.1:3100
//	*.example.com/api/=[::1]:8080
//
// The last '=' separates the match from the backends (an address never contains '=').
func ParseSpec(s string) (Spec, error) {
	eq := strings.LastIndexByte(s, '=')
	if eq < 0 {
		return Spec{}, fmt.Errorf("route %q: want [HOST]/PREFIX=ADDR[,ADDR...]", s)
	}
	host, prefix, err := ParseMatch(s[:eq])
	if err != nil {
		return Spec{}, fmt.Errorf("route %q: %w", s, err)
	}
	list := s[eq+1:]
	if list == "" {
		return Spec{}, fmt.Errorf("route %q: no backend after '='", s)
	}
	sp := Spec{Host: host, Prefix: prefix}
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if err := CheckBackend(a); err != nil {
			return Spec{}, fmt.Errorf("route %q: %w", s, err)
		}
		sp.Backends = append(sp.Backends, a)
	}
	return sp, nil
}

// ParseMatch reads [HOST]/PREFIX: everything before the first '/' is the host (ParseHost),
// the rest the path prefix (CheckPrefix).
func ParseMatch(m string) (host, prefix string, err error) {
	slash := strings.IndexByte(m, '/')
	if slash < 0 {
		return "", "", fmt.Errorf("match %q: no path prefix (write %q for the whole host)", m, m+"/")
	}
	if slash > 0 {
		if host, err = ParseHost(m[:slash]); err != nil {
			return "", "", err
		}
	}
	prefix = m[slash:]
	if err := CheckPrefix(prefix); err != nil {
		return "", "", err
	}
	return host, prefix, nil
}

// CheckPrefix validates a path prefix: it starts with '/', and holds only the bytes a request
// target's path may hold (printable ASCII without '?', '#' or spaces). Matching is on the raw
// path, so a prefix is written the way clients send it (percent-encoded where they encode).
func CheckPrefix(p string) error {
	if p == "" || p[0] != '/' {
		return fmt.Errorf("prefix %q: must start with '/'", p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("prefix %q: byte %#02x is not allowed in a path (percent-encode it as clients do)", p, c)
		case c == '?' || c == '#':
			return fmt.Errorf("prefix %q: %q is not part of a path", p, c)
		case c == '*':
			return fmt.Errorf("prefix %q: no wildcards in prefixes (a prefix ending in '/' already matches everything below it)", p)
		}
	}
	return nil
}

// CheckBackend validates a backend address "host:port" (a name, an IPv4 literal or a bracketed
// IPv6 literal, and a port 1-65535). Names are resolved when dialled.
func CheckBackend(a string) error {
	if a == "" {
		return errors.New("empty backend address")
	}
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("backend %q: %v", a, strings.TrimPrefix(err.Error(), "address "+a+": "))
	}
	if h == "" {
		return fmt.Errorf("backend %q: no host (write 127.0.0.1:%s for this machine)", a, p)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("backend %q: port %q: want 1-65535", a, p)
	}
	if strings.IndexByte(h, ':') >= 0 {
		if _, err := netip.ParseAddr(h); err != nil {
			return fmt.Errorf("backend %q: bad IPv6 literal", a)
		}
		return nil
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if _, err := ParseHost(h); err != nil || strings.HasPrefix(h, "*") {
		return fmt.Errorf("backend %q: bad host name", a)
	}
	return nil
}
