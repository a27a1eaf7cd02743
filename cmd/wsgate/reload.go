package main

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/tlsterm"
)

// SIGHUP: reload (docs/lifecycle.md, "SIGHUP: reload").
//
// One reload re-reads everything: the command line is parsed again with a fresh FlagSet
// (parseCommandLine: config.Load re-reads -config, every value rule runs), the certificate and
// key files are read again (-tls-cert/-tls-key, possibly other files than before), and the
// routes are built with route.NewTable(..., running) (members that stay keep their counts and
// health). Nothing changes until all of that passed: a file that does not parse or validate, or
// a certificate or key that cannot be used, is refused with every error logged (file:line, or
// the certificate file's name) and wsgate_reloads_total{result="error"}, and the running
// configuration, routes and certificates stay. Otherwise the certificates are swapped in (new
// handshakes get them; established TLS connections and tunnels hold their keys and never look
// again), the new table's probes start, Server.SetRoutes swaps it in (an exchange in flight
// finishes on the route it matched; tunnels and connections are not touched), the old table's
// probes stop, and the other reloadable settings apply to what starts from now on;
// wsgate_reloads_total{result="ok"}.
//
// Settings a running process cannot change are compared too: a changed one is not applied and
// the log says what it needs (a binary upgrade, which re-reads everything, or a restart); the
// rest of the reload goes ahead.

// reloadable are the settings a reload applies, to requests, connections and tunnels that start
// afterwards.
var reloadable = map[string]bool{
	"route": true, "backend": true, "balance": true, "health-path": true, "health-interval": true,
	"preserve-host": true, "header-timeout": true, "response-timeout": true, "dial-timeout": true,
	"tunnel-idle-timeout": true, // a route's tunnels: the table carries it
	"log-level":           true,
	"drain-delay":         true, "drain-timeout": true, "close-spread": true, // read when a drain starts
	"tls-cert": true, "tls-key": true, // new handshakes; not TLS on or off (tlsToggle)
}

// fixed are the settings only a new process can change, with what that takes. A binary upgrade
// (SIGUSR2) starts the binary again with the same command line, and the new process reads the
// file afresh, so it picks them up; -listen is the exception: the successor is admitted to the
// port by its predecessor's listen lock, which is the lock of the address being served.
var fixed = map[string]string{
	"listen":               "a restart (an upgrade keeps the address: its successor is admitted by that address's lock)",
	"loops":                "a binary upgrade (SIGUSR2) or a restart: the event loops are made at start",
	"tunnel-loops":         "a binary upgrade (SIGUSR2) or a restart: the tunnel loops are made at start",
	"max-conns":            "a binary upgrade (SIGUSR2) or a restart: the fd budget and the pipe cap are sized from it at start",
	"max-head-bytes":       "a binary upgrade (SIGUSR2) or a restart: each connection's parser takes it when it opens",
	"body-high-water":      "a binary upgrade (SIGUSR2) or a restart",
	"idle-timeout":         "a binary upgrade (SIGUSR2) or a restart",
	"backend-idle":         "a binary upgrade (SIGUSR2) or a restart",
	"backend-idle-timeout": "a binary upgrade (SIGUSR2) or a restart",
	"forwarded":            "a binary upgrade (SIGUSR2) or a restart",
	"header-names":         "a binary upgrade (SIGUSR2) or a restart",
	"splice":               "a binary upgrade (SIGUSR2) or a restart: the tunnel plane is made at start",
	"pipe-size":            "a binary upgrade (SIGUSR2) or a restart: the tunnel plane is made at start",
	"pipe-pool-max":        "a binary upgrade (SIGUSR2) or a restart: the tunnel plane is made at start",
	"max-pipes":            "a binary upgrade (SIGUSR2) or a restart: the tunnel plane is made at start",
	"tunnel-fin-timeout":   "a binary upgrade (SIGUSR2) or a restart: the tunnel plane is made at start",
	"memory-return":        "a binary upgrade (SIGUSR2) or a restart",
	"admin":                "a binary upgrade (SIGUSR2: the successor binds a changed address anew) or a restart",
	"admin-pprof":          "a binary upgrade (SIGUSR2) or a restart",
	"access-log":           "a binary upgrade (SIGUSR2) or a restart (SIGUSR1 reopens the same path)",
	"log-format":           "a binary upgrade (SIGUSR2) or a restart",
	"tls-min-version":      "a binary upgrade (SIGUSR2) or a restart: the TLS server is made at start",
	"tls-handshakes":       "a binary upgrade (SIGUSR2) or a restart: the handshake slots are made at start",
	"ktls":                 "a binary upgrade (SIGUSR2) or a restart",
	"redirect-http":        "a binary upgrade (SIGUSR2) or a restart",
}

// tlsToggle is what turning TLS on or off (-tls-cert given or not) needs: the listener is TLS
// or plain from its start.
const tlsToggle = "a binary upgrade (SIGUSR2) or a restart: a listener serves TLS or plain HTTP from its start"

// commandLineOnly cannot differ on a reload: the command line is the same one.
var commandLineOnly = map[string]bool{"config": true, "check-config": true, "version": true}

// reload is SIGHUP: systemd hears RELOADING=1 first and READY=1 last, whatever the outcome.
func (lc *lifecycle) reload() {
	if err := lc.notify.Reloading(); err != nil { // RELOADING=1 and MONOTONIC_USEC
		lc.log.Warn("systemd notify", "socket", lc.notify.Addr(), "err", err)
	}
	start := time.Now()
	applied, err := lc.applyReload()
	if err != nil {
		lc.reg.Reloaded(metrics.ReloadError)
		for _, line := range strings.Split(err.Error(), "\n") {
			if line != "" {
				lc.log.Error("reload refused", "err", line)
			}
		}
		lc.log.Error("SIGHUP: reload refused; the configuration, routes and certificates in use are unchanged", "config", lc.o.configFile)
		lc.sdnotify("READY=1", "STATUS="+lc.status("reload failed (see the log); serving the previous configuration"))
		return
	}
	lc.reg.Reloaded(metrics.ReloadOK)
	changed := strings.Join(applied, ",")
	if changed == "" {
		changed = "nothing"
	}
	from := lc.o.configFile
	if from == "" {
		from = "(no -config: the command line only)"
	}
	attrs := []any{"config", from, "routes", lc.table.String(), "changed", changed}
	if lc.certs != nil {
		attrs = append(attrs, "tls_names", strings.Join(lc.certs.Names(), ","))
	}
	lc.log.Info("SIGHUP: reloaded", append(attrs, "took", time.Since(start).Round(time.Microsecond))...)
	lc.sdnotify("READY=1", "STATUS="+lc.status("reloaded; serving"))
}

// applyReload reads and checks everything, then swaps in what a reload may change. It returns the
// settings it changed ("routes" for the table) or why it changed nothing.
func (lc *lifecycle) applyReload() ([]string, error) {
	o, err := parseCommandLine(lc.args)
	var ce configErrors
	switch {
	case errors.As(err, &ce):
		return nil, ce.err
	case err != nil:
		return nil, err
	}
	// The certificates first: NewTable below is the last check, so that nothing has to be undone.
	var certs *tlsterm.CertStore
	toggled := o.tls.enabled() != (lc.certs != nil)
	if lc.certs != nil && o.tls.enabled() {
		if certs, err = o.tls.loadCerts(); err != nil {
			return nil, err
		}
	}
	table, err := route.NewTable(o.routes, o.routeDefaults(lc.log), lc.srv.Routes())
	if err != nil {
		return nil, err
	}

	var applied []string
	names := make([]string, 0, len(o.values))
	for name := range o.values {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		was, now := lc.o.values[name], o.values[name]
		if was == now || commandLineOnly[name] {
			continue
		}
		if toggled && (name == "tls-cert" || name == "tls-key") {
			lc.log.Warn("SIGHUP: setting not applied: a running wsgate cannot change it", "setting", "-"+name,
				"running", was, "configured", now, "needs", tlsToggle)
			continue
		}
		if reloadable[name] {
			applied = append(applied, "-"+name)
			lc.o.values[name] = now
			continue
		}
		needs, ok := fixed[name]
		if !ok {
			needs = "a binary upgrade (SIGUSR2) or a restart"
		}
		lc.log.Warn("SIGHUP: setting not applied: a running wsgate cannot change it", "setting", "-"+name,
			"running", was, "configured", now, "needs", needs)
	}
	if table.String() != lc.table.String() || !slices.Equal(o.origins, lc.o.origins) {
		applied = append(applied, "routes")
	}

	if certs != nil {
		if !lc.certs.SameCertificates(certs) {
			applied = append(applied, "certificates")
		}
		lc.certs.Replace(certs) // re-read even when unchanged: the files are the ones configured now
		lc.o.tls.certs, lc.o.tls.keys = o.tls.certs, o.tls.keys
	}
	old := lc.table
	table.Start()
	lc.srv.SetRoutes(table)
	old.Close()
	lc.table = table
	lc.srv.SetHeaderTimeout(o.cfg.HeaderTimeout)
	lc.level.Set(o.level)
	lc.o.routes, lc.o.origins, lc.o.file = o.routes, o.origins, o.file
	lc.o.healthPath, lc.o.healthInterval, lc.o.balance = o.healthPath, o.healthInterval, o.balance
	lc.o.cfg.HeaderTimeout, lc.o.cfg.ResponseTimeout, lc.o.cfg.DialTimeout = o.cfg.HeaderTimeout, o.cfg.ResponseTimeout, o.cfg.DialTimeout
	lc.o.cfg.PreserveHost, lc.o.cfg.Tunnel.IdleTimeout, lc.o.level = o.cfg.PreserveHost, o.cfg.Tunnel.IdleTimeout, o.level
	lc.o.drainDelay, lc.o.drainTimeout, lc.o.closeSpread = o.drainDelay, o.drainTimeout, o.closeSpread
	return applied, nil
}
