package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

//go:embed index.html
var indexHTML []byte

// maxBigBytes bounds /api/big so a typo cannot ask for an endless response.
const maxBigBytes = 64 << 30

// bigPattern repeats with a prime period (251), so a body that was reordered, duplicated or cut
// at any chunk boundary no longer matches bigByte at its offset.
var bigPattern = func() []byte {
	b := make([]byte, 251*256)
	for i := range b {
		b[i] = bigByte(int64(i))
	}
	return b
}()

// bigByte is the byte /api/big sends at offset i.
func bigByte(i int64) byte { return byte(i % 251) }

// demo holds what the handlers share: the backend's own address (for the redirect), the tail pace,
// and the lifetime of hijacked sockets.
type demo struct {
	ctx      context.Context // cancelled at shutdown: WebSocket handlers close with 1001
	addr     string
	role     string // roleAll, roleGrafana or roleLoki: which endpoints this process serves
	interval time.Duration
	log      *slog.Logger
	started  time.Time
	sockets  sync.WaitGroup
	tails    atomic.Int64 // open tail streams, reported by /api/health
}

// Roles: make run starts a Grafana-like and a Loki-like process behind two wsgate routes (/ and
// /loki/); alone, one process serves both (roleAll).
const (
	roleAll     = "all"
	roleGrafana = "grafana"
	roleLoki    = "loki"
)

func newDemo(ctx context.Context, addr string, interval time.Duration, logger *slog.Logger) *demo {
	if logger == nil {
		logger = slog.Default()
	}
	return &demo{ctx: ctx, addr: addr, role: roleAll, interval: interval, log: logger, started: time.Now()}
}

// server names this process in answers (X-Demo-Server, /api/headers, the tail's first line).
func (d *demo) server() string {
	switch d.role {
	case roleGrafana:
		return "grafana-like demo on " + d.addr
	case roleLoki:
		return "loki-like demo on " + d.addr
	}
	return "demo on " + d.addr
}

// wait blocks until every WebSocket handler has returned or ctx ends.
func (d *demo) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { d.sockets.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		d.log.Warn("websocket handlers still running at shutdown deadline")
	}
}

func (d *demo) handler() http.Handler {
	mux := http.NewServeMux()
	if d.role != roleLoki { // Grafana's side: the page, its API, Grafana Live
		mux.HandleFunc("GET /{$}", d.serveIndex)
		mux.HandleFunc("GET /api/health", d.serveHealth)
		mux.HandleFunc("GET /api/headers", d.serveHeaders)
		mux.HandleFunc("GET /api/redirect", d.serveRedirect)
		mux.HandleFunc("POST /api/echo", d.serveEcho)
		mux.HandleFunc("GET /api/big", d.serveBig)
		mux.HandleFunc("GET /api/slow", d.serveSlow)
		mux.HandleFunc("GET /api/live/ws", d.serveLive)
	}
	if d.role != roleGrafana { // Loki's side: its API under /loki/, and /ready
		mux.HandleFunc("GET /loki/api/v1/tail", d.serveTail)
		mux.HandleFunc("GET /loki/api/v1/labels", d.serveLabels)
		mux.HandleFunc("GET /ready", d.serveReady)
	}
	return d.accessLog(mux)
}

// serveLabels answers like Loki's /loki/api/v1/labels.
func (d *demo) serveLabels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": []string{"job", "level", "source"}})
}

// serveReady answers like Loki's /ready (what wsgate's health_path probes).
func (d *demo) serveReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ready\n")
}

func (d *demo) serveIndex(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(indexHTML)))
	w.Write(indexHTML)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// healthDoc mirrors the fields of Grafana's /api/health that monitoring scripts read.
type healthDoc struct {
	Database      string  `json:"database"`
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Tails         int64   `json:"tails"`
}

func (d *demo) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, healthDoc{
		Database:      "ok",
		Version:       "wsgate-demo",
		UptimeSeconds: time.Since(d.started).Seconds(),
		Tails:         d.tails.Load(),
	})
}

// headersDoc is what /api/headers reports: enough to see whether the proxy preserved Host and
// appended X-Forwarded-For.
type headersDoc struct {
	Method     string              `json:"method"`
	URI        string              `json:"uri"`
	Proto      string              `json:"proto"`
	Host       string              `json:"host"`
	RemoteAddr string              `json:"remote_addr"`
	Headers    map[string][]string `json:"headers"`
	Server     string              `json:"server"` // which demo process answered
}

func (d *demo) serveHeaders(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, headersDoc{
		Method:     r.Method,
		URI:        r.RequestURI,
		Proto:      r.Proto,
		Host:       r.Host,
		RemoteAddr: r.RemoteAddr,
		Headers:    r.Header,
		Server:     d.server(),
	})
}

// serveRedirect points at the backend's own address, as a backend behind a proxy often does; the
// proxy's ProxyPassReverse must turn that into the address the client used. ?to=/path picks the
// path on the backend.
func (d *demo) serveRedirect(w http.ResponseWriter, r *http.Request) {
	to := r.URL.Query().Get("to")
	if to == "" {
		to = "/"
	}
	if !strings.HasPrefix(to, "/") || strings.HasPrefix(to, "//") {
		http.Error(w, "to must be an absolute path on this backend", http.StatusBadRequest)
		return
	}
	w.Header().Set("Location", "http://"+d.addr+to)
	w.WriteHeader(http.StatusFound)
}

// serveEcho streams the request body back as it arrives (chunked, flushed per read), so a proxy
// that buffers whole bodies shows up as latency. The byte count and SHA-256 go out as trailers.
func (d *demo) serveEcho(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// Without full duplex, net/http stops reading the request body once the response starts.
	if err := rc.EnableFullDuplex(); err != nil {
		d.log.Warn("echo: full duplex unavailable", "remote", r.RemoteAddr, "err", err)
	}
	h := w.Header()
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set("Trailer", "X-Echo-Bytes, X-Echo-Sha256")
	w.WriteHeader(http.StatusOK)
	sum := sha256.New()
	buf := make([]byte, 32<<10)
	var n int64
	for {
		m, err := r.Body.Read(buf)
		if m > 0 {
			sum.Write(buf[:m])
			n += int64(m)
			if _, werr := w.Write(buf[:m]); werr != nil {
				d.log.Warn("echo: writing response body", "remote", r.RemoteAddr, "after_bytes", n, "err", werr)
				return
			}
			if ferr := rc.Flush(); ferr != nil {
				d.log.Warn("echo: flushing response body", "remote", r.RemoteAddr, "after_bytes", n, "err", ferr)
				return
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			// The client's body ended badly: abort so the response is not presented as complete.
			d.log.Warn("echo: reading request body", "remote", r.RemoteAddr, "after_bytes", n, "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	h.Set("X-Echo-Bytes", strconv.FormatInt(n, 10))
	h.Set("X-Echo-Sha256", hex.EncodeToString(sum.Sum(nil)))
}

// serveBig answers exactly ?bytes=N bytes (default 1 MiB) of bigPattern with a Content-Length.
func (d *demo) serveBig(w http.ResponseWriter, r *http.Request) {
	n := int64(1 << 20)
	if s := r.URL.Query().Get("bytes"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 || v > maxBigBytes {
			http.Error(w, fmt.Sprintf("bytes must be an integer in [0, %d], got %q", int64(maxBigBytes), s), http.StatusBadRequest)
			return
		}
		n = v
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	// Offsets advance in whole pattern periods, so every write starts at bigByte(0).
	for left := n; left > 0; {
		chunk := int64(len(bigPattern))
		if left < chunk {
			chunk = left
		}
		if _, err := w.Write(bigPattern[:chunk]); err != nil {
			d.log.Debug("big: client went away", "remote", r.RemoteAddr, "sent", n-left, "of", n, "err", err)
			return
		}
		left -= chunk
	}
}

// maxSlow bounds /api/slow.
const maxSlow = time.Minute

// serveSlow answers after ?ms=N milliseconds (default 1000): a backend slower than the proxy's
// -response-timeout shows up as 504. The page also uses it to hold a real request open while a
// headless browser runs on virtual time (see index.html).
func (d *demo) serveSlow(w http.ResponseWriter, r *http.Request) {
	wait := time.Second
	if s := r.URL.Query().Get("ms"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 || time.Duration(v)*time.Millisecond > maxSlow {
			http.Error(w, fmt.Sprintf("ms must be an integer in [0, %d], got %q", maxSlow.Milliseconds(), s), http.StatusBadRequest)
			return
		}
		wait = time.Duration(v) * time.Millisecond
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	case <-d.ctx.Done():
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"slept_ms": wait.Milliseconds()})
}

// accessLog logs one line per request. The wrapper keeps Hijacker and Flusher reachable, because
// gorilla/websocket asserts http.Hijacker on the writer it is given.
func (d *demo) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w.Header().Set("X-Demo-Server", d.server()) // which process answered, behind which route
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		status := sw.status
		if sw.hijacked {
			status = http.StatusSwitchingProtocols
		} else if status == 0 {
			status = http.StatusOK
		}
		d.log.Info("request", "method", r.Method, "uri", r.RequestURI, "status", status,
			"bytes", sw.bytes, "remote", r.RemoteAddr, "host", r.Host,
			"xff", r.Header.Get("X-Forwarded-For"), "dur", time.Since(start).Round(time.Microsecond))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status   int
	bytes    int64
	hijacked bool
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := s.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer cannot be hijacked")
	}
	c, rw, err := h.Hijack()
	if err == nil {
		s.hijacked = true
	}
	return c, rw, err
}

// Unwrap lets http.ResponseController reach EnableFullDuplex and deadlines on the real writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
