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
// lost at its restart. It opens file without following a symbolic link
// and without blocking (opening a FIFO for reading waits for a writer),
// and refuses what is not a regular file: file may have changed since
// backupTarget looked at it.
func notInUse(file string) error {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file; back up to a regular file or a new path", file)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%s is a store a running process holds (the running Caddy's own?); back up to another file", file)
		}
		return nil // a file system without locks: nothing to learn
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
