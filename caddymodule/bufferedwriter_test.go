package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/logging" // the file writer
)

// recordingOutput is a log writer's output that keeps each write.
type recordingOutput struct {
	mu     sync.Mutex
	writes []string
	closed bool
	err    error // returned by every Write when set
}

func (o *recordingOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return 0, o.err
	}
	o.writes = append(o.writes, string(p))
	return len(p), nil
}

func (o *recordingOutput) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	return nil
}

func (o *recordingOutput) got() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.writes...)
}

func openLogBuffer(out *recordingOutput, size int, interval time.Duration) *logBuffer {
	lb := newLogBuffer(size, interval)
	lb.open(out)
	return lb
}

func writeAll(t *testing.T, w interface{ Write([]byte) (int, error) }, entries ...string) {
	t.Helper()
	for _, e := range entries {
		if n, err := w.Write([]byte(e)); err != nil || n != len(e) {
			t.Fatalf("Write(%q) = %d, %v, want %d, nil", e, n, err, len(e))
		}
	}
}

func TestLogBufferBatches(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		entries []string
		want    []string // output writes before Close
	}{
		{"held until flushed", 64, []string{"a\n", "b\n", "c\n"}, nil},
		{"full buffer written before the entry that does not fit", 8, []string{"aaa\n", "bbb\n", "ccc\n"}, []string{"aaa\nbbb\n"}},
		{"entry larger than the buffer written at once, after the batch", 8, []string{"aa\n", "0123456789\n", "b\n"}, []string{"aa\n", "0123456789\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := &recordingOutput{}
			lb := openLogBuffer(out, tt.size, time.Hour)
			writeAll(t, lb, tt.entries...)
			if got := out.got(); !slices.Equal(got, tt.want) {
				t.Errorf("writes before Close = %q, want %q", got, tt.want)
			}
			if err := lb.Close(); err != nil {
				t.Fatalf("Close() = %v, want nil", err)
			}
			if got, want := strings.Join(out.got(), ""), strings.Join(tt.entries, ""); got != want {
				t.Errorf("output after Close = %q, want %q (nothing lost, order kept)", got, want)
			}
			if !out.closed {
				t.Error("Close did not close the output")
			}
			// A logger that outlives its configuration still reaches the output.
			writeAll(t, lb, "late\n")
			if got := out.got(); got[len(got)-1] != "late\n" {
				t.Errorf("write after Close: output = %q, want it to end with %q", got, "late\n")
			}
		})
	}
}

func TestLogBufferFlushesOnTimer(t *testing.T) {
	out := &recordingOutput{}
	const interval = 20 * time.Millisecond
	lb := openLogBuffer(out, 1<<10, interval)
	defer lb.Close()
	start := time.Now()
	writeAll(t, lb, "a\n", "b\n")
	wrote := time.Since(start)
	deadline := time.Now().Add(5 * time.Second)
	for len(out.got()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("buffered entries not written 5 s after a 20 ms flush interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Two entries written within the interval are one write; a loaded
	// machine may take longer between them, and then the timer rightly
	// writes the first alone.
	for len(out.got()) == 1 && out.got()[0] == "a\n" && wrote >= interval && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	switch got := out.got(); {
	case wrote < interval && (len(got) != 1 || got[0] != "a\nb\n"):
		t.Errorf("timer flush wrote %q, want one write %q", got, "a\nb\n")
	case wrote >= interval && strings.Join(got, "") != "a\nb\n":
		t.Errorf("timer flushes wrote %q, want %q (the entries %v apart)", got, "a\nb\n", wrote)
	}
	flushed := len(out.got())
	// The timer is armed again by the next entry.
	writeAll(t, lb, "c\n")
	for len(out.got()) == flushed {
		if time.Now().After(deadline) {
			t.Fatal("second batch not written by the timer")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLogBufferSync(t *testing.T) {
	out := &recordingOutput{}
	lb := openLogBuffer(out, 1<<10, time.Hour)
	defer lb.Close()
	writeAll(t, lb, "fatal\n")
	if err := lb.Sync(); err != nil {
		t.Fatalf("Sync() = %v, want nil", err)
	}
	if got := out.got(); len(got) != 1 || got[0] != "fatal\n" {
		t.Errorf("after Sync output = %q, want %q", got, "fatal\n")
	}
}

func TestLogBufferOutputError(t *testing.T) {
	out := &recordingOutput{err: errors.New("disk full")}
	lb := openLogBuffer(out, 8, time.Hour)
	writeAll(t, lb, "aaa\n", "bbb\n")
	if _, err := lb.Write([]byte("ccc\n")); err == nil {
		t.Error("Write when the batch cannot be written = nil error, want the output's error")
	}
	out.mu.Lock()
	out.err = nil
	out.mu.Unlock()
	// The failed batch is dropped (as unbuffered writes would have been);
	// the buffer works again.
	writeAll(t, lb, "ddd\n")
	if err := lb.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if got := strings.Join(out.got(), ""); got != "ddd\n" {
		t.Errorf("output = %q, want %q", got, "ddd\n")
	}
}

// TestLogBufferTimerFlushErrorReported: a batch the timer could not
// write (the disk full, say) is reported on stderr, as zap reports an
// entry it could not write unbuffered; before, it was dropped with no
// trace anywhere, and audit events with it.
func TestLogBufferTimerFlushErrorReported(t *testing.T) {
	var report lockedBuffer
	defer func(w io.Writer) { lostBatches = w }(lostBatches)
	lostBatches = &report
	out := &recordingOutput{err: errors.New("disk full")}
	lb := openLogBuffer(out, 1<<10, 5*time.Millisecond)
	defer lb.Close()
	writeAll(t, lb, "audit event\n")
	for deadline := time.Now().Add(5 * time.Second); report.String() == ""; {
		if time.Now().After(deadline) {
			t.Fatal("a batch the timer could not write was not reported")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := report.String(); !strings.Contains(got, "12 bytes of log entries could not be written") || !strings.Contains(got, "disk full") {
		t.Errorf("report = %q, want the batch's size and the output's error", got)
	}
}

// TestLogBufferFlushErrorReported: a batch a Write or a Sync (a reload's
// Cleanup) could not write out is reported on stderr with its size and
// the output's error, as the timer's is: the error they return is zap's
// "write error" for one entry, where the batch held many, which went
// unannounced.
func TestLogBufferFlushErrorReported(t *testing.T) {
	var report lockedBuffer
	defer func(w io.Writer) { lostBatches = w }(lostBatches)
	lostBatches = &report
	out := &recordingOutput{err: errors.New("disk full")}
	lb := openLogBuffer(out, 8, time.Hour)
	defer lb.Close()
	writeAll(t, lb, "aaa\n", "bbb\n")
	if _, err := lb.Write([]byte("ccc\n")); err == nil {
		t.Fatal("Write when the batch cannot be written = nil error, want the output's error")
	}
	if got := report.String(); !strings.Contains(got, "a batch of 8 bytes of log entries could not be written") || !strings.Contains(got, "disk full") {
		t.Errorf("report after Write = %q, want the batch's size and the output's error", got)
	}
	writeAll(t, lb, "ddd\n")
	if err := lb.Sync(); err == nil {
		t.Fatal("Sync when the batch cannot be written = nil error, want the output's error")
	}
	if got := report.String(); !strings.Contains(got, "a batch of 4 bytes of log entries could not be written") {
		t.Errorf("report after Sync = %q, want the batch's size", got)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogBufferConcurrent: entries written from many goroutines arrive
// whole and all of them.
func TestLogBufferConcurrent(t *testing.T) {
	out := &recordingOutput{}
	lb := openLogBuffer(out, 256, time.Millisecond)
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := fmt.Fprintf(lb, "{\"w\":%d,\"i\":%d}\n", w, i); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(strings.Join(out.got(), ""), "\n"), "\n")
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d", len(lines), writers*each)
	}
	for _, l := range lines {
		var v struct{ W, I int }
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %q is not a whole entry: %v", l, err)
		}
	}
}

func TestBufferedWriterCaddyfile(t *testing.T) {
	// Left out (as in "defaults" below), Provision applies these.
	if defaultFlushInterval != 100*time.Millisecond || defaultBufferSize != 64<<10 {
		t.Fatalf("defaults flush_interval %v, size %d; README (Buffered log writer) says 100ms and 64KiB", defaultFlushInterval, defaultBufferSize)
	}
	tests := []struct {
		name    string
		input   string
		want    string // JSON of the module, "" when an error is expected
		wantErr string
	}{
		{"file with settings", "buffered {\n output file /var/log/audit.log {\n roll_keep 3\n }\n flush_interval 50ms\n size 1MiB\n}",
			`{"writer":{"filename":"/var/log/audit.log","output":"file","roll_keep":3},"flush_interval":50000000,"size":1048576}`, ""},
		{"defaults", "buffered {\n output stderr\n}", `{"writer":{"output":"stderr"}}`, ""},
		{"no output", "buffered {\n size 1KiB\n}", "", "an output is required"},
		{"argument", "buffered stderr", "", "wrong argument count"},
		{"unknown output", "buffered {\n output nowhere\n}", "", "nowhere"},
		{"zero size", "buffered {\n output stderr\n size 0\n}", "", "size"},
		{"bad interval", "buffered {\n output stderr\n flush_interval -1s\n}", "", "flush_interval"},
		{"unknown", "buffered {\n output stderr\n sync always\n}", "", `unrecognized subdirective "sync"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b BufferedWriter
			err := b.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("UnmarshalCaddyfile(%q) = %v, want an error containing %q", tt.input, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalCaddyfile(%q) = %v", tt.input, err)
			}
			got, _ := json.Marshal(b)
			if string(got) != tt.want {
				t.Errorf("config = %s, want %s", got, tt.want)
			}
		})
	}
}

// loadFree runs load, which loads a configuration listening on addr, for
// a free loopback addr, and returns it. A port found free (by listening
// and closing) may be taken by another process before Caddy listens, so
// a port found taken is replaced.
func loadFree(t *testing.T, load func(addr string) error) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		err = load(addr)
		if err == nil {
			return addr
		}
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("caddy.Load: %v", err)
		}
	}
}

// TestBufferedWriterReloadAndStop: Caddy in process logs each request
// through a buffered file writer whose timer never fires during the test.
// Entries stay in memory until the configuration is unloaded: a reload
// writes out those of the old configuration, the clean stop the rest.
func TestBufferedWriterReloadAndStop(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "access.log")
	var addr string
	config := func(body string) []byte {
		return fmt.Appendf(nil, `{
	"admin": {"disabled": true, "config": {"persist": false}},
	"logging": {"logs": {"access": {
		"writer": {"output": "buffered", "flush_interval": "1h",
			"writer": {"output": "file", "filename": %q}},
		"encoder": {"format": "json"},
		"include": ["http.log.access"]
	}, "default": {"exclude": ["http.log.access"]}}},
	"apps": {"http": {"servers": {"srv": {
		"listen": [%q],
		"logs": {},
		"routes": [{"handle": [{"handler": "static_response", "body": %q}]}]
	}}}}
}`, logFile, addr, body)
	}
	addr = loadFree(t, func(a string) error {
		addr = a
		return caddy.Load(config("one"), true)
	})
	stopped := false
	defer func() {
		if !stopped {
			_ = caddy.Stop()
		}
	}()
	// A fresh connection per request: the reload closes the old server's
	// idle keep-alive connections, and a request racing that close fails
	// with EOF.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(want string) {
		t.Helper()
		// Right after a reload the old server may still close a new
		// connection (EOF, reset) as it shuts down: such a request was
		// not served, so not logged, and is sent again.
		resp, err := client.Get("http://" + addr + "/")
		for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			resp, err = client.Get("http://" + addr + "/")
		}
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		if b.String() != want {
			t.Fatalf("GET = %q, want %q", b.String(), want)
		}
	}
	lines := func() int {
		b, err := os.ReadFile(logFile)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return bytes.Count(b, []byte("\n"))
	}
	for range 5 {
		get("one")
	}
	if n := lines(); n != 0 {
		t.Fatalf("%d lines on disk before any flush, want 0 (the writer buffers)", n)
	}
	if err := caddy.Load(config("two"), true); err != nil {
		t.Fatalf("reload: %v", err)
	}
	// The old configuration's buffer is written out when it is unloaded,
	// not after the hour-long flush interval; Caddy logs a request after
	// answering it, so the last line may land a moment after the reload.
	n := lines()
	for deadline := time.Now().Add(10 * time.Second); n < 5 && time.Now().Before(deadline); n = lines() {
		time.Sleep(10 * time.Millisecond)
	}
	if n != 5 {
		t.Errorf("%d lines on disk after the reload, want 5", n)
	}
	for range 3 {
		get("two")
	}
	if err := caddy.Stop(); err != nil {
		t.Fatalf("caddy.Stop: %v", err)
	}
	stopped = true
	if n := lines(); n != 8 {
		t.Errorf("%d access log lines after the stop, want 8 (5 before the reload, 3 after)", n)
	}
}

// TestBufferedWriterReloadChangingSettings: a reload that changes the
// writer's settings (flush_interval 1h to 2h) gives the new configuration
// another buffer; the loggers of the unloaded one still write to the old
// buffer for the requests still in flight (the gateway's events of the
// streams it ends and of calls still running, the access log here), and
// those entries reach the file, not a buffer no configuration writes out.
func TestBufferedWriterReloadChangingSettings(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "access.log")
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "slow")
	}))
	defer upstream.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	var addr string
	config := func(interval string) []byte {
		return fmt.Appendf(nil, `{
	"admin": {"disabled": true, "config": {"persist": false}},
	"logging": {"logs": {"access": {
		"writer": {"output": "buffered", "flush_interval": %q,
			"writer": {"output": "file", "filename": %q}},
		"encoder": {"format": "json"},
		"include": ["http.log.access"]
	}, "default": {"exclude": ["http.log.access"]}}},
	"apps": {"http": {"servers": {"srv": {
		"listen": [%q],
		"logs": {},
		"routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": %q}]}]}]
	}}}}
}`, interval, logFile, addr, strings.TrimPrefix(upstream.URL, "http://"))
	}
	addr = loadFree(t, func(a string) error {
		addr = a
		return caddy.Load(config("1h"), true)
	})
	defer func() { _ = caddy.Stop() }()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	done := make(chan error, 1)
	go func() {
		resp, err := client.Get("http://" + addr + "/slow")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the upstream")
	}
	if err := caddy.Load(config("2h"), true); err != nil {
		t.Fatalf("reload: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the request in flight at the reload: %v", err)
	}
	// Caddy logs the request after answering it.
	lines := func() int {
		b, err := os.ReadFile(logFile)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return bytes.Count(b, []byte("\n"))
	}
	for deadline := time.Now().Add(5 * time.Second); lines() < 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatalf("caddy.Stop: %v", err)
	}
	if n := lines(); n != 1 {
		t.Errorf("%d access log lines after the stop, want 1 (the request in flight at the reload)", n)
	}
}

// discardOutput is an output that keeps nothing.
type discardOutput struct{}

func (discardOutput) Write(p []byte) (int, error) { return len(p), nil }
func (discardOutput) Close() error                { return nil }

// auditLine is an entry the size of a gateway audit event.
var auditLine = []byte(`{"level":"info","ts":1796354965.2116694,"logger":"http.handlers.mcp_gateway.audit","msg":"mcp request","principal":"loadgen","client":"loadgen","act":[],"principal_type":"client","resource":"http://127.0.0.1:8080/mcp","http_method":"POST","method":"tools/call","jsonrpc_id":1,"tool":"echo","rule":"echo","decision":"allow","status":200,"latency":0.000412,"remote_addr":"127.0.0.1:50412"}` + "\n")

// BenchmarkLogBuffer: one audit-sized entry into the buffer, batches
// written to an output that keeps nothing (what write(2) costs is saved
// by the batching, not measured here).
func BenchmarkLogBuffer(b *testing.B) {
	lb := newLogBuffer(defaultBufferSize, defaultFlushInterval)
	lb.open(discardOutput{})
	defer lb.Close()
	b.ReportAllocs()
	b.SetBytes(int64(len(auditLine)))
	for b.Loop() {
		if _, err := lb.Write(auditLine); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLogBufferAllocations: an entry costs no allocation (part of the
// design: the buffer is reused batch after batch).
func TestLogBufferAllocations(t *testing.T) {
	lb := newLogBuffer(defaultBufferSize, time.Hour)
	lb.open(discardOutput{})
	defer lb.Close()
	if n := testing.AllocsPerRun(1000, func() { _, _ = lb.Write(auditLine) }); n != 0 {
		t.Errorf("Write allocates %v times per entry, want 0", n)
	}
}

// TestBufferedWriterJSONSizeBounded: a JSON configuration's "size" is
// held to the Caddyfile's 1GiB. The buffer is allocated whole when the
// writer is provisioned, so a "size" of a terabyte, unbounded, stopped
// the process at `caddy validate`, at start or at a reload ("fatal
// error: runtime: out of memory", which no recover catches); 2GiB (used
// here, as a terabyte would stop the test binary) loaded.
func TestBufferedWriterJSONSizeBounded(t *testing.T) {
	config := func(size int64) []byte {
		return fmt.Appendf(nil, `{
	"admin": {"disabled": true, "config": {"persist": false}},
	"logging": {"logs": {"audit": {
		"writer": {"output": "buffered", "size": %d, "flush_interval": "1h",
			"writer": {"output": "discard"}},
		"include": ["http.handlers.mcp_gateway.audit"]
	}}}
}`, size)
	}
	for _, size := range []int64{1<<30 + 1, 2 << 30} {
		err := caddy.Validate(mustConfig(t, config(size)))
		if err == nil || !strings.Contains(err.Error(), "at most 1073741824 (1GiB)") {
			t.Errorf(`"size": %d: Validate = %v, want an error naming the 1GiB bound`, size, err)
		}
	}
	if err := caddy.Validate(mustConfig(t, config(64<<10))); err != nil {
		t.Errorf(`"size": 65536: Validate = %v`, err)
	}
}

func mustConfig(t *testing.T, b []byte) *caddy.Config {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}
