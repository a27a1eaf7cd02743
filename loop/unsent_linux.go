package loop

import "golang.org/x/sys/unix"

// unsentBytes is how many bytes written to the socket its peer has not acknowledged yet
// (SIOCOUTQ): the part of an answer still on its way after it left wsgate's own queue.
func unsentBytes(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0
	}
	return n
}
