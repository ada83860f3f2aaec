package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// cpuTicks returns utime+stime of a process in clock ticks, read from
// /proc/<pid>/stat (proc(5)).
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	return parseStatTicks(string(b))
}

// parseStatTicks extracts utime (field 14) + stime (field 15) from a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may itself hold spaces and parentheses, so fields are counted from the
// last ')'.
func parseStatTicks(line string) (uint64, error) {
	end := strings.LastIndexByte(line, ')')
	if end < 0 {
		return 0, errors.New("parse /proc stat: no command name")
	}
	// After ") " come field 3 (state), 4, ...; utime is field 14.
	fields := strings.Fields(line[end+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, fmt.Errorf("parse /proc stat: %d fields after the command name, want more than %d", len(fields), stime)
	}
	u, err := strconv.ParseUint(fields[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc stat utime: %w", err)
	}
	s, err := strconv.ParseUint(fields[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc stat stime: %w", err)
	}
	return u + s, nil
}

// kernelCounts are a process's crossings into the kernel: the read- and
// write-family system calls it made (syscr + syscw of /proc/<pid>/io,
// which counts the whole process, exited threads included) and the
// context switches of its threads (voluntary + nonvoluntary, summed over
// /proc/<pid>/task/*/status; a thread that exits takes its count along,
// which Go's few, long-lived threads rarely do).
type kernelCounts struct {
	syscalls, switches uint64
}

func (k kernelCounts) sub(o kernelCounts) kernelCounts {
	return kernelCounts{syscalls: k.syscalls - o.syscalls, switches: k.switches - o.switches}
}

func readKernelCounts(pid int) (kernelCounts, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return kernelCounts{}, fmt.Errorf("read syscall counts: %w", err)
	}
	var k kernelCounts
	r, err := sumFields(string(b), "syscr:", "syscw:")
	if err != nil {
		return kernelCounts{}, fmt.Errorf("/proc/%d/io: %w", pid, err)
	}
	k.syscalls = r
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return kernelCounts{}, fmt.Errorf("read threads: %w", err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		s, err := sumFields(string(b), "voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")
		if err != nil {
			return kernelCounts{}, fmt.Errorf("/proc/%d/task/%s/status: %w", pid, t.Name(), err)
		}
		k.switches += s
	}
	return k, nil
}

// sumFields adds the values of the "name: value" lines named, each of
// which must be present.
func sumFields(text string, names ...string) (uint64, error) {
	var sum uint64
	for _, name := range names {
		found := false
		for line := range strings.Lines(text) {
			v, ok := strings.CutPrefix(line, name)
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s %w", name, err)
			}
			sum += n
			found = true
			break
		}
		if !found {
			return 0, fmt.Errorf("no %s line", name)
		}
	}
	return sum, nil
}
