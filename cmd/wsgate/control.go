package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// `wsgate upgrade`: asking a running wsgate for a binary upgrade and getting its outcome back.
//
// SIGUSR2 starts the same upgrade, but a signal carries no answer: the operator has to read the
// log to learn whether it worked. `wsgate upgrade -listen ADDR` connects to the running
// process's control socket, asks, and waits for the result: "upgraded: pid A -> pid B, N
// connections and tunnels passed" (exit 0) or why it failed (exit 1).
//
// The control socket is an abstract unix socket named after the listen address, like the
// one-instance guard ("wsgate-control 127.0.0.1:8080"). It answers only a peer whose uid
// (SO_PEERCRED, which the kernel fills in and the peer cannot forge) is wsgate's own or root:
// the same people who may send it SIGUSR2. The admin listener (-admin) was the other candidate
// and is not used for this: it is TCP, without authentication, often reachable by every local
// user and sometimes from other hosts, and it serves /metrics and pprof to anyone who can
// connect; restarting the process is not something its readers should be able to do.
//
// The successor inherits the control socket (like the listen lock), so the name is never
// unbound during an upgrade; it answers only once it has taken over. The old process closes its
// copy when it hands over; a request it accepted but could not serve is answered "handed over".

// controlName is the control socket's abstract name for a listen address.
func controlName(listen string) (string, error) {
	ta, err := net.ResolveTCPAddr("tcp", listen)
	if err != nil {
		return "", err
	}
	host := "*"
	if ta.IP != nil {
		host = ta.IP.String()
	}
	return "@wsgate-control " + net.JoinHostPort(host, strconv.Itoa(ta.Port)), nil
}

// controlRequest is one accepted request, answered on reply.
type controlRequest struct {
	cmd   string
	reply chan<- string // "ok ..." or "error ..."
}

// listenControl binds the control socket for listen (or adopts the inherited one) and serves it
// into ch. It returns the listener (closed by the caller when the process hands over or exits).
func listenControl(listen string, inherited *os.File, log *slog.Logger) (*net.UnixListener, error) {
	if runtime.GOOS != "linux" {
		return nil, errors.New("the control socket is an abstract unix socket: Linux only")
	}
	if inherited != nil {
		l, err := net.FileListener(inherited)
		inherited.Close() // FileListener made its own copy
		if err != nil {
			return nil, fmt.Errorf("inherited control socket: %w", err)
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			l.Close()
			return nil, fmt.Errorf("inherited control socket is a %T", l)
		}
		return ul, nil
	}
	name, err := controlName(listen)
	if err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %q: %w", name, err)
	}
	return l, nil
}

// serveControl accepts requests on l until it is closed, checks each peer and passes the request
// to the lifecycle (ch), and writes the answer back.
func serveControl(l *net.UnixListener, ch chan<- controlRequest, log *slog.Logger) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return // closed
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := checkControlPeer(c); err != nil {
				log.Warn("control socket: request refused", "err", err)
				fmt.Fprintf(c, "error %v\n", err)
				return
			}
			line, err := bufio.NewReader(io.LimitReader(c, 256)).ReadString('\n')
			if err != nil {
				return
			}
			reply := make(chan string, 1)
			ch <- controlRequest{cmd: strings.TrimSpace(line), reply: reply}
			c.SetDeadline(time.Now().Add(10 * time.Minute)) // an upgrade takes what it takes
			fmt.Fprintf(c, "%s\n", <-reply)
		}()
	}
}

// checkControlPeer lets through wsgate's own uid and root.
func checkControlPeer(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if me := uint32(os.Geteuid()); cred.Uid != me && cred.Uid != 0 {
		return fmt.Errorf("permission denied: uid %d is neither wsgate's (%d) nor root (pid %d)", cred.Uid, me, cred.Pid)
	}
	return nil
}

// runUpgradeCommand is `wsgate upgrade [-listen ADDR] [-timeout D]`.
func runUpgradeCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsgate upgrade", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "127.0.0.1:8080", "the address the running wsgate serves (its -listen)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the outcome")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: wsgate upgrade [-listen ADDR] [-timeout D]\n\n"+
				"Asks the wsgate serving ADDR for a binary upgrade (as SIGUSR2 does) and prints the outcome:\n"+
				"exit 0 once the new process has taken over, 1 if the upgrade failed (the running one keeps serving).\n\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return exitOK
		}
		fmt.Fprintf(stderr, "wsgate upgrade: %v (see wsgate upgrade -h)\n", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wsgate upgrade: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	name, err := controlName(*listen)
	if err != nil {
		fmt.Fprintf(stderr, "wsgate upgrade: -listen %q: %v\n", *listen, err)
		return exitUsage
	}
	c, err := net.DialTimeout("unix", name, 5*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "wsgate upgrade: no wsgate answers for %s (%v)\n", *listen, err)
		return exitFailure
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(*timeout))
	_, werr := io.WriteString(c, "upgrade\n")
	// A refusal (another user) is written before our request is read: read it even when the
	// write failed.
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if werr != nil {
			err = werr
		}
		fmt.Fprintf(stderr, "wsgate upgrade: no answer: %v\n", err)
		return exitFailure
	}
	line = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(line, "ok "); ok {
		fmt.Fprintf(stdout, "wsgate upgrade: %s\n", rest)
		return exitOK
	}
	fmt.Fprintf(stderr, "wsgate upgrade: %s\n", strings.TrimPrefix(line, "error "))
	return exitFailure
}
