//go:build unix

package cli

import (
	"io"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

var (
	// waitSignals end a wait for the lock.
	waitSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}
	// forwardSignals are passed on to the command while it runs.
	forwardSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

	termSignal os.Signal = syscall.SIGTERM
	killSignal os.Signal = syscall.SIGKILL
)

// keyboardSignal reports whether the terminal sends s to the whole
// foreground process group (Ctrl-C, Ctrl-\).
func keyboardSignal(s os.Signal) bool {
	return s == syscall.SIGINT || s == syscall.SIGQUIT
}

// inForeground reports whether dlock's process group is the foreground
// group of its controlling terminal: then a keyboard signal reached every
// process of the group, the command included.
func inForeground() bool {
	f, err := os.Open("/dev/tty")
	if err != nil {
		return false
	}
	defer f.Close()
	pg, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	return err == nil && pg == unix.Getpgrp()
}

// foregroundTerminal reports whether in is a terminal whose foreground
// process group is dlock's: dlock runs interactively.
func foregroundTerminal(in io.Reader) bool {
	f, ok := in.(*os.File)
	if !ok {
		return false
	}
	pg, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	return err == nil && pg == unix.Getpgrp()
}

// sendSignal sends s to the command, or to its whole process group.
func sendSignal(cmd *exec.Cmd, s os.Signal, group bool) error {
	ss, ok := s.(syscall.Signal)
	if group && ok {
		return syscall.Kill(-cmd.Process.Pid, ss)
	}
	return cmd.Process.Signal(s)
}

// exitCode returns the command's exit status, or 128+N when signal N
// killed it.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func signalNum(s os.Signal) int {
	if ss, ok := s.(syscall.Signal); ok {
		return int(ss)
	}
	return 1
}

func signalName(s os.Signal) string {
	if ss, ok := s.(syscall.Signal); ok {
		if n := unix.SignalName(ss); n != "" {
			return n
		}
	}
	return s.String()
}
