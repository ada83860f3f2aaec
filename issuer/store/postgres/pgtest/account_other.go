//go:build !unix

package pgtest

import (
	"errors"
	"os/exec"
)

type account struct{ uid, gid int }

func unprivileged() (*account, error) {
	return nil, errors.New("pgtest: cannot drop root privileges on this system")
}

func (a *account) apply(*exec.Cmd) {}
