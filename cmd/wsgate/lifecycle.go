package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/admin"
	"github.com/wsgate/wsgate/handoff"
	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/sdnotify"
	"github.com/wsgate/wsgate/tlsterm"
)

// The process's life once it listens (docs/lifecycle.md): the signals, the drain, the reload
// (reload.go), and what systemd is told over its notify socket.
//
//	SIGTERM, SIGINT  drain (loop.Server.Drain), then Stop and exit 0; a second one exits at once
//	SIGHUP           reload: -config, the command line and the certificate files again; routes
//	                 and certificates swapped together, or nothing when any of it is bad (reload.go)
//
// systemd (Type=notify): READY=1 once listening; RELOADING=1 + MONOTONIC_USEC, then READY=1
// around every reload (READY=1 also when it failed: it ends systemd's "reloading" state);
// STOPPING=1 when a drain starts. Without NOTIFY_SOCKET nothing is sent.

// lifecycle is the running process's state outside the proxy planes.
type lifecycle struct {
	args   []string // the command line, parsed again by every reload
	o      options  // in use: the start's, with what each reload applied
	srv    *loop.Server
	table  *route.Table // in use; the caller closes the last one at exit (closeTable)
	log    *slog.Logger
	level  *slog.LevelVar
	notify *sdnotify.Notifier
	sig    <-chan os.Signal

	// setReady is what /readyz answers (the admin listener's SetReady): false from the moment
	// a drain starts. nil when there is no admin listener.
	setReady func(bool)
	// reg counts reloads by result (wsgate_reloads_total); nil when metrics are off.
	reg *metrics.Registry
	// alog is the access log (SIGUSR1 reopens it); adm the admin listener, passed to a successor
	// and closed here once it took over. nil when off.
	alog *accesslog.Log
	adm  *admin.Server
	// redirect is the -redirect-http listener (tls.go), passed to a successor like the admin one
	// and closed here once it took over. nil when off.
	redirect *redirectServer

	// certs are the TLS certificates new handshakes get (nil without -tls-cert): a reload
	// replaces what they hold (reload.go), never the store.
	certs *tlsterm.CertStore

	// The control socket (control.go): requests from `wsgate upgrade`.
	ctlLn *net.UnixListener
	ctl   chan controlRequest
}

// closeAdmin stops serving the admin listener here (a successor serves the same socket).
func (lc *lifecycle) closeAdmin() {
	if lc.adm != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = lc.adm.Shutdown(ctx)
		lc.adm = nil
	}
}

// closeRedirect stops serving -redirect-http here (a successor serves the same socket).
func (lc *lifecycle) closeRedirect() {
	if lc.redirect != nil {
		lc.redirect.Close()
		lc.redirect = nil
	}
}

// closeControl stops answering on the control socket (this process's copy of it).
func (lc *lifecycle) closeControl() {
	if lc.ctlLn != nil {
		lc.ctlLn.Close()
		lc.ctlLn = nil
	}
}

// started tells systemd and the operator that wsgate is serving.
func (lc *lifecycle) started() {
	if lc.setReady != nil {
		lc.setReady(true)
	}
	lc.sdnotify("READY=1", "STATUS="+lc.status("serving"))
	if on, err := handoff.TCPMigrateReq(); err != nil || !on {
		why := "it is 0"
		if err != nil {
			why = err.Error()
		}
		lc.log.Warn("net.ipv4.tcp_migrate_req is off: during a binary upgrade (SIGUSR2) the connections waiting in the old listeners' accept queues are reset when those close; set it to 1 (deploy/sysctl.d/60-wsgate.conf)",
			"why", why)
	}
}

// serve handles signals until the process ends, and returns its exit code.
func (lc *lifecycle) serve() int {
	for {
		select {
		case s := <-lc.sig:
			switch s {
			case syscall.SIGHUP:
				lc.reload()
			case syscall.SIGUSR2:
				if pid, ok := lc.upgradeNow("SIGUSR2", nil); ok {
					return lc.drainKept(pid)
				}
			case syscall.SIGUSR1:
				reopenAccessLog(lc.o.accessLog, lc.alog, lc.log)
			case syscall.SIGINT, syscall.SIGTERM:
				return lc.drain(s)
			}
		case req := <-lc.ctl:
			if req.cmd != "upgrade" {
				req.reply <- fmt.Sprintf("error unknown request %q (this wsgate knows: upgrade)", req.cmd)
				continue
			}
			if pid, ok := lc.upgradeNow("wsgate upgrade", req.reply); ok {
				return lc.drainKept(pid)
			}
		case <-lc.srv.Done():
			lc.log.Error("the server failed and stops", "listen", lc.srv.Addr(), "err", lc.srv.Err())
			stop(lc.srv, lc.sig, lc.log)
			return exitFailure
		}
	}
}

// upgradeNow runs an upgrade asked for by what (a signal or a control request, whose answer goes
// to reply), logs the outcome, and reports the successor's pid when it took over.
func (lc *lifecycle) upgradeNow(what string, reply chan<- string) (int, bool) {
	rep, err := lc.upgrade()
	if err != nil {
		lc.log.Error(what+": upgrade failed; still serving", "err", err)
		if reply != nil {
			reply <- "error " + err.Error() + " (pid " + fmt.Sprint(os.Getpid()) + " keeps serving)"
		}
		return 0, false
	}
	lc.log.Info(what+": upgrade: handed over", "successor", rep.pid, "ready_after", rep.readyAfter.Round(time.Millisecond),
		"passed", rep.sent.Transferred, "kept", rep.sent.Kept, "batches", rep.sent.Batches, "fds", rep.sent.FDs,
		"listeners_closed", rep.listeners, "accepted_from_queue", rep.queued, "took", rep.took.Round(time.Millisecond),
		"conns_left", rep.keptConns, "tunnels_left", rep.tunnels, "open_fds_before", rep.fdsBefore, "open_fds_after", rep.fdsAfter)
	if reply != nil {
		reply <- fmt.Sprintf("ok upgraded: pid %d -> pid %d in %v: %d connections and tunnels passed, %d kept by the old process",
			os.Getpid(), rep.pid, rep.took.Round(time.Millisecond), rep.sent.Transferred, rep.keptConns+rep.tunnels)
	}
	return rep.pid, true
}

// drain runs the drain's timeline (loop.Server.Drain), then stops the server. A second SIGINT or
// SIGTERM meanwhile exits at once with status 1; SIGHUP is ignored while draining.
func (lc *lifecycle) drain(s os.Signal) int {
	if lc.setReady != nil {
		lc.setReady(false) // first: a load balancer stops sending new clients
	}
	st := lc.srv.Stats()
	lc.sdnotify("STOPPING=1", fmt.Sprintf("STATUS=draining: %d connections, %d tunnels", st.Conns, st.Tunnels))
	lc.log.Info("stopping", "signal", signalName(s), "drain_delay", lc.o.drainDelay, "drain_timeout", lc.o.drainTimeout,
		"close_spread", lc.o.closeSpread, "conns", st.Conns, "tunnels", st.Tunnels)
	return lc.awaitDrain(loop.DrainOptions{Delay: lc.o.drainDelay, Timeout: lc.o.drainTimeout, Spread: lc.o.closeSpread,
		ListenersClosed: func(n, accepted int, err error) {
			if err != nil {
				lc.log.Error("draining: closing the listeners failed; they close with the rest at the end", "listen", lc.srv.Addr(), "err", err)
			}
			st := lc.srv.Stats()
			lc.sdnotify(fmt.Sprintf("STATUS=draining, listeners closed: %d connections, %d tunnels", st.Conns, st.Tunnels))
		}}, 1)
}

// drainKept is the old process after it handed over to its successor (pid): it is not the
// service's main process any more, so it tells systemd nothing; it serves what it kept
// (exchanges still in flight, tunnels it could not pass) as a drain would, then exits 0. The
// first SIGTERM (systemd sends it to every process of the unit) changes nothing: it is draining
// already; a second one exits at once.
func (lc *lifecycle) drainKept(pid int) int {
	lc.closeControl()  // the successor answers from now on
	lc.closeAdmin()    // on the admin socket too
	lc.closeRedirect() // and on -redirect-http's
	lc.notify = sdnotify.New("")
	lc.setReady = nil
	st := lc.srv.Stats()
	lc.log.Info("upgrade: pid "+fmt.Sprint(pid)+" serves now; finishing what is left here, then exiting", "conns", st.Conns, "tunnels", st.Tunnels,
		"drain_timeout", lc.o.drainTimeout, "close_spread", lc.o.closeSpread)
	return lc.awaitDrain(loop.DrainOptions{Timeout: lc.o.drainTimeout, Spread: lc.o.closeSpread}, 2)
}

// awaitDrain runs a drain and stops the server when it is over. The fatal-th SIGINT or SIGTERM
// meanwhile exits at once with status 1.
func (lc *lifecycle) awaitDrain(o loop.DrainOptions, fatal int) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan loop.DrainReport, 1)
	go func() { done <- lc.srv.Drain(ctx, o) }()
	stops := 1
	if fatal > 1 {
		stops = 0 // the drain was not started by a signal
	}
	for {
		select {
		case rep := <-done:
			if rep.Empty {
				lc.log.Info("drained", "took", rep.Took.Round(1e6), "tunnels_closed_by_drain", rep.TunnelsClosed)
			} else {
				lc.log.Warn("drain window over: closing what is left", "took", rep.Took.Round(1e6), "conns", rep.Conns,
					"tunnels", rep.Tunnels, "tunnels_closed_by_drain", rep.TunnelsClosed)
			}
			return stop(lc.srv, lc.sig, lc.log)
		case req := <-lc.ctl:
			req.reply <- "error pid " + fmt.Sprint(os.Getpid()) + " is draining (stopping, or handed over to a successor): ask again"
		case s := <-lc.sig:
			switch s {
			case syscall.SIGINT, syscall.SIGTERM:
				if stops++; stops < fatal {
					lc.log.Info(signalName(s)+": draining already", "signal", signalName(s))
					continue
				}
				cancel()
				lc.log.Warn("second "+signalName(s)+" while draining: exiting now", "signal", signalName(s))
				return exitFailure
			case syscall.SIGUSR1:
				reopenAccessLog(lc.o.accessLog, lc.alog, lc.log)
			default:
				lc.log.Info(signalName(s)+": draining; ignored", "signal", signalName(s))
			}
		}
	}
}

// sdnotify sends to systemd's notify socket (nothing without NOTIFY_SOCKET); a failure is
// logged, never fatal.
func (lc *lifecycle) sdnotify(assignments ...string) {
	if err := lc.notify.Notify(assignments...); err != nil {
		lc.log.Warn("systemd notify", "socket", lc.notify.Addr(), "err", err)
	}
}

// status is the one line `systemctl status` shows.
func (lc *lifecycle) status(what string) string {
	t := lc.srv.Routes()
	return fmt.Sprintf("%s on %s: %d routes, %d backends", what, lc.srv.Addr(), len(t.Routes()), len(t.Members()))
}
