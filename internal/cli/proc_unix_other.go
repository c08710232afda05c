//go:build unix && !linux

package cli

import "syscall"

// procAttr starts the command in a new process group when group is set.
func procAttr(group bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: group}
}
