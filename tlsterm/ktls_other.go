//go:build !linux

package tlsterm

import (
	"errors"

	"github.com/wsgate/wsgate/tlsrecord"
)

var errNoKTLS = errors.New("ktls unavailable: not Linux")

// ProbeKTLS reports kernel TLS unavailable outside Linux.
func ProbeKTLS() error { return errNoKTLS }

// KTLSEnabled is always false outside Linux.
func KTLSEnabled(mode KTLSMode) (bool, error) { return false, errNoKTLS }

// InstallKTLS is unavailable outside Linux.
func InstallKTLS(fd int, s *tlsrecord.Session) error { return errNoKTLS }
