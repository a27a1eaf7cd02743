package loop

import (
	"errors"
	"fmt"
)

// Re-opening the listeners after StopAccepting (a binary upgrade whose successor died after it
// had said READY, docs/lifecycle.md): gnet cannot add a listener to a running engine, so a new
// engine is started on the listen address beside the old one. The old engine keeps its client
// connections, without listeners, until Stop; the supervisor watches the new one. Tunnels and
// transfers are the plane's and never noticed either way.
//
// Invariant: run is the engine with listeners (or none, after StopAccepting); retired engines
// have none and are only ever stopped, by Stop.

// Relisten opens the listeners again after StopAccepting, and ends draining and passing: the
// server serves as before. It is a no-op when the listeners are open.
func (s *Server) Relisten() error {
	if !s.noListen.Load() {
		return nil
	}
	if s.ctx.Err() != nil {
		return errors.New("server stopped")
	}
	s.engMu.Lock()
	old := s.run
	s.engMu.Unlock()
	_, err := s.startRun()
	if err != nil {
		s.engMu.Lock()
		s.run = old // nothing changed: the old engine is still the one we have
		s.engMu.Unlock()
		return fmt.Errorf("listen %s: %w", s.addr, err)
	}
	s.engMu.Lock()
	s.retired = append(s.retired, old)
	s.engMu.Unlock()
	s.noListen.Store(false)
	s.draining.Store(false)
	select {
	case s.relistened <- struct{}{}:
	default:
	}
	s.log.Info("listeners re-opened", "listen", s.addr)
	return nil
}

// stopRetired stops the engines Relisten replaced (their connections close).
func (s *Server) stopRetired() {
	s.engMu.Lock()
	rs := s.retired
	s.retired = nil
	s.engMu.Unlock()
	for _, r := range rs {
		s.stopRun(r)
	}
}
