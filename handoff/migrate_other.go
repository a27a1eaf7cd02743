//go:build !linux

package handoff

import (
	"errors"
	"fmt"
)

// TCPMigrateReq: net.ipv4.tcp_migrate_req is Linux's (5.14+); elsewhere a
// closing listener's queued connections are not migrated.
func TCPMigrateReq() (bool, error) {
	return false, fmt.Errorf("net.ipv4.tcp_migrate_req: %w", errors.ErrUnsupported)
}
