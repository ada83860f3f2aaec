//go:build unix

package caddymodule

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// notInUse refuses a backup target that a process holds open as a store
// (bbolt keeps an exclusive lock on its file): replacing it would leave
// that process writing to a file no longer on disk, every later write
// lost at its restart.
func notInUse(file string) error {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%s is a store a running process holds (the running Caddy's own?); back up to another file", file)
		}
		return nil // a file system without locks: nothing to learn
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
