package handoff

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkPeer makes sure the hand-off socket's other end was created by our
// parent (SO_PEERCRED of a socketpair is its creator), so a stray
// WSGATE_HANDOFF in an operator's shell cannot make us talk to some other
// fd 3.
func checkPeer(fd, ppid int) error {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("sock fd %d: SO_PEERCRED: %w", fd, err)
	}
	if int(cred.Pid) != ppid {
		return fmt.Errorf("sock fd %d belongs to pid %d, our parent is pid %d", fd, cred.Pid, ppid)
	}
	return nil
}
