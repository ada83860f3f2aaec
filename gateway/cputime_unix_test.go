//go:build unix

package gateway

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the test process has used (user + system),
// so that benchmarks can report CPU per operation, which a busy machine
// does not inflate as it does wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
