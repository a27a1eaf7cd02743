// Package backend is the origin every benchmark peer proxies to: two fixed HTTP bodies and
// three WebSocket endpoints (echo, sink, source). It is deliberately plain net/http plus
// gorilla/websocket so it costs the same behind every peer.
package backend

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/gorilla/websocket"
)

// Body sizes served at /100 and /16k.
const (
	SmallBody = 100
	LargeBody = 16 << 10
	// BulkFrame is the payload size of each binary message /ws/source sends and the bulk
	// client writes to /ws/sink.
	BulkFrame = 64 << 10
	// SinkDone is the text message that ends an upload to /ws/sink; the sink answers with the
	// number of binary payload bytes it received, as decimal text.
	SinkDone = "done"
)

var (
	small = bytes.Repeat([]byte("a"), SmallBody)
	large = bytes.Repeat([]byte("b"), LargeBody)
)

// Echo connections are many and mostly idle (the idle-tunnel scenario opens thousands), so
// they share pooled write buffers and reuse the server's 4 KiB read buffer.
var echoUpgrader = websocket.Upgrader{
	WriteBufferPool: &sync.Pool{},
	WriteBufferSize: 4 << 10,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// Bulk connections are few and busy: big buffers so the backend is not what limits MB/s.
var bulkUpgrader = websocket.Upgrader{
	ReadBufferSize:  BulkFrame,
	WriteBufferSize: BulkFrame + 16,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// Handler serves GET /100, GET /16k, and the WebSocket endpoints /ws, /ws/sink, /ws/source.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/100", fixed(small))
	mux.HandleFunc("/16k", fixed(large))
	mux.HandleFunc("/ws", echo)
	mux.HandleFunc("/ws/sink", sink)
	mux.HandleFunc("/ws/source", source)
	return mux
}

func fixed(body []byte) http.HandlerFunc {
	n := strconv.Itoa(len(body))
	return func(w http.ResponseWriter, r *http.Request) {
		// Setting the map entries directly skips the canonicalisation work of Header.Set.
		h := w.Header()
		h["Content-Length"] = []string{n}
		h["Content-Type"] = []string{"application/octet-stream"}
		w.Write(body)
	}
}

// echo returns every message as it came, same type, until the peer goes away.
func echo(w http.ResponseWriter, r *http.Request) {
	c, err := echoUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	buf := make([]byte, 0, 512)
	for {
		mt, rd, err := c.NextReader()
		if err != nil {
			return
		}
		buf = buf[:0]
		b := bytes.NewBuffer(buf)
		if _, err := b.ReadFrom(rd); err != nil {
			return
		}
		buf = b.Bytes()
		if err := c.WriteMessage(mt, buf); err != nil {
			return
		}
	}
}

// sink discards binary messages and, on a SinkDone text message, answers with the byte count,
// so the uploader knows when its bytes really arrived rather than when they left its socket.
func sink(w http.ResponseWriter, r *http.Request) {
	c, err := bulkUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	buf := make([]byte, BulkFrame)
	var total int64
	for {
		mt, rd, err := c.NextReader()
		if err != nil {
			return
		}
		if mt == websocket.TextMessage {
			io.Copy(io.Discard, rd)
			if err := c.WriteMessage(websocket.TextMessage, strconv.AppendInt(nil, total, 10)); err != nil {
				return
			}
			total = 0
			continue
		}
		for {
			n, err := rd.Read(buf)
			total += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
		}
	}
}

// source writes BulkFrame-byte binary messages as fast as the connection takes them: forever,
// or ?bytes=N in total then a normal close.
func source(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	c, err := bulkUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	// The client never sends data here, but a reader must run to see its close frame.
	go func() {
		for {
			if _, _, err := c.NextReader(); err != nil {
				c.UnderlyingConn().Close()
				return
			}
		}
	}()
	frame := bytes.Repeat([]byte{'s'}, BulkFrame)
	var sent int64
	for limit <= 0 || sent < limit {
		p := frame
		if limit > 0 && limit-sent < int64(len(p)) {
			p = p[:limit-sent]
		}
		if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
			return
		}
		sent += int64(len(p))
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
}
