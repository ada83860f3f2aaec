package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// TestRevocationEndsStreamBehindWriteIdleTimeout: Caddy's write idle
// timeout (write_idle) wraps the response in a caddyhttp.IdleTimeoutWriter,
// whose SetWriteDeadline is the handler's to call; the registry's
// goroutine ending a revoked stream that its client reads must not race
// with the handler's writes (go test -race).
func TestRevocationEndsStreamBehindWriteIdleTimeout(t *testing.T) {
	var written atomic.Int64
	front, revs, served := floodFront(t, &written, func(w http.ResponseWriter) (http.ResponseWriter, func()) {
		// As Caddy's server does with a write idle timeout.
		iw := &caddyhttp.IdleTimeoutWriter{
			ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
			Ctrl:                  http.NewResponseController(w),
			Deadline:              caddyhttp.IdleDeadline{Start: time.Now(), Timeout: 30 * time.Second},
			Logger:                zap.NewNop(),
		}
		return iw, iw.HandlerDone
	})
	front.Start()
	t.Cleanup(front.Close)
	req := stolenGrantCall(t, front.URL)
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	go io.Copy(io.Discard, resp.Body) // a client that reads
	for written.Load() < 8<<20 {
		time.Sleep(10 * time.Millisecond)
	}
	revs.revoke("grant-stolen")
	select {
	case <-served:
	case <-time.After(endWriteGrace + 10*time.Second):
		t.Fatal("Serve still runs")
	}
}

// TestStopAuditsStreamItsClientDoesNotRead: at exit (Stop, with the wait
// Caddy's module gives it) a stream whose client reads nothing is ended
// and audited before Stop returns, though its writes are given up only
// endWriteGrace after it was ended: with a wait of endWriteGrace, Stop
// gave up on it about as its write did, and its event was lost at times.
func TestStopAuditsStreamItsClientDoesNotRead(t *testing.T) {
	var written atomic.Int64
	h := newHarness(t, unreadConfig(t), func(w http.ResponseWriter, r *http.Request) { flood(w, r, &written) })
	addr := strings.TrimPrefix(h.front.URL, "http://")
	conn := dialSmallReceiveBuffer(t, addr)
	body := toolCall("read_a")
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-11-25\r\nContent-Length: %d\r\n\r\n%s",
		addr, mint(t, claims()), len(body), body)
	waitBlocked(t, &written)
	if !h.g.Stop(StopWait) {
		t.Fatal("Stop: the unread stream was not audited within its wait")
	}
	n := 0
	for _, e := range h.logs.All() {
		if e.ContextMap()["reason"] == endStopped.desc {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d audit events with the stop's reason, want 1", n)
	}
}

// TestEndedRequestLeavesConnectionReusable: a call ended before its
// answer began gets its 503 at once, and the write deadline ending it
// set is put back: the kept-alive HTTP/1.1 connection serves the next
// request after that deadline has passed.
func TestEndedRequestLeavesConnectionReusable(t *testing.T) {
	cfg := unreadConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	started := make(chan struct{}, 1)
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test") == "answer" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
			return
		}
		started <- struct{}{}
		<-r.Context().Done() // answers nothing until ended
	})
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	go func() { <-started; revs.revoke("grant-stolen") }()
	resp, err := client.Do(stolenGrantCall(t, h.front.URL))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("the revoked call: %d, want its refusal", resp.StatusCode)
	}
	time.Sleep(endWriteGrace + time.Second)
	reused := false
	req, _ := http.NewRequest(http.MethodPost, h.front.URL+"/mcp", strings.NewReader(toolCall("read_a")))
	for k, v := range map[string]string{"Authorization": "Bearer " + mint(t, claims()), "Content-Type": "application/json",
		"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-11-25", "X-Test": "answer"} {
		req.Header.Set(k, v)
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !reused {
		t.Fatalf("next request: %d %s, connection reused %v; want 200 on the same connection", resp.StatusCode, body, reused)
	}
}
