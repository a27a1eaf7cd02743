//go:build !linux

package route

import (
	"errors"
	"net/netip"
	"syscall"
)

// BindNoPortControl does nothing outside Linux (IP_BIND_ADDRESS_NO_PORT is Linux-only): a
// source-bound dial reserves its port at bind time there.
func BindNoPortControl(network, address string, c syscall.RawConn) error { return nil }

// ConnectNonblock is implemented on Linux only (the tunnel plane's own dialling is Linux-only).
func ConnectNonblock(dst netip.AddrPort, src netip.Addr) (fd int, connected bool, err error) {
	return -1, false, errors.ErrUnsupported
}

// ConnectResult is implemented on Linux only.
func ConnectResult(fd int) error { return errors.ErrUnsupported }
