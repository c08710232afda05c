//go:build !unix

package cli

import (
	"io"
	"os"
	"os/exec"
	"syscall"
)

var (
	waitSignals    = []os.Signal{os.Interrupt}
	forwardSignals = []os.Signal{os.Interrupt}

	// Without POSIX signals the command can only be killed.
	termSignal = os.Kill
	killSignal = os.Kill
)

func keyboardSignal(s os.Signal) bool { return s == os.Interrupt }

func inForeground() bool { return true }

func foregroundTerminal(io.Reader) bool { return false }

func sendSignal(cmd *exec.Cmd, s os.Signal, _ bool) error { return cmd.Process.Signal(s) }

func exitCode(ps *os.ProcessState) int { return ps.ExitCode() }

func signalNum(s os.Signal) int {
	if s == os.Interrupt {
		return 2
	}
	return 1
}

func signalName(s os.Signal) string { return s.String() }

func procAttr(bool) *syscall.SysProcAttr { return nil }
