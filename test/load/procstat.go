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
