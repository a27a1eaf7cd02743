//go:build !linux

package loop

import "errors"

// StopAccepting needs /proc/self/fd and dup3 (stopaccept_linux.go); elsewhere a drain keeps
// accepting until Stop.
func (s *Server) StopAccepting(acceptQueued bool) (listeners, accepted int, err error) {
	s.noListen.Store(true)
	return 0, 0, errors.New("closing the listeners alone is not supported on this OS")
}

type listenerID struct{}

func (s *Server) listenerInodes() map[uint64]bool { return nil }
func (s *Server) recordListeners(map[uint64]bool) {}
