package cli

import "syscall"

// procAttr starts the command in a new process group when group is set,
// and has the kernel SIGKILL it if dlock dies without stopping it (say,
// kill -9): its lock then runs out after the TTL, and the command must not
// go on working unprotected.
func procAttr(group bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: group, Pdeathsig: syscall.SIGKILL}
}
