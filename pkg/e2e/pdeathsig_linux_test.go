package e2e_test

import (
	"os/exec"
	"syscall"
)

// orphanProof makes the kernel kill cmd if the test process dies first
// (a test killed by its timeout or by hand), so that no serve outlives it.
func orphanProof(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
