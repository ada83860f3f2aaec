//go:build linux

package harness

import (
	"context"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaitListenersReplaced: while a port has two listening sockets on one
// address (a reload's new one beside the old, both SO_REUSEPORT) the wait
// goes on; it ends once the old one is closed.
func TestWaitListenersReplaced(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	port := FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	old, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if d, err := doubledListeners([]int{port}); err != nil || d != "" {
		t.Fatalf("one listener counted as doubled: %q %v", d, err)
	}
	replacement, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer replacement.Close()
	done := make(chan struct{})
	go func() {
		WaitListenersReplaced(t, port)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("the wait ended while the old listener was open")
	case <-time.After(200 * time.Millisecond):
	}
	old.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the wait went on after the old listener closed")
	}
}
