package tlsterm

import (
	"crypto/tls"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
)

// Config configures TLS termination.
type Config struct {
	// Certs picks the certificate by SNI (required).
	Certs *CertStore
	// MinVersion is tls.VersionTLS12 (the default when 0) or tls.VersionTLS13.
	MinVersion uint16
	// MaxHandshakes bounds the handshakes running at once (each one a
	// goroutine); 0 means 4 x GOMAXPROCS. Over it, connections wait with
	// their ClientHello buffered and are started in arrival order.
	MaxHandshakes int
	// SessionTicketsDisabled turns resumption off (it is on by default).
	SessionTicketsDisabled bool
	// MaxPending bounds the bytes a connection may send while its handshake
	// runs (after the ClientHello), 0 means 256 KiB: a client may send its
	// first request right behind its Finished, and the loop cannot stop
	// reading meanwhile.
	MaxPending int
	// CipherSuites restricts the TLS 1.2 suites (nil: crypto/tls's defaults;
	// TLS 1.3 suites are not configurable in crypto/tls).
	CipherSuites []uint16
	// CurvePreferences, nil for crypto/tls's defaults.
	CurvePreferences []tls.CurveID
}

// Stats are counters since the Server was created, plus current gauges.
type Stats struct {
	Running, Waiting                      int // gauges
	PeakRunning                           int // the most handshakes ever running at once
	Started, Established, Failed, Resumed uint64
	TLS13, TLS12                          uint64
	HellosRejected, PlainHTTP             uint64
}

// Server is the state shared by every connection of a TLS listener: the
// crypto/tls configuration, the key log that hands each handshake its own
// secrets, and the handshake slots. Safe for concurrent use.
type Server struct {
	cfg  Config
	tls  *tls.Config
	keys keyLog

	mu         sync.Mutex
	running    int
	peak       int
	max        int
	head, tail *Handshake // FIFO of connections waiting for a slot
	waiting    int

	started, established, failed, resumed atomic.Uint64
	tls13, tls12                          atomic.Uint64
	rejected, plainHTTP                   atomic.Uint64
}

// NewServer validates cfg and builds the shared crypto/tls configuration.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Certs == nil {
		return nil, errors.New("tlsterm: no certificates")
	}
	switch cfg.MinVersion {
	case 0:
		cfg.MinVersion = tls.VersionTLS12
	case tls.VersionTLS12, tls.VersionTLS13:
	default:
		return nil, errors.New("tlsterm: minimum version must be TLS 1.2 or 1.3")
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 4 * runtime.GOMAXPROCS(0)
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 256 << 10
	}
	s := &Server{cfg: cfg, max: cfg.MaxHandshakes}
	s.tls = &tls.Config{
		GetCertificate:         cfg.Certs.GetCertificate,
		MinVersion:             cfg.MinVersion,
		NextProtos:             []string{"http/1.1"},
		SessionTicketsDisabled: cfg.SessionTicketsDisabled,
		CipherSuites:           cfg.CipherSuites,
		CurvePreferences:       cfg.CurvePreferences,
		KeyLogWriter:           &s.keys,
	}
	return s, nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Running: s.running, Waiting: s.waiting, PeakRunning: s.peak}
	s.mu.Unlock()
	st.Started, st.Established, st.Failed, st.Resumed = s.started.Load(), s.established.Load(), s.failed.Load(), s.resumed.Load()
	st.TLS13, st.TLS12 = s.tls13.Load(), s.tls12.Load()
	st.HellosRejected, st.PlainHTTP = s.rejected.Load(), s.plainHTTP.Load()
	return st
}

// acquire takes a handshake slot for h, or queues h (once) and reports
// false. A slot freed while h waits is handed to h directly (granted), so
// waiters start in arrival order and newcomers do not overtake them.
func (s *Server) acquire(h *Handshake) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.granted {
		h.granted = false
		return true
	}
	if h.queued {
		return false
	}
	if s.running < s.max && s.head == nil {
		s.running++
		s.peak = max(s.peak, s.running)
		return true
	}
	h.queued = true
	h.prev, h.next = s.tail, nil
	if s.tail != nil {
		s.tail.next = h
	} else {
		s.head = h
	}
	s.tail = h
	s.waiting++
	return false
}

func (s *Server) unlink(h *Handshake) {
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		s.head = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	} else {
		s.tail = h.prev
	}
	h.prev, h.next, h.queued = nil, nil, false
	s.waiting--
}

// release frees a slot, handing it to the oldest waiter if there is one.
func (s *Server) release() {
	s.mu.Lock()
	w := s.head
	if w == nil {
		s.running--
		s.mu.Unlock()
		return
	}
	s.unlink(w)
	w.granted = true
	s.mu.Unlock()
	w.wake()
}

// cancel removes h from the queue, or passes on a slot granted to it.
func (s *Server) cancel(h *Handshake) {
	s.mu.Lock()
	if h.queued {
		s.unlink(h)
	}
	granted := h.granted
	h.granted = false
	s.mu.Unlock()
	if granted {
		s.release()
	}
}
