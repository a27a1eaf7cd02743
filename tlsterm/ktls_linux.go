//go:build linux

package tlsterm

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/wsgate/wsgate/tlsrecord"
)

var (
	ktlsOnce   sync.Once
	ktlsErr    error
	ktlsProbes atomic.Int32 // how many times the kernel was asked (tests: once)
)

// ProbeKTLS reports whether the kernel has the TLS ULP: nil when it does,
// else the reason (asked once per process: a TCP_ULP "tls" on a connected
// loopback socket; the answer is cached).
func ProbeKTLS() error {
	ktlsOnce.Do(func() {
		ktlsProbes.Add(1)
		ktlsErr = probeULP()
	})
	return ktlsErr
}

func probeULP() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("ktls probe: %w", err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return fmt.Errorf("ktls probe: %w", err)
	}
	defer c.Close()
	if a, err := ln.Accept(); err == nil {
		a.Close()
	}
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return fmt.Errorf("ktls probe: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, tcpULP, "tls")
	}); err != nil {
		return fmt.Errorf("ktls probe: %w", err)
	}
	if serr != nil {
		if serr == syscall.ENOENT {
			return fmt.Errorf("ktls unavailable: the kernel has no TLS ULP (CONFIG_TLS unset or the tls module not loaded): %w", serr)
		}
		return fmt.Errorf("ktls unavailable: setsockopt(TCP_ULP, \"tls\"): %w", serr)
	}
	return nil
}

// KTLSEnabled applies -ktls: false with the reason when off or unavailable.
func KTLSEnabled(mode KTLSMode) (bool, error) {
	if mode == KTLSOff {
		return false, fmt.Errorf("ktls off (-ktls off)")
	}
	if err := ProbeKTLS(); err != nil {
		return false, err
	}
	return true, nil
}

// InstallKTLS hands both directions of an established TLS 1.3 session to
// the kernel on fd (a connected TCP socket whose user-space buffers hold
// nothing of this connection). Afterwards the socket reads and writes
// plaintext; control records (alerts, KeyUpdate) then arrive through recvmsg
// with TLS_GET_RECORD_TYPE and a KeyUpdate stops reception (EKEYEXPIRED)
// until new keys are set. The session must not be used for data afterwards.
func InstallKTLS(fd int, s *tlsrecord.Session) error {
	if err := ktlsReady(s); err != nil {
		return err
	}
	tx, err := KTLSCryptoInfo(s.WriteState())
	if err != nil {
		return err
	}
	rx, err := KTLSCryptoInfo(s.ReadState())
	if err != nil {
		return err
	}
	defer clear(tx)
	defer clear(rx)
	if err := syscall.SetsockoptString(fd, syscall.IPPROTO_TCP, tcpULP, "tls"); err != nil {
		return fmt.Errorf("ktls: setsockopt(TCP_ULP, \"tls\"): %w", err)
	}
	if err := syscall.SetsockoptString(fd, solTLS, tlsTX, string(tx)); err != nil {
		return fmt.Errorf("ktls: setsockopt(TLS_TX): %w", err)
	}
	if err := syscall.SetsockoptString(fd, solTLS, tlsRX, string(rx)); err != nil {
		return fmt.Errorf("ktls: setsockopt(TLS_RX): %w", err)
	}
	return nil
}
