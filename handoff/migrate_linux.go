package handoff

import (
	"fmt"
	"os"
	"strings"
)

// MigrateReqPath is the sysctl the upgrade relies on.
const MigrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// TCPMigrateReq reports net.ipv4.tcp_migrate_req in this process's network
// namespace. With it on (Linux 5.14+), connections queued on a listener
// that closes move to another listener of its SO_REUSEPORT group instead of
// being reset; wsgate warns at start when it is off. An error means the
// kernel has no such setting (older than 5.14) or /proc is not readable.
func TCPMigrateReq() (bool, error) {
	b, err := os.ReadFile(MigrateReqPath)
	if err != nil {
		return false, fmt.Errorf("net.ipv4.tcp_migrate_req: %w (Linux 5.14+ is needed to move queued connections between listeners)", err)
	}
	return strings.TrimSpace(string(b)) != "0", nil
}
