package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

func init() {
	caddy.RegisterModule(BufferedWriter{})
}

// Defaults of BufferedWriter.
const (
	defaultBufferSize    = 64 << 10
	defaultFlushInterval = 100 * time.Millisecond
	// maxBufferSize bounds Size, in the Caddyfile and in JSON alike: the
	// buffer is allocated whole when the writer is provisioned, and a
	// JSON "size" of a terabyte stopped the process ("fatal error:
	// runtime: out of memory", which no recover catches) at `caddy
	// validate`, at start, or at a reload through the admin API.
	maxBufferSize = 1 << 30
)

// BufferedWriter is a log writer (`output buffered`) that collects log
// entries in memory and hands them to another writer in batches: when
// FlushInterval has passed since the first entry of a batch, when the
// next entry would not fit in Size bytes, and when the writer is closed.
// One write(2) per batch instead of one per entry is what makes a busy
// audit log cheap.
//
// When a configuration that uses the writer is unloaded (a reload, or a
// clean shutdown: SIGTERM, SIGINT, `caddy stop`), the buffer is written
// out, so nothing is lost; a reload that keeps the settings keeps the
// same buffer. A crash (SIGKILL, a panic, power loss) loses what is
// buffered: at most FlushInterval's worth of entries, never more than
// Size bytes.
type BufferedWriter struct {
	// WriterRaw is the writer the batches go to (any Caddy log writer,
	// e.g. a file), as a log's own "writer". Required.
	WriterRaw json.RawMessage `json:"writer,omitempty" caddy:"namespace=caddy.logging.writers inline_key=output"`
	// FlushInterval is the longest an entry waits in the buffer
	// (default 100ms).
	FlushInterval caddy.Duration `json:"flush_interval,omitempty"`
	// Size is the buffer's size in bytes (default 64 KiB, at most
	// 1 GiB); an entry larger than it is written at once.
	Size int `json:"size,omitempty"`

	out caddy.WriterOpener
	lb  *logBuffer
}

// logBuffers holds the buffer of each writer key. Caddy shares an opened
// log writer among the configurations that use its key, closing it when
// the last of them is unloaded (closeLogs) and opening it again for the
// next, so a writer's buffer is kept for the life of the process: every
// configuration using the key must find the buffer that Caddy's loggers
// write to, to flush it when that configuration is unloaded, and a
// buffer closed with its writer takes the writer opened after it (open).
// Entries are added and never deleted, as in Caddy's pool.
var logBuffers = caddy.NewUsagePool()

// CaddyModule returns the Caddy module information.
func (BufferedWriter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.logging.writers.buffered",
		New: func() caddy.Module { return new(BufferedWriter) },
	}
}

// Provision loads the output writer and applies the defaults.
func (b *BufferedWriter) Provision(ctx caddy.Context) error {
	if b.WriterRaw == nil {
		return errors.New("buffered log writer: an output is required")
	}
	mod, err := ctx.LoadModule(b, "WriterRaw")
	if err != nil {
		return fmt.Errorf("buffered log writer: loading its output: %w", err)
	}
	b.out = mod.(caddy.WriterOpener)
	if b.FlushInterval == 0 {
		b.FlushInterval = caddy.Duration(defaultFlushInterval)
	}
	if b.Size == 0 {
		b.Size = defaultBufferSize
	}
	if b.FlushInterval < 0 || b.Size < 0 {
		return errors.New("buffered log writer: flush_interval and size must not be negative")
	}
	if b.Size > maxBufferSize {
		return fmt.Errorf("buffered log writer: size %d: want at most %d (1GiB)", b.Size, maxBufferSize)
	}
	v, _, err := logBuffers.LoadOrNew(b.WriterKey(), func() (caddy.Destructor, error) {
		return newLogBuffer(b.Size, time.Duration(b.FlushInterval)), nil
	})
	if err != nil {
		return err
	}
	b.lb = v.(*logBuffer)
	b.lb.use()
	return nil
}

// Cleanup writes out the buffer when the configuration is unloaded;
// Caddy does not close log writers then. When the process is exiting,
// the writer also stops buffering: what other modules' Cleanup log
// after this one ran (the gateway's audit events of the requests it
// ends then) goes straight to the output, since the process exits
// before a timer could write it. So it does when a reload leaves no
// configuration using the buffer (its settings changed): the loggers of
// the unloaded configuration still write to it (the gateway's events of
// the streams it ends, of calls still running, the access log of
// requests still in flight), and no later Cleanup would write it out.
func (b *BufferedWriter) Cleanup() error {
	if b.lb == nil {
		return nil
	}
	if b.lb.release() || caddy.Exiting() {
		return b.lb.unbuffer()
	}
	return b.lb.Sync()
}

func (b *BufferedWriter) String() string {
	return "buffered " + b.out.String()
}

// WriterKey names the output and the settings: a reload that keeps them
// keeps the open writer and its buffer.
func (b *BufferedWriter) WriterKey() string {
	return "buffered:" + time.Duration(b.FlushInterval).String() + ":" + strconv.Itoa(b.Size) + ":" + b.out.WriterKey()
}

// OpenWriter opens the output and returns the buffer in front of it.
func (b *BufferedWriter) OpenWriter() (io.WriteCloser, error) {
	w, err := b.out.OpenWriter()
	if err != nil {
		return nil, err
	}
	b.lb.open(w)
	return b.lb, nil
}

// UnmarshalCaddyfile sets up the writer from Caddyfile tokens. Syntax:
//
//	buffered {
//		output <writer_module> ...
//		flush_interval <duration>
//		size <bytes>
//	}
func (b *BufferedWriter) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the writer's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "output":
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			var wo any
			switch name {
			// Caddy's standard streams have no Caddyfile unmarshaler
			// (as in Caddy's own log directive).
			case "stdout":
				wo = caddy.StdoutWriter{}
			case "stderr":
				wo = caddy.StderrWriter{}
			case "discard":
				wo = caddy.DiscardWriter{}
			default:
				unm, err := caddyfile.UnmarshalModule(d, "caddy.logging.writers."+name)
				if err != nil {
					return err
				}
				if _, ok := unm.(caddy.WriterOpener); !ok {
					return d.Errf("module %s is not a log writer", name)
				}
				wo = unm
			}
			b.WriterRaw = caddyconfig.JSONModuleObject(wo, "output", name, nil)
		case "flush_interval":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			v, err := caddy.ParseDuration(s)
			if err != nil || v <= 0 {
				return d.Errf("flush_interval %q: want a positive duration", s)
			}
			b.FlushInterval = caddy.Duration(v)
		case "size":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			v, err := humanize.ParseBytes(s)
			if err != nil || v == 0 || v > maxBufferSize {
				return d.Errf("size %q: want a size from 1B to 1GiB", s)
			}
			b.Size = int(v)
		default:
			return d.Errf("unrecognized subdirective %q", d.Val())
		}
	}
	if b.WriterRaw == nil {
		return d.Err("buffered: an output is required")
	}
	return nil
}

// logBuffer is the open writer of BufferedWriter. Each Write is one whole
// log entry (zap writes an encoded entry at a time), and a batch is only
// ever cut between entries, so no entry is split across writes.
type logBuffer struct {
	mu       sync.Mutex
	out      io.WriteCloser // nil until opened
	buf      []byte
	interval time.Duration
	timer    *time.Timer // armed while buf holds entries
	closed   bool
	users    int // configurations provisioned with the buffer, not unloaded yet
}

// use records a configuration provisioned with the buffer, which buffers
// again if a reload had left it unused (unbuffer).
func (lb *logBuffer) use() {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.users++
	if lb.users == 1 && lb.out != nil {
		lb.closed = false
	}
}

// release records a configuration using the buffer unloaded, and reports
// whether none is left. A reload provisions the new configuration before
// it unloads the old one, so a buffer the new one uses is never left.
func (lb *logBuffer) release() bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.users--
	return lb.users == 0
}

func newLogBuffer(size int, interval time.Duration) *logBuffer {
	lb := &logBuffer{buf: make([]byte, 0, size), interval: interval}
	lb.timer = time.AfterFunc(time.Hour, lb.tick)
	lb.timer.Stop()
	return lb
}

// open sets the output (again, after a Close).
func (lb *logBuffer) open(out io.WriteCloser) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.out, lb.closed = out, false
}

// Destruct writes out the buffer: logBuffers never releases an entry,
// so this runs only if a future Caddy does.
func (lb *logBuffer) Destruct() error { return lb.Sync() }

func (lb *logBuffer) Write(p []byte) (int, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.out == nil {
		return 0, errors.New("log buffer written before it was opened")
	}
	if lb.closed {
		// A logger that outlives its configuration still reaches the
		// output, unbuffered.
		return lb.out.Write(p)
	}
	if len(lb.buf)+len(p) > cap(lb.buf) {
		if err := lb.flush(); err != nil {
			return 0, err
		}
		if len(p) >= cap(lb.buf) {
			return lb.out.Write(p)
		}
	}
	if len(lb.buf) == 0 {
		lb.timer.Reset(lb.interval)
	}
	lb.buf = append(lb.buf, p...)
	return len(p), nil
}

// Sync writes out what is buffered (zap syncs after a fatal entry, and
// BufferedWriter.Cleanup when a configuration is unloaded).
func (lb *logBuffer) Sync() error {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.flush()
}

// unbuffer writes out what is buffered, and every later entry goes to
// the output at once.
func (lb *logBuffer) unbuffer() error {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	err := lb.flush()
	lb.closed = true
	lb.timer.Stop()
	return err
}

// Close writes out what is buffered and closes the output.
func (lb *logBuffer) Close() error {
	err := lb.unbuffer()
	return errors.Join(err, lb.out.Close())
}

// lostBatches is where a batch that could not be written is reported,
// however its write came: the timer's has no logger's Write call waiting
// for the error, and the error a Write or Sync returns is taken for that
// entry's (zap reports "write error" once), not the hundreds of earlier
// entries the batch held, which zap would each have reported to stderr
// unbuffered.
var lostBatches io.Writer = os.Stderr

func (lb *logBuffer) tick() {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	_ = lb.flush() // reported on lostBatches
}

// flush writes the buffer out; entries the output refused are dropped,
// as an unbuffered writer would have dropped them, and the batch is
// reported on lostBatches. Called with mu held.
func (lb *logBuffer) flush() error {
	if len(lb.buf) == 0 || lb.out == nil {
		return nil
	}
	lb.timer.Stop()
	_, err := lb.out.Write(lb.buf)
	if err != nil {
		fmt.Fprintf(lostBatches, "%s buffered log writer: a batch of %d bytes of log entries could not be written, and is lost: %v\n",
			time.Now().UTC().Format(time.RFC3339Nano), len(lb.buf), err)
	}
	lb.buf = lb.buf[:0]
	return err
}

// Interface guards
var (
	_ caddy.Provisioner     = (*BufferedWriter)(nil)
	_ caddy.CleanerUpper    = (*BufferedWriter)(nil)
	_ caddy.WriterOpener    = (*BufferedWriter)(nil)
	_ caddyfile.Unmarshaler = (*BufferedWriter)(nil)
)
