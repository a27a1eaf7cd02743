package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

const (
	writeWait     = 10 * time.Second // a peer that cannot take a frame for this long is dropped
	tailReadLimit = 64 << 10         // a tail client only sends short text messages
	liveReadLimit = 16 << 20
)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  4 << 10,
	WriteBufferSize: 4 << 10,
	// The handlers run sameOrigin themselves first to answer with a readable 403; this keeps the
	// upgrader from ever accepting a cross-origin socket should a handler forget.
	CheckOrigin: sameOrigin,
}

// sameOrigin reports whether the Origin header, if any, names the host the request was sent to.
// Grafana (8.0.4+) refuses WebSocket upgrades otherwise; behind a proxy that rewrites Host to the
// backend address the browser's Origin no longer matches, which is why wsgate preserves Host.
// Clients that send no Origin (logcli, curl) are not browsers and are let through, as Loki does.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return asciiEqualFold(u.Host, r.Host)
}

// asciiEqualFold compares host names case-insensitively in ASCII only: strings.EqualFold folds
// Unicode too (the Kelvin sign matches k), which no HTTP peer does.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// checkOrigin answers 403 and returns false when sameOrigin fails.
func (d *demo) checkOrigin(w http.ResponseWriter, r *http.Request) bool {
	if sameOrigin(r) {
		return true
	}
	origin := r.Header.Get("Origin")
	d.log.Warn("websocket origin does not match host", "uri", r.RequestURI, "origin", origin,
		"host", r.Host, "remote", r.RemoteAddr)
	http.Error(w, fmt.Sprintf("origin %q not allowed for host %q (is the proxy preserving Host?)", origin, r.Host),
		http.StatusForbidden)
	return false
}

// Loki's tail frame: {"streams":[{"stream":{labels},"values":[["<ns>","<line>"]]}],"dropped_entries":null}.
type tailResponse struct {
	Streams        []tailStream `json:"streams"`
	DroppedEntries any          `json:"dropped_entries"`
}

type tailStream struct {
	Stream map[string]string `json:"stream"`
	Values [][2]string       `json:"values"`
}

// equalityMatcher finds name="value" matchers in a LogQL stream selector; =~, != and !~ are not
// equalities and do not match because the '=' must be followed by a quote.
var equalityMatcher = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"`)

// labelsFromQuery gives the synthetic stream the labels the query asked for, so a tail of
// {job="demo",env="dev"} looks like it matched something. job defaults to "demo".
func labelsFromQuery(query string) map[string]string {
	labels := map[string]string{"job": "demo"}
	sel := query
	if i := strings.IndexByte(sel, '}'); i >= 0 {
		sel = sel[:i]
	}
	for _, m := range equalityMatcher.FindAllStringSubmatch(sel, 16) {
		v, err := strconv.Unquote(`"` + m[2] + `"`)
		if err != nil {
			v = m[2]
		}
		labels[m[1]] = v
	}
	return labels
}

func withLabel(labels map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for lk, lv := range labels {
		out[lk] = lv
	}
	out[k] = v
	return out
}

// syntheticLine makes the seq'th fake log line: logfmt, varied, deterministic.
func syntheticLine(seq int64) string {
	dur := 3 + (seq*37)%250
	switch seq % 7 {
	case 0, 2, 4:
		paths := [...]string{"/api/dashboards/uid/demo", "/api/search", "/api/ds/query", "/public/build/app.js"}
		return fmt.Sprintf(`level=info msg="request completed" method=GET path=%s status=200 duration=%dms seq=%d`,
			paths[(seq/7)%int64(len(paths))], dur, seq)
	case 1, 5:
		return fmt.Sprintf(`level=debug msg="query executed" datasource=loki rows=%d duration=%dms seq=%d`,
			(seq*13)%1000, dur, seq)
	case 3:
		return fmt.Sprintf(`level=warn msg="slow query" datasource=prometheus duration=%dms threshold=200ms seq=%d`,
			dur+200, seq)
	default:
		return fmt.Sprintf(`level=error msg="upstream request failed" target=alertmanager err="context deadline exceeded" seq=%d`,
			seq)
	}
}

// serveTail imitates Loki's /loki/api/v1/tail: a WebSocket that pushes a synthetic line every
// interval and echoes each client text message into the stream (to prove both directions work).
func (d *demo) serveTail(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query().Get("query")
	if query == "" {
		http.Error(w, `query parameter is required, e.g. query={job="demo"}`, http.StatusBadRequest)
		return
	}
	if !d.checkOrigin(w, r) {
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		d.log.Warn("tail: upgrade failed", "remote", r.RemoteAddr, "err", err) // gorilla has answered
		return
	}
	d.sockets.Add(1)
	defer d.sockets.Done()
	d.tails.Add(1)
	defer d.tails.Add(-1)
	defer conn.Close()
	conn.SetReadLimit(tailReadLimit)
	log := d.log.With("remote", r.RemoteAddr, "query", query)
	log.Info("tail opened")

	done := make(chan struct{})
	defer close(done)
	echoes := make(chan string, 16)
	readErr := make(chan error, 1)
	go func() {
		for {
			mt, p, err := conn.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			if mt != websocket.TextMessage {
				continue
			}
			select {
			case echoes <- string(p):
			case <-done:
				return
			}
		}
	}()

	labels := labelsFromQuery(query)
	echoLabels := withLabel(labels, "source", "echo")
	send := func(stream map[string]string, line string) error {
		frame, err := json.Marshal(tailResponse{Streams: []tailStream{{
			Stream: stream,
			Values: [][2]string{{strconv.FormatInt(time.Now().UnixNano(), 10), line}},
		}}})
		if err != nil {
			return err
		}
		conn.SetWriteDeadline(time.Now().Add(writeWait))
		return conn.WriteMessage(websocket.TextMessage, frame)
	}

	// The first line tells the user what the backend saw on the upgrade request: through wsgate
	// the Host is the one the browser used and X-Forwarded-For names the browser.
	hello := fmt.Sprintf("level=info msg=\"tail opened\" query=%q host=%q origin=%q x_forwarded_for=%q remote=%q server=%q seq=0",
		query, r.Host, r.Header.Get("Origin"), r.Header.Get("X-Forwarded-For"), r.RemoteAddr, d.server())
	if err := send(labels, hello); err != nil {
		log.Warn("tail: writing first line", "err", err)
		return
	}
	ticker := time.NewTicker(d.interval)
	defer ticker.Stop()
	var seq, sent int64
	for {
		var err error
		select {
		case <-ticker.C:
			seq++
			err = send(labels, syntheticLine(seq))
		case msg := <-echoes:
			err = send(echoLabels, fmt.Sprintf("level=info msg=\"echo from client\" text=%q", msg))
		case rerr := <-readErr:
			if websocket.IsCloseError(rerr, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) {
				log.Info("tail closed by client", "lines", sent, "err", rerr)
			} else {
				log.Warn("tail: reading from client", "lines", sent, "err", rerr)
			}
			return
		case <-d.ctx.Done():
			conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseGoingAway, "wsgate-demo shutting down"),
				time.Now().Add(time.Second))
			log.Info("tail closed at shutdown", "lines", sent)
			return
		}
		if err != nil {
			log.Warn("tail: writing to client", "lines", sent, "err", err)
			return
		}
		sent++
	}
}

// serveLive echoes every message with its type, like a minimal Grafana Live channel. Messages are
// copied frame by frame, so a large one never sits whole in memory.
func (d *demo) serveLive(w http.ResponseWriter, r *http.Request) {
	if !d.checkOrigin(w, r) {
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		d.log.Warn("live: upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	d.sockets.Add(1)
	defer d.sockets.Done()
	defer conn.Close()
	conn.SetReadLimit(liveReadLimit)
	log := d.log.With("remote", r.RemoteAddr)
	log.Info("live opened")

	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-d.ctx.Done():
			conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseGoingAway, "wsgate-demo shutting down"),
				time.Now().Add(time.Second))
			// Give the client a moment to answer the close, then unblock the reader.
			conn.SetReadDeadline(time.Now().Add(time.Second))
		case <-done:
		}
	}()

	var msgs int64
	for {
		mt, rd, err := conn.NextReader()
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) {
				log.Info("live closed", "messages", msgs, "err", err)
			} else {
				log.Warn("live: reading from client", "messages", msgs, "err", err)
			}
			return
		}
		conn.SetWriteDeadline(time.Now().Add(writeWait))
		wr, err := conn.NextWriter(mt)
		if err != nil {
			log.Warn("live: writing to client", "messages", msgs, "err", err)
			return
		}
		if _, err := io.Copy(wr, rd); err != nil {
			log.Warn("live: echoing message", "messages", msgs, "err", err)
			return
		}
		if err := wr.Close(); err != nil {
			log.Warn("live: finishing echo", "messages", msgs, "err", err)
			return
		}
		msgs++
	}
}
