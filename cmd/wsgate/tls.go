package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/tlsterm"
)

// TLS on the listener (issue 9): -tls-cert/-tls-key pairs (the first is the default, SNI picks by
// the names in the certificates), -tls-min-version, -tls-handshakes, -ktls, -redirect-http.
// SIGHUP re-reads the certificate files as part of the one reload (reload.go): a bad file refuses
// the whole reload with a log line, and the certificates (and routes) in use stay.

type tlsOptions struct {
	certs, keys config.StringsFlag // repeatable; in a -config file, arrays: tls_cert = ["a.pem", "b.pem"]
	minVersion  string
	handshakes  int
	ktls        string
	redirect    string

	min     uint16
	ktlsMod tlsterm.KTLSMode
}

func (o *tlsOptions) flags(fs *flag.FlagSet) {
	fs.Var(&o.certs, "tls-cert", "PEM certificate chain `file`; with -tls-key, -listen serves TLS only (repeatable, in pairs with -tls-key: the first pair is the default, SNI picks among the names in the certificates)")
	fs.Var(&o.keys, "tls-key", "PEM private key `file` of the -tls-cert given in the same position (repeatable)")
	o.minVersion = "1.2"
	fs.StringVar(&o.minVersion, "tls-min-version", o.minVersion, "lowest TLS version accepted: 1.2 or 1.3")
	o.handshakes = 4 * runtime.GOMAXPROCS(0)
	fs.IntVar(&o.handshakes, "tls-handshakes", o.handshakes, "TLS handshakes running at once (each one a goroutine); more wait in the event loop with their ClientHello buffered")
	o.ktls = "auto"
	fs.StringVar(&o.ktls, "ktls", o.ktls, "kernel TLS: auto (use it where the kernel has the TLS ULP; said once at start) or off")
	fs.StringVar(&o.redirect, "redirect-http", "", "also listen on this address for plain HTTP and answer every request with 308 to https://<same host>/<same path> (needs -tls-cert)")
}

func (o *tlsOptions) enabled() bool { return len(o.certs) > 0 }

// validate checks the TLS flags (not the files: load reads them). Errors are flagErrors, so a
// value from the -config file is reported at its line.
func (o *tlsOptions) validate(listen string) error {
	for _, l := range []struct {
		name  string
		files []string
	}{{"tls-cert", o.certs}, {"tls-key", o.keys}} {
		for _, f := range l.files {
			if f == "" {
				return badValue(l.name, "-%s: empty file name", l.name)
			}
		}
	}
	if len(o.certs) != len(o.keys) {
		return badValue("tls-key", "-tls-cert given %d times and -tls-key %d times: they go in pairs", len(o.certs), len(o.keys))
	}
	switch o.minVersion {
	case "1.2":
		o.min = tls.VersionTLS12
	case "1.3":
		o.min = tls.VersionTLS13
	default:
		return badValue("tls-min-version", "-tls-min-version %q: want 1.2 or 1.3", o.minVersion)
	}
	if o.handshakes < 1 {
		return badValue("tls-handshakes", "-tls-handshakes %d: want 1 or more", o.handshakes)
	}
	m, err := tlsterm.ParseKTLSMode(o.ktls)
	if err != nil {
		return badValue("ktls", "%v", err)
	}
	o.ktlsMod = m
	if o.redirect != "" {
		if !o.enabled() {
			return badValue("redirect-http", "-redirect-http %q: needs -tls-cert/-tls-key (it redirects to the TLS listener)", o.redirect)
		}
		if _, err := checkListen(o.redirect); err != nil {
			return badValue("redirect-http", "-redirect-http %q: want host:port (e.g. :80)", o.redirect)
		}
		if sameAddr(o.redirect, listen) {
			return badValue("redirect-http", "-redirect-http %q is the -listen address", o.redirect)
		}
	}
	return nil
}

func sameAddr(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	return pa == pb && pa != "0" && (ha == hb || ha == "" || hb == "")
}

// load reads the certificate pairs and builds the TLS server. The error names the file at fault.
func (o *tlsOptions) load() (*tlsterm.CertStore, *tlsterm.Server, error) {
	store, err := o.loadCerts()
	if err != nil {
		return nil, nil, err
	}
	srv, err := tlsterm.NewServer(tlsterm.Config{Certs: store, MinVersion: o.min, MaxHandshakes: o.handshakes})
	if err != nil {
		return nil, nil, err
	}
	return store, srv, nil
}

// loadCerts reads the certificate pairs (a start, -check-config, and every reload: reload.go).
// The error names the file at fault.
func (o *tlsOptions) loadCerts() (*tlsterm.CertStore, error) {
	pairs := make([]tlsterm.CertPair, len(o.certs))
	for i := range o.certs {
		pairs[i] = tlsterm.CertPair{CertFile: o.certs[i], KeyFile: o.keys[i]}
	}
	return tlsterm.LoadCerts(pairs...)
}

// logKTLS says once at start what kernel TLS does here.
func (o *tlsOptions) logKTLS(logger *slog.Logger) {
	ok, err := tlsterm.KTLSEnabled(o.ktlsMod)
	switch {
	case o.ktlsMod == tlsterm.KTLSOff:
		logger.Info("ktls off (-ktls off): TLS records are sealed and opened in user space")
	case !ok:
		logger.Info("ktls unavailable, falling back to user-space TLS records", "reason", err)
	default:
		// The kernel could take the keys, but the tunnel plane does not handle kTLS control records
		// (alerts, KeyUpdate) yet: docs/tls.md, "Kernel TLS".
		logger.Info("ktls: the kernel has the TLS ULP, but wsgate does not install kernel TLS yet; TLS records stay in user space")
	}
}

// redirectServer is -redirect-http: plain HTTP answered with 308 to the same host and path on
// https. It is not the hot path: net/http, with the header and idle timeouts of the main listener.
// A binary upgrade passes its listening socket to the successor (upgrade.go), as the admin one.
type redirectServer struct {
	srv *http.Server
	ln  *net.TCPListener
}

// startRedirect serves addr, on ln when a predecessor passed its socket (nil: bind anew).
func startRedirect(addr, tlsListen string, ln net.Listener, headerTimeout, idleTimeout time.Duration, logger *slog.Logger) (*redirectServer, error) {
	_, tlsPort, _ := net.SplitHostPort(tlsListen)
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("-redirect-http %s: %w", addr, err)
		}
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("-redirect-http %s: not a TCP listener", addr)
	}
	r := &redirectServer{ln: tl, srv: &http.Server{
		Handler:           redirectHandler(tlsPort),
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}}
	go func() {
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("redirect listener stopped", "listen", addr, "err", err)
		}
	}()
	logger.Info("redirecting plain HTTP to https", "listen", ln.Addr().String(), "to_port", tlsPort)
	return r, nil
}

// File is a dup of the listening socket, for a successor.
func (r *redirectServer) File() (*os.File, error) { return r.ln.File() }

// Close stops serving: the listener closes (a successor's copy stays open), requests in flight
// get 2 s.
func (r *redirectServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

// redirectHandler answers 308 to https://<Host without port>[:tlsPort]<request URI>.
func redirectHandler(tlsPort string) http.Handler {
	suffix := ""
	if tlsPort != "443" && tlsPort != "" {
		suffix = ":" + tlsPort
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
			if strings.Contains(host, ":") {
				host = "[" + host + "]"
			}
		}
		if host == "" || !validHost(strings.Trim(host, "[]")) {
			http.Error(w, "400 Bad Request: no usable Host to redirect to", http.StatusBadRequest)
			return
		}
		target := "https://" + host + suffix + r.URL.RequestURI()
		w.Header().Set("Location", target)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusPermanentRedirect)
		fmt.Fprintf(w, "%d Permanent Redirect: %s\n", http.StatusPermanentRedirect, target)
	})
}
