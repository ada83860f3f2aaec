//go:build unix

package pgtest

import (
	"fmt"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
)

// account is the unprivileged user the server runs as when tests run as
// root.
type account struct{ uid, gid int }

func unprivileged() (*account, error) {
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and initdb refuses root: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, err
	}
	return &account{uid, gid}, nil
}

func (a *account) apply(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(a.uid), Gid: uint32(a.gid)}}
}
