package handoff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// EnvVar tells a process that it is a successor and where its inherited
// descriptors are: "sock=3,lock=4,...". "sock" is the hand-off socket;
// every other name is a SuccessorConfig.Files entry. Inherited removes it
// from the environment so that it never leaks into a later child.
const EnvVar = "WSGATE_HANDOFF"

// NamedFile is a descriptor the successor inherits (e.g. the lock fd of
// the one-instance-per-port guard), found there with Receiver.File(Name).
type NamedFile struct {
	Name string // [a-z0-9_-], 1..32 bytes, not "sock"
	File *os.File
}

// SuccessorConfig says how to start the successor. The zero value re-runs
// this binary (os.Executable, which follows a binary replaced by rename)
// with the same arguments and environment.
type SuccessorConfig struct {
	Path   string      // default os.Executable()
	Args   []string    // default os.Args[1:]
	Env    []string    // default os.Environ(); EnvVar is replaced
	Files  []NamedFile // extra inherited descriptors; still the caller's (StartSuccessor dups them into the child only)
	Stdout io.Writer   // default os.Stdout
	Stderr io.Writer   // default os.Stderr
	Options
}

// StartSuccessor starts the successor and waits for its READY (it has
// bound its listeners). On success the caller stops accepting and calls
// Send, then Finish. On error the successor has been killed and reaped
// (or never started), nothing was sent, and the error says why: "exited
// with status 1", its FAIL text, or no READY within ReadyTimeout. The
// caller keeps serving.
func StartSuccessor(ctx context.Context, cfg SuccessorConfig) (*Sender, error) {
	o := cfg.Options.withDefaults()
	fail := func(phase string, err error) error { return &Error{Peer: "successor", Phase: phase, Err: err} }
	path := cfg.Path
	if path == "" {
		p, err := os.Executable()
		if err != nil {
			return nil, fail("start", fmt.Errorf("own executable: %w", err))
		}
		path = p
	}
	args := cfg.Args
	if args == nil {
		args = os.Args[1:]
	}
	env := cfg.Env
	if env == nil {
		env = os.Environ()
	}
	spec := "sock=3"
	for i, nf := range cfg.Files {
		if err := checkFileName(nf.Name); err != nil {
			return nil, fail("start", err)
		}
		for _, o := range cfg.Files[:i] {
			if o.Name == nf.Name {
				return nil, fail("start", fmt.Errorf("file name %q given twice", nf.Name))
			}
		}
		if nf.File == nil {
			return nil, fail("start", fmt.Errorf("file %q is nil", nf.Name))
		}
		spec += "," + nf.Name + "=" + strconv.Itoa(4+i)
	}

	pair, err := socketpair()
	if err != nil {
		return nil, fail("start", fmt.Errorf("socketpair: %w", err))
	}
	theirs := os.NewFile(uintptr(pair[1]), "handoff-successor")
	l, err := linkFromFD(pair[0], "handoff")
	if err != nil {
		theirs.Close()
		return nil, fail("start", err)
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   append([]string{os.Args[0]}, args...),
		Env:    append(withoutVar(env, EnvVar), EnvVar+"="+spec),
		Stdout: cfg.Stdout,
		Stderr: cfg.Stderr,
	}
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, theirs)
	for _, nf := range cfg.Files {
		cmd.ExtraFiles = append(cmd.ExtraFiles, nf.File)
	}
	// exec.Cmd puts every extra file in blocking mode (os.File.Fd). O_NONBLOCK belongs to the
	// open file description, which the caller's own copies share (a listener it still serves
	// from Go's netpoller, where an accept that finds nothing must not block): put it back once
	// the child has its copies. The child sets what it needs itself.
	nonblock := make([]bool, len(cfg.Files))
	for i, nf := range cfg.Files {
		nonblock[i] = isNonblock(nf.File)
	}
	err = cmd.Start()
	for i, nf := range cfg.Files {
		if nonblock[i] {
			setNonblock(nf.File)
		}
	}
	theirs.Close() // the child has its copy (or there is no child)
	if err != nil {
		l.close()
		return nil, fail("start", err)
	}
	ch := &child{cmd: cmd, exited: make(chan struct{})}
	go ch.wait()
	peer := "successor pid " + strconv.Itoa(cmd.Process.Pid)
	s := &Sender{l: l, o: o, peer: peer, child: ch}

	defer l.watch(ctx)()
	f, err := l.recv(deadline(ctx, o.ReadyTimeout))
	if err == nil {
		closeFDs(f.fds)
		switch {
		case f.h.typ == msgReady && len(f.payload) == 4 && len(f.fds) == 0:
			if pid := int(binary.BigEndian.Uint32(f.payload)); pid != cmd.Process.Pid {
				err = fmt.Errorf("%w: READY from pid %d", ErrProtocol, pid)
			}
		case f.h.typ == msgFail:
			err = fmt.Errorf("%w: %s", ErrPeerFail, f.payload)
		default:
			err = fmt.Errorf("%w: %v (%d bytes) instead of READY", ErrProtocol, f.h.typ, len(f.payload))
		}
	} else {
		err = s.ioErr(ctx, err, o.ReadyTimeout)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("closed the hand-off socket before READY: %w", err)
		}
	}
	if err != nil {
		l.close()
		ch.stop(time.Second) // it may still be binding; nothing is its yet
		if how := ch.status(0); how != "" && !strings.Contains(err.Error(), how) {
			err = fmt.Errorf("%w (%s)", err, how)
		}
		return nil, &Error{Peer: peer, Phase: "ready", Err: err}
	}
	return s, nil
}

// child is the successor process, reaped by its own goroutine.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // from Wait, once exited is closed
}

func (c *child) wait() {
	c.err = c.cmd.Wait()
	close(c.exited)
}

// status describes how the child ended if it has within d, else "".
func (c *child) status(d time.Duration) string {
	select {
	case <-c.exited:
	default:
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-c.exited:
		case <-t.C:
			return ""
		}
	}
	if c.err == nil {
		return "exited with status 0"
	}
	return "exited: " + c.err.Error()
}

// stop gives the child d to exit on its own (after ABORT or EOF), then
// kills it, and waits until it is reaped.
func (c *child) stop(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.exited:
		return
	case <-t.C:
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// isNonblock reports whether f's open file description is non-blocking, without changing it
// (f.Fd would).
func isNonblock(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	nb := false
	rc.Control(func(fd uintptr) {
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		nb = err == nil && fl&unix.O_NONBLOCK != 0
	})
	return nb
}

func setNonblock(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetNonblock(int(fd), true) })
	}
}

func withoutVar(env []string, name string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func checkFileName(n string) error {
	if n == "" || len(n) > 32 || n == "sock" {
		return fmt.Errorf("bad inherited file name %q", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("bad inherited file name %q", n)
		}
	}
	return nil
}

var inherited struct {
	once sync.Once
	r    *Receiver
	err  error
}

// Inherited returns the Receiver when this process was started by
// StartSuccessor, and nil, nil otherwise. It checks that the inherited fd
// is a unix stream socket whose other end belongs to the parent process,
// marks the inherited fds close-on-exec and removes EnvVar from the
// environment. Later calls return the same result.
//
// The successor then binds its listeners and calls Ready (or Fail), then
// Receive, tells systemd MAINPID, and calls Finish.
//
// An error means this process was started as a successor but cannot talk
// to its predecessor (say it died meanwhile, so SO_PEERCRED no longer names
// our parent): exit non-zero; the predecessor, if alive, keeps serving.
func Inherited() (*Receiver, error) {
	inherited.once.Do(func() {
		spec, ok := os.LookupEnv(EnvVar)
		if !ok {
			return
		}
		os.Unsetenv(EnvVar)
		inherited.r, inherited.err = inherit(spec, Options{})
	})
	return inherited.r, inherited.err
}

// InheritedWith is Inherited with non-default Options for the Receiver.
// Only the first of Inherited/InheritedWith to run reads the environment.
func InheritedWith(o Options) (*Receiver, error) {
	inherited.once.Do(func() {
		spec, ok := os.LookupEnv(EnvVar)
		if !ok {
			return
		}
		os.Unsetenv(EnvVar)
		inherited.r, inherited.err = inherit(spec, o)
	})
	return inherited.r, inherited.err
}

func inherit(spec string, o Options) (*Receiver, error) {
	fail := func(err error) error {
		return &Error{Peer: "predecessor", Phase: "inherit", Err: fmt.Errorf("%s=%q: %w", EnvVar, spec, err)}
	}
	fds := map[string]int{}
	for _, kv := range strings.Split(spec, ",") {
		name, v, ok := strings.Cut(kv, "=")
		fd, err := strconv.Atoi(v)
		if !ok || err != nil || fd < 3 {
			return nil, fail(fmt.Errorf("bad entry %q", kv))
		}
		if name != "sock" {
			if err := checkFileName(name); err != nil {
				return nil, fail(err)
			}
		}
		if _, dup := fds[name]; dup {
			return nil, fail(fmt.Errorf("%q given twice", name))
		}
		fds[name] = fd
	}
	sock, ok := fds["sock"]
	if !ok {
		return nil, fail(errors.New("no sock entry"))
	}
	for name, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fail(fmt.Errorf("%s fd %d: %w", name, fd, err))
		}
	}
	if typ, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
		return nil, fail(fmt.Errorf("sock fd %d is not a stream socket (type %d, %v)", sock, typ, err))
	}
	ppid := os.Getppid()
	if err := checkPeer(sock, ppid); err != nil {
		return nil, fail(err)
	}
	// Verified: from here on these fds are ours.
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	l, err := linkFromFD(sock, "handoff")
	if err != nil {
		return nil, fail(err)
	}
	r := &Receiver{l: l, o: o.withDefaults(), peer: "predecessor pid " + strconv.Itoa(ppid), ppid: ppid, expect: 1, files: map[string]*os.File{}}
	for name, fd := range fds {
		if name != "sock" {
			r.files[name] = os.NewFile(uintptr(fd), name)
		}
	}
	return r, nil
}
