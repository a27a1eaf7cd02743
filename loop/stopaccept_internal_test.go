//go:build linux

package loop

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// Connections waiting in the accept queues when a drain closes the listeners are accepted first
// and served (with Connection: close), not reset: the event loops are held busy while clients
// connect, so the connections queue; StopAccepting(true) takes them and hands them to gnet.
func TestStopAcceptingTakesTheQueue(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	defer srv.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	cfg := DefaultConfig()
	cfg.Listen, cfg.Backend, cfg.Loops = addr, ln.Addr().String(), 2
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Stop(ctx)
	}()
	// One conn per loop so that both loops have state to hold them busy through.
	var warm []net.Conn
	nloops := func() int {
		s.loopsMu.Lock()
		defer s.loopsMu.Unlock()
		return len(s.loops)
	}
	for i := 0; i < 8 && nloops() < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		warm = append(warm, c)
		time.Sleep(20 * time.Millisecond)
	}
	defer func() {
		for _, c := range warm {
			c.Close()
		}
	}()
	s.loopsMu.Lock()
	var lss []*loopState
	for _, ls := range s.loops {
		lss = append(lss, ls)
	}
	s.loopsMu.Unlock()
	hold := make(chan struct{})
	var held sync.WaitGroup
	for _, ls := range lss {
		held.Add(1)
		ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			held.Done()
			<-hold
			return nil
		}))
	}
	held.Wait()
	// Both loops are busy: these connections complete their handshake and wait in the queues.
	const n = 6
	clients := make([]net.Conn, n)
	for i := range clients {
		if clients[i], err = net.Dial("tcp", addr); err != nil {
			t.Fatal(err)
		}
		defer clients[i].Close()
		io.WriteString(clients[i], "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	s.draining.Store(true)
	listeners, accepted, err := s.StopAccepting(true)
	close(hold)
	if err != nil || listeners != 2 {
		t.Fatalf("StopAccepting: %d listeners, %v", listeners, err)
	}
	if accepted < n-len(lss) { // a loop may have accepted one before it ran our task
		t.Fatalf("%d connections taken from the queues, want about %d", accepted, n)
	}
	for i, c := range clients {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("queued client %d: %v (reset instead of served?)", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "ok" || !resp.Close {
			t.Fatalf("queued client %d: %d %q close %v", i, resp.StatusCode, body, resp.Close)
		}
	}
	t.Logf("%d of %d queued connections taken from the accept queues and served", accepted, n)
}
