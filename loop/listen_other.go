//go:build !linux

package loop

import (
	"errors"
	"os"
)

// guard: abstract unix sockets are Linux-only. Elsewhere the probe bind (listen.go) is the only
// check, which catches a second wsgate on an overlapping address except when both start at the
// same moment, and there is no lock to pass to a successor.
type guard struct{}

func takeGuard(addr string, inherited *os.File) (*guard, error) {
	if inherited != nil {
		return nil, errors.New("inherited listen lock: not supported on this OS")
	}
	return nil, nil
}

func (g *guard) close() {}

func (g *guard) dup() (*os.File, error) {
	return nil, errors.New("listen lock: not supported on this OS")
}

func (g *guard) shared() bool { return false }
