package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults are the global settings a route falls back to for every option it does not set:
// cmd/wsgate fills them from its flags.
type Defaults struct {
	PreserveHost      bool
	HeaderTimeout     time.Duration
	ResponseTimeout   time.Duration
	TunnelIdleTimeout time.Duration // 0 = never
	Balance           Balance
	HealthPath        string        // "" = no active probes
	HealthInterval    time.Duration // 0 = DefaultHealthInterval
	SourceAddrs       []netip.Addr
	DialTimeout       time.Duration // for probes and Dialer.DialContext; 0 = DefaultDialTimeout
	Passive           PassiveHealth
	Logger            *slog.Logger // health transitions; nil = slog.Default()
}

// Defaults' zero values.
const (
	DefaultHealthInterval = 2 * time.Second
	DefaultDialTimeout    = 5 * time.Second
)

// Route is one entry of a Table with every option resolved against the Defaults.
type Route struct {
	Host   string // "" for every host, "*.example.com" for a wildcard
	Prefix string
	Index  int // position in the spec list the Table was built from

	StripPrefix       bool
	PreserveHost      bool
	WebSocket         bool
	HeaderTimeout     time.Duration
	ResponseTimeout   time.Duration
	TunnelIdleTimeout time.Duration

	Pool *Pool

	slash bool // Prefix ends in '/'
}

// String is the route's match in [HOST]/PREFIX form.
func (r *Route) String() string { return r.Host + r.Prefix }

var slashPath = []byte("/")

// ForwardTarget returns the request target to send to the backend as two pieces to be written
// one after the other (either may be empty); target is the origin-form target Match was given
// (path and query). Without StripPrefix it is target itself. With it, the matched prefix is
// removed and a leading '/' kept: prefix "/loki/" turns "/loki/api/v1/tail?x=1" into
// "/api/v1/tail?x=1"; prefix "/loki" turns "/loki" into "/" and "/loki?x" into "/?x". The
// pieces alias target or a shared read-only "/": nothing is allocated.
func (r *Route) ForwardTarget(target []byte) (head, tail []byte) {
	if !r.StripPrefix || r.Prefix == "/" {
		return target, nil
	}
	n := len(r.Prefix)
	if r.slash {
		n-- // keep the prefix's own final '/'
	}
	if len(target) < n {
		return target, nil // not a target this route matched; forward it unchanged
	}
	rest := target[n:]
	if len(rest) == 0 || rest[0] == '?' {
		return slashPath, rest
	}
	return rest, nil
}

// AppendTarget appends ForwardTarget's pieces to dst.
func (r *Route) AppendTarget(dst, target []byte) []byte {
	h, t := r.ForwardTarget(target)
	return append(append(dst, h...), t...)
}

// Table is an immutable set of routes; Match may be called from every event loop at once.
type Table struct {
	routes []*Route
	exact  map[string]*trie // by host
	wild   map[string]*trie // by the part after "*."
	any    *trie            // host-less routes, nil when there are none
	hosts  bool             // exact or wild is non-empty
	// Lengths of the keys of exact and wild: a host whose length (or whose parent's length)
	// is not among them skips that map. Real tables have few distinct lengths, so most
	// requests for hosts without routes cost no map lookup at all.
	exactLens, wildLens lenSet
	members             []*Member
	byAddr              map[string]*Member
	conf                map[*Member]*memberConf
	nextID              int
	log                 *slog.Logger
	passive             PassiveHealth

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// memberConf is what one Table says about a member (a later Table may say otherwise).
type memberConf struct {
	dialer         *Dialer
	healthPath     string
	healthInterval time.Duration
}

// SpecError is a problem with the spec at Index; Field names the option at fault ("match",
// "backends", "health_path", ...), so that a config file can point at its line.
type SpecError struct {
	Index int
	Spec  string
	Field string
	Other int // index of the other route involved (a duplicate, a conflicting share), or -1
	Err   error
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("route #%d (%s): %v", e.Index+1, e.Spec, e.Err)
}

func (e *SpecError) Unwrap() error { return e.Err }

// Validate checks specs as a whole and returns every problem found, each a *SpecError:
// malformed hosts, prefixes, backends and options, duplicate routes (the same host and prefix
// twice) and members shared by several routes with conflicting health or source settings.
func Validate(specs []Spec) []error {
	var errs []error
	badOther := func(i int, field string, other int, err error) {
		errs = append(errs, &SpecError{Index: i, Spec: specs[i].String(), Field: field, Other: other, Err: err})
	}
	bad := func(i int, field string, err error) { badOther(i, field, -1, err) }
	seen := make(map[string]int)
	type shared struct {
		path, interval, sources int // index of the first route that set it, -1 = none
	}
	members := make(map[string]*shared)
	for i := range specs {
		s := &specs[i]
		if s.Host != "" {
			if h, err := ParseHost(s.Host); err != nil {
				bad(i, "match", err)
			} else if h != s.Host {
				bad(i, "match", fmt.Errorf("host %q is not in stored form (want %q)", s.Host, h))
			}
		}
		if err := CheckPrefix(s.Prefix); err != nil {
			bad(i, "match", err)
		}
		key := s.Host + s.Prefix
		if j, ok := seen[key]; ok {
			badOther(i, "match", j, fmt.Errorf("duplicate route: %s is also route #%d", key, j+1))
		} else {
			seen[key] = i
		}
		if len(s.Backends) == 0 {
			bad(i, "backends", errors.New("no backends"))
		}
		for k, a := range s.Backends {
			if err := CheckBackend(a); err != nil {
				bad(i, "backends", err)
			} else if slices.Contains(s.Backends[:k], a) {
				bad(i, "backends", fmt.Errorf("backend %s is listed twice", a))
			}
		}
		if s.Balance != nil && int(*s.Balance) >= len(balanceNames) {
			bad(i, "balance", fmt.Errorf("unknown balance %d", *s.Balance))
		}
		if s.HealthPath != nil && *s.HealthPath != "" {
			if err := checkHealthPath(*s.HealthPath); err != nil {
				bad(i, "health_path", err)
			}
		}
		if s.HealthInterval != nil && *s.HealthInterval < 10*time.Millisecond {
			bad(i, "health_interval", fmt.Errorf("health interval %v: want 10ms or more", *s.HealthInterval))
		}
		for _, d := range []struct {
			name string
			v    *time.Duration
		}{{"header_timeout", s.HeaderTimeout}, {"response_timeout", s.ResponseTimeout}, {"tunnel_idle_timeout", s.TunnelIdleTimeout}} {
			if d.v != nil && *d.v < 0 {
				bad(i, d.name, fmt.Errorf("%v: must not be negative", *d.v))
			}
		}
		for _, a := range s.SourceAddrs {
			if err := checkSource(a); err != nil {
				bad(i, "source_addresses", err)
			}
		}
		// A member shared by several routes is one Member: the routes that say something
		// about its probes or sources must agree.
		for _, a := range s.Backends {
			m := members[a]
			if m == nil {
				m = &shared{-1, -1, -1}
				members[a] = m
			}
			if s.HealthPath != nil && *s.HealthPath != "" {
				if j := m.path; j < 0 {
					m.path = i
				} else if p := *specs[j].HealthPath; p != *s.HealthPath {
					badOther(i, "health_path", j, fmt.Errorf("backend %s is shared with route #%d, which probes %q; shared backends are one member: set the same health_path", a, j+1, p))
				}
			}
			if s.HealthInterval != nil {
				if j := m.interval; j < 0 {
					m.interval = i
				} else if v := *specs[j].HealthInterval; v != *s.HealthInterval {
					badOther(i, "health_interval", j, fmt.Errorf("backend %s is shared with route #%d, which probes every %v; shared backends are one member: set the same health_interval", a, j+1, v))
				}
			}
			if s.SourceAddrs != nil {
				if j := m.sources; j < 0 {
					m.sources = i
				} else if !slices.Equal(specs[j].SourceAddrs, s.SourceAddrs) {
					badOther(i, "source_addresses", j, fmt.Errorf("backend %s is shared with route #%d, which dials from %v; shared backends are one member: set the same source_addresses", a, j+1, specs[j].SourceAddrs))
				}
			}
		}
	}
	return errs
}

func checkHealthPath(p string) error {
	if p[0] != '/' {
		return fmt.Errorf("health path %q: must start with '/'", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("health path %q: byte %#02x is not allowed in a request target", p, c)
		}
	}
	return nil
}

func checkSource(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("invalid source address")
	case a.IsUnspecified():
		return fmt.Errorf("source address %v: unspecified (leave source_addresses out to let the kernel choose)", a)
	case a.IsMulticast():
		return fmt.Errorf("source address %v: multicast", a)
	case a.Zone() != "":
		return fmt.Errorf("source address %v: zones are not supported", a)
	}
	return nil
}

// NewTable validates specs and builds a Table. It is pure: nothing starts and nothing running
// changes, so it serves -check-config and a reload that may still be refused. With prev (the
// running table on a reload), a backend address already in prev keeps its *Member, so counters
// of in-flight requests and open tunnels, passive health and member IDs carry over. Start the
// table's probes with Start once it is the one in use.
func NewTable(specs []Spec, d Defaults, prev *Table) (*Table, error) {
	errs := Validate(specs)
	if d.HealthPath != "" {
		if err := checkHealthPath(d.HealthPath); err != nil {
			errs = append(errs, fmt.Errorf("default health path: %w", err))
		}
	}
	for _, a := range d.SourceAddrs {
		if err := checkSource(a); err != nil {
			errs = append(errs, fmt.Errorf("default source addresses: %w", err))
		}
	}
	if d.HealthInterval != 0 && d.HealthInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("default health interval %v: want 10ms or more", d.HealthInterval))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if d.HealthInterval <= 0 {
		d.HealthInterval = DefaultHealthInterval
	}
	if d.DialTimeout <= 0 {
		d.DialTimeout = DefaultDialTimeout
	}
	d.Passive = d.Passive.withDefaults()
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	t := &Table{
		exact:   make(map[string]*trie),
		wild:    make(map[string]*trie),
		byAddr:  make(map[string]*Member),
		conf:    make(map[*Member]*memberConf),
		log:     d.Logger,
		passive: d.Passive,
	}
	if prev != nil {
		t.nextID = prev.nextID
	}
	// Members first: one per address, with the settings merged over the routes that list it.
	type merged struct {
		path        string
		pathSet     bool // some route set a non-empty path
		inherit     bool // some route left health_path unset
		interval    time.Duration
		sources     []netip.Addr
		sourcesSet  bool
		intervalSet bool
	}
	mergedBy := make(map[string]*merged)
	var order []string
	for i := range specs {
		s := &specs[i]
		for _, a := range s.Backends {
			m := mergedBy[a]
			if m == nil {
				m = &merged{}
				mergedBy[a] = m
				order = append(order, a)
			}
			switch {
			case s.HealthPath == nil:
				m.inherit = true
			case *s.HealthPath != "":
				m.path, m.pathSet = *s.HealthPath, true
			}
			if s.HealthInterval != nil {
				m.interval, m.intervalSet = *s.HealthInterval, true
			}
			if s.SourceAddrs != nil {
				m.sources, m.sourcesSet = s.SourceAddrs, true
			}
		}
	}
	for _, a := range order {
		mg := mergedBy[a]
		var m *Member
		if prev != nil {
			m = prev.byAddr[a]
		}
		if m == nil {
			m = newMember(a, t.nextID, d.Passive)
			t.nextID++
		}
		c := &memberConf{healthInterval: d.HealthInterval}
		switch {
		case mg.pathSet:
			c.healthPath = mg.path
		case mg.inherit:
			c.healthPath = d.HealthPath
		}
		if mg.intervalSet {
			c.healthInterval = mg.interval
		}
		src := d.SourceAddrs
		if mg.sourcesSet {
			src = mg.sources
		}
		c.dialer = newDialer(a, src, d.DialTimeout)
		t.members = append(t.members, m)
		t.byAddr[a] = m
		t.conf[m] = c
	}
	for i := range specs {
		s := &specs[i]
		r := &Route{
			Host:              s.Host,
			Prefix:            s.Prefix,
			Index:             i,
			StripPrefix:       s.StripPrefix,
			PreserveHost:      d.PreserveHost,
			WebSocket:         true,
			HeaderTimeout:     d.HeaderTimeout,
			ResponseTimeout:   d.ResponseTimeout,
			TunnelIdleTimeout: d.TunnelIdleTimeout,
			slash:             s.Prefix[len(s.Prefix)-1] == '/',
		}
		if s.PreserveHost != nil {
			r.PreserveHost = *s.PreserveHost
		}
		if s.WebSocket != nil {
			r.WebSocket = *s.WebSocket
		}
		if s.HeaderTimeout != nil {
			r.HeaderTimeout = *s.HeaderTimeout
		}
		if s.ResponseTimeout != nil {
			r.ResponseTimeout = *s.ResponseTimeout
		}
		if s.TunnelIdleTimeout != nil {
			r.TunnelIdleTimeout = *s.TunnelIdleTimeout
		}
		bal := d.Balance
		if s.Balance != nil {
			bal = *s.Balance
		}
		p := &Pool{balance: bal}
		for _, a := range s.Backends {
			m := t.byAddr[a]
			p.members = append(p.members, m)
			p.dialers = append(p.dialers, t.conf[m].dialer)
		}
		r.Pool = p
		t.routes = append(t.routes, r)
		var tr *trie
		switch {
		case s.Host == "":
			if t.any == nil {
				t.any = &trie{}
			}
			tr = t.any
		case len(s.Host) > 2 && s.Host[0] == '*':
			if tr = t.wild[s.Host[2:]]; tr == nil {
				tr = &trie{}
				t.wild[s.Host[2:]] = tr
			}
		default:
			if tr = t.exact[s.Host]; tr == nil {
				tr = &trie{}
				t.exact[s.Host] = tr
			}
		}
		tr.insert(s.Prefix, r)
	}
	for h := range t.exact {
		t.exactLens.add(len(h))
	}
	for h := range t.wild {
		t.wildLens.add(len(h))
	}
	t.hosts = len(t.exact) > 0 || len(t.wild) > 0
	return t, nil
}

// Routes returns the routes in spec order.
func (t *Table) Routes() []*Route { return t.routes }

// String is the table in -route syntax, routes in match order separated by spaces
// ("/=127.0.0.1:3000 /loki/=127.0.0.1:3100,127.0.0.1:3101"): the start-up and reload log
// lines print it, and a reload compares two tables by it.
func (t *Table) String() string {
	var b strings.Builder
	for i, r := range t.routes {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(r.String())
		b.WriteByte('=')
		for j, m := range r.Pool.Members() {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(m.Addr())
		}
	}
	return b.String()
}

// Members returns the distinct members (one per backend address) in first-listed order.
func (t *Table) Members() []*Member { return t.members }

// Has reports whether m is a member of this table: after a reload, idle connections to members
// the new table dropped can be closed.
func (t *Table) Has(m *Member) bool {
	_, ok := t.conf[m]
	return ok
}

// MemberIDLimit is one more than the largest Member.ID of this table (and of every table it was
// built from), for arrays indexed by member ID, such as a loop's idle connections per member.
func (t *Table) MemberIDLimit() int { return t.nextID }

// HealthPath returns the active probe path of m in this table ("" = not probed).
func (t *Table) HealthPath(m *Member) string {
	if c := t.conf[m]; c != nil {
		return c.healthPath
	}
	return ""
}

// Match returns the route for a request, or nil (the loop answers 404). host is the Host field
// or the authority of an absolute-form target; target is the origin-form target (path and
// query; the query is not matched). A target that is not a path ("*" of OPTIONS *, or empty)
// is matched as "/".
//
// Host routes beat host-less ones: routes of the request's exact host are tried first, then the
// wildcard routes of its parent domain, then the host-less routes; within a group the longest
// matching prefix wins, and the first group with a match decides. Match allocates nothing.
func (t *Table) Match(host, target []byte) *Route {
	path := target
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if len(path) == 0 || path[0] != '/' {
		path = slashPath
	}
	if t.hosts {
		if r := t.matchHost(host, path); r != nil {
			return r
		}
	}
	if t.any != nil {
		return t.any.lookup(path)
	}
	return nil
}

func (t *Table) matchHost(host, path []byte) *Route {
	h, upper, ok := trimHost(host)
	if !ok {
		return nil
	}
	if upper {
		// Most clients send lower case; fold a copy only when needed.
		var buf [maxHost]byte
		for i, c := range h {
			buf[i] = lower(c)
		}
		h = buf[:len(h)]
	}
	if t.exactLens.has(len(h)) {
		if tr := t.exact[string(h)]; tr != nil {
			if r := tr.lookup(path); r != nil {
				return r
			}
		}
	}
	if len(t.wild) > 0 {
		// "*.example.com" stands for exactly one non-empty label.
		if i := bytes.IndexByte(h, '.'); i > 0 && t.wildLens.has(len(h)-i-1) {
			if tr := t.wild[string(h[i+1:])]; tr != nil {
				return tr.lookup(path)
			}
		}
	}
	return nil
}

// lenSet is a set of lengths 0..maxHost.
type lenSet [4]uint64

func (s *lenSet) add(n int) { s[n>>6&3] |= 1 << (n & 63) }

func (s *lenSet) has(n int) bool { return s[n>>6&3]&(1<<(n&63)) != 0 }
