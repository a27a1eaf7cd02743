package route

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// Dialer connects to one member from the source addresses its table gives it, in turn. Both
// the goroutine dialer (DialContext) and the non-blocking connect for an epoll loop
// (ConnectNonblock) bind a source with IP_BIND_ADDRESS_NO_PORT on Linux: bind(2) then reserves
// only the address and connect(2) picks the port for the 4-tuple, so each source address brings
// a whole ephemeral port range per backend, and one backend can hold more connections than the
// ~28k ports of the default range.
type Dialer struct {
	addr    string
	ap      netip.AddrPort // valid when addr is an IP literal
	sources []netip.Addr
	nds     []net.Dialer // one per source; one without a source when there are none
	next    atomic.Uint32
	timeout time.Duration
}

// NewDialer returns a Dialer for addr ("host:port"). Sources of the other address family than
// a literal addr are dropped (so an IPv4 pool list does not break an IPv6 backend); with no
// sources left the kernel chooses. timeout bounds DialContext (0: DefaultDialTimeout).
func NewDialer(addr string, sources []netip.Addr, timeout time.Duration) *Dialer {
	return newDialer(addr, sources, timeout)
}

func newDialer(addr string, sources []netip.Addr, timeout time.Duration) *Dialer {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	d := &Dialer{addr: addr, timeout: timeout}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		d.ap = ap
	}
	for _, s := range sources {
		s = s.Unmap()
		if d.ap.IsValid() && s.Is4() != d.ap.Addr().Unmap().Is4() {
			continue
		}
		d.sources = append(d.sources, s)
		d.nds = append(d.nds, net.Dialer{
			Timeout:   timeout,
			LocalAddr: &net.TCPAddr{IP: s.AsSlice()},
			Control:   BindNoPortControl,
		})
	}
	if len(d.nds) == 0 {
		d.nds = []net.Dialer{{Timeout: timeout}}
	}
	return d
}

// Addr is the member's address.
func (d *Dialer) Addr() string { return d.addr }

// Sources returns the source addresses dials are spread over (nil: the kernel chooses).
func (d *Dialer) Sources() []netip.Addr { return d.sources }

// AddrPort is the member's address when it is an IP literal; invalid for a host name (only the
// goroutine dialer resolves names). For a caller that connects by itself, such as the tunnel
// plane's upgrade path, with NextSource.
func (d *Dialer) AddrPort() netip.AddrPort { return d.ap }

// NextSource returns the source address for the next connect, taking turns with DialContext and
// ConnectNonblock; invalid when the kernel chooses.
func (d *Dialer) NextSource() netip.Addr {
	if len(d.sources) == 0 {
		return netip.Addr{}
	}
	return d.sources[(d.next.Add(1)-1)%uint32(len(d.sources))]
}

// Timeout is the dial timeout of DialContext; a non-blocking connect's caller enforces it.
func (d *Dialer) Timeout() time.Duration { return d.timeout }

// DialContext connects from the next source address (for a goroutine dialer). Errors are
// *DialError, which unwraps to the *net.OpError (Timeout() for 504 versus 502).
func (d *Dialer) DialContext(ctx context.Context) (net.Conn, error) {
	i := int((d.next.Add(1) - 1) % uint32(len(d.nds)))
	c, err := d.nds[i].DialContext(ctx, "tcp", d.addr)
	if err != nil {
		var src netip.Addr
		if len(d.sources) > 0 {
			src = d.sources[i]
		}
		return nil, &DialError{Addr: d.addr, Source: src, Err: err}
	}
	return c, nil
}

// ConnectNonblock starts a non-blocking connect from the next source address and returns the
// socket (close-on-exec, TCP_NODELAY). connected is true when the connect finished at once
// (loopback may); otherwise wait for EPOLLOUT and call ConnectResult. It needs an IP literal
// address (names are resolved by the goroutine dialer only).
func (d *Dialer) ConnectNonblock() (fd int, connected bool, err error) {
	if !d.ap.IsValid() {
		return -1, false, &DialError{Addr: d.addr, Err: errNeedIP}
	}
	var src netip.Addr
	if len(d.sources) > 0 {
		src = d.sources[(d.next.Add(1)-1)%uint32(len(d.sources))]
	}
	fd, connected, err = ConnectNonblock(d.ap, src)
	if err != nil {
		return -1, false, &DialError{Addr: d.addr, Source: src, Err: err}
	}
	return fd, connected, nil
}

// DialError names the backend and the source address of a failed connect.
type DialError struct {
	Addr   string
	Source netip.Addr // invalid when the kernel chose
	Err    error
}

func (e *DialError) Error() string {
	s := "backend " + e.Addr + ": connect"
	if e.Source.IsValid() {
		s += " from " + e.Source.String()
	}
	return s + ": " + e.Err.Error()
}

func (e *DialError) Unwrap() error { return e.Err }

// Timeout reports whether the connect timed out (504 rather than 502).
func (e *DialError) Timeout() bool {
	t, ok := e.Err.(interface{ Timeout() bool })
	return ok && t.Timeout()
}

type dialErr string

func (e dialErr) Error() string { return string(e) }

const errNeedIP = dialErr("non-blocking connect needs an IP literal backend address")
