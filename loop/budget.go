package loop

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/wsgate/wsgate/fdbudget"
	"github.com/wsgate/wsgate/metrics"
)

// The fd budget (package fdbudget) counts every fd the server owns, so that work needing another
// one is refused with 503 before the kernel refuses accept(2) with EMFILE, which would stop the
// whole gnet engine. Where each fd is counted, once:
//
//   - connections gnet holds (clients, backends, conns re-enrolled after an offload): handler
//     OnOpen acquires 1, OnClose releases 1, whatever the conn's role;
//   - a backend dial: the dialer reserves 2 before dialling (the socket, and gnet's dup of it
//     while Enroll registers it) and releases them once gnet holds the dup (counted by OnOpen)
//     and the dialled socket is closed, or the dial failed;
//   - a half-closed client's dup (halfclose.go): acquired in OnClose when an answer is still
//     owed, released when the dup is closed; while it is in a transfer the plane counts it instead;
//   - tunnels and transfers in the tunnel plane: the plane acquires 2 when it takes the fds
//     (Plane.Tunnel, Plane.Transfer) and releases them when it closes them or hands them back
//     (splice.Config.FDs); pipes: 2 from pipe2 to close, created only if the budget has room.
//
// An accepted client is counted by OnOpen after the kernel made its fd, so the budget may pass
// its limit by the connections in flight; such a client is answered 503 and closed at once.
const (
	// fdPerLoop is the reserve per gnet event loop for fds that exist without being counted:
	// one accepted conn before OnOpen runs, one closed conn between OnClose (which releases) and
	// gnet's close(2), and the two dups of an upgrade or offload hand-off (dup both sockets,
	// close gnet's copies, then the plane acquires): all four on the loop's own thread, so at
	// most that many per loop at any moment.
	fdPerLoop = 4
	// fdFixedPerLoop: the listener, the epoll fd and the eventfd of each gnet event loop
	// (main-reactor mode, used for port 0, has one more poller and one listener).
	fdFixedPerLoop = 3
	// fdPerTunnelLoop: each tunnel-plane loop's epoll fd and eventfd (kqueue + self-pipe: 3).
	fdPerTunnelLoop = 3
	// fdSlack covers what cannot be bounded per loop: the runtime's netpoller (created on first
	// use), the resolver reading /etc/hosts, the one-instance guard and the listen probe, log
	// files, transfers coming back from the plane (it releases their two fds before the loop
	// re-enrolls them, which dups each once more), and the first accept burst of main-reactor
	// mode. A hundredth of the limit on top scales it with busy hosts.
	fdSlack = 48
)

// errFDBudget is the dial error when the fd budget has no room for a backend connection.
var errFDBudget = errors.New("fd budget exhausted")

// fdPlan is what Start computed for the budget, for the log and the -max-conns warning.
type fdPlan struct {
	soft    uint64 // RLIMIT_NOFILE soft limit
	open    int    // fds open when Start measured
	reserve int    // fds the budget leaves below soft
	limit   int    // the budget
	need    int    // fds -max-conns can use
}

// planFDs sizes the budget from RLIMIT_NOFILE: limit = soft - reserve, where the reserve is
// every fd open now (stdio, runtime, anything the embedding program holds), the fixed fds the
// server is about to create, and the per-loop and slack margins above. It fails when nothing
// would be left for connections.
func planFDs(cfg Config) (fdPlan, error) {
	var p fdPlan
	soft, err := fdbudget.NoFile()
	if err != nil {
		return p, fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	p.soft = soft
	p.open = max(fdbudget.OpenFDs(), 16)
	p.reserve = p.open + (fdFixedPerLoop+fdPerLoop)*(cfg.Loops+1) + fdPerTunnelLoop*cfg.Tunnel.Loops +
		fdSlack + int(min(soft, 1<<30)/100)
	p.need = needFDs(cfg)
	if soft > 1<<30 {
		soft = 1 << 30
	}
	p.limit = int(soft) - p.reserve
	if p.limit < 8 {
		return p, fmt.Errorf("RLIMIT_NOFILE %d leaves no fds for connections: wsgate keeps %d for itself (raise ulimit -n / LimitNOFILE)", p.soft, p.reserve)
	}
	return p, nil
}

// needFDs is what the configured limits can hold at once: every connection or tunnel two fds
// (client and backend), every pipe two, and the idle backend pools (per member and loop).
func needFDs(cfg Config) int {
	pipes := max(cfg.Tunnel.MaxPipes, 0)
	if !cfg.Tunnel.Splice {
		pipes = 0
	}
	members := 1
	if cfg.Routes != nil {
		members = max(len(cfg.Routes.Members()), 1) // BackendIdle is per member per loop
	}
	return 2*cfg.MaxConns + 2*pipes + cfg.Loops*cfg.BackendIdle*members
}

// logFDPlan reports the budget at start, and warns when RLIMIT_NOFILE cannot cover -max-conns:
// past the budget new connections get 503 long before -max-conns is reached.
func logFDPlan(log *slog.Logger, cfg Config, p fdPlan, given bool) {
	if given {
		log.Debug("fd budget given by the caller", "limit", cfg.FDs.Limit())
		return
	}
	log.Debug("fd budget", "rlimit_nofile", p.soft, "open_at_start", p.open, "reserve", p.reserve, "limit", p.limit)
	if p.need > p.limit {
		log.Warn("RLIMIT_NOFILE cannot cover -max-conns: past the fd budget new connections get 503",
			"rlimit_nofile", p.soft, "fd_budget", p.limit, "max_conns", cfg.MaxConns, "max_pipes", cfg.Tunnel.MaxPipes,
			"fds_needed", p.need+p.reserve,
			"why", "each connection or tunnel holds 2 fds (client and backend), each busy tunnel direction may hold a pipe (2 fds)",
			"fix", "raise ulimit -n / LimitNOFILE, or lower -max-conns")
	}
}

// admit decides, in OnOpen, whether a freshly accepted client is served: -max-conns counts the
// client connections gnet holds plus the tunnels in the plane, and the fd budget must not be past
// its limit (overFDs, from OnOpen's Acquire). Cost: two atomic adds and one load. A refusal says
// why, for wsgate_connections_rejected_total.
func (s *Server) admit(overFDs bool) (metrics.RejectReason, bool) {
	n := s.conns.Add(1)
	var why metrics.RejectReason
	switch {
	case overFDs:
		s.rejectedFDs.Add(1)
		why = metrics.RejectFDBudget
	case n+s.plane.OpenTunnels() > int64(s.cfg.MaxConns):
		s.rejected.Add(1)
		why = metrics.RejectMaxConns
	default:
		return 0, true
	}
	s.conns.Add(-1)
	return why, false
}
