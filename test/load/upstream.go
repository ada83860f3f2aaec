package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// toolsCallResult is the fixed answer of the fast upstream: what an MCP
// server returns for the echo tool called with {"text":"hi"}.
const toolsCallResult = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}`

// toolsListResult is the fast upstream's answer to tools/list (which the
// gateway sends itself to learn a tool's definition before the first call,
// pin_tools first_use being the default): the echo tool, with the
// request's id in place of %s.
const toolsListResult = `{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"echo","description":"Echoes its text.","inputSchema":{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}}]}}`

// streamHeader on a POST asks the fast upstream for an SSE answer that
// stays open (streams mode); its value is ignored.
const streamHeader = "X-Load-Stream"

// streamEvent is what the fast upstream's event streams send every tick.
const streamEvent = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"tick\"}}\n\n"

// initializeResult is the fast upstream's answer to initialize (with
// sessionID in Mcp-Session-Id), so that the load generator's -init
// measures requests in a session; the request's id in place of %s.
const initializeResult = `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"load-upstream","version":"1"}}}`

// sessionID is the one session the fast upstream hands out; it does not
// check it.
const sessionID = "load-upstream-session"

// upstreamHandler is the fast upstream: it reads the request body (as a
// real server would) and answers a fixed JSON-RPC result. It parses only
// initialize and tools/list requests (once per proxy process), so its
// cost is the same for both proxies and small.
// A GET, or a POST with streamHeader that is not initialize or tools/list,
// gets an event stream instead that sends streamEvent every tick until the
// client goes away.
func upstreamHandler(tick time.Duration) http.Handler {
	body := []byte(toolsCallResult)
	length := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			serveStream(w, r, tick)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		in, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "could not read the body", http.StatusBadRequest)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		answer := ""
		switch {
		case bytes.Contains(in, []byte(`"tools/list"`)):
			answer = toolsListResult
		case bytes.Contains(in, []byte(`"initialize"`)):
			answer = initializeResult
			h.Set("Mcp-Session-Id", sessionID)
		}
		if answer != "" {
			var req struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(in, &req) != nil || req.ID == nil {
				h.Del("Mcp-Session-Id")
				http.Error(w, "request without an id", http.StatusBadRequest)
				return
			}
			_, _ = fmt.Fprintf(w, answer, req.ID)
			return
		}
		if r.Header.Get(streamHeader) != "" {
			// The call's answer is a stream; a tools/list (the gateway
			// learning the tool's definition with the caller's headers)
			// was answered above.
			h.Del("Content-Type")
			serveStream(w, r, tick)
			return
		}
		h.Set("Content-Length", length)
		_, _ = w.Write(body)
	})
}

// serveStream answers an event stream: a comment at once (so the client
// knows it is open), then streamEvent every tick.
func serveStream(w http.ResponseWriter, r *http.Request, tick time.Duration) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if _, err := io.WriteString(w, ": open\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
			if _, err := io.WriteString(w, streamEvent); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

func runUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:3101", "listen address")
	tick := fs.Duration("stream-tick", time.Second, "interval between the events of an event stream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tick <= 0 {
		return errors.New("-stream-tick must be positive")
	}
	srv := &http.Server{Addr: *addr, Handler: upstreamHandler(*tick), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		_ = srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "load upstream listening on http://%s\n", *addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("upstream: %w", err)
	}
	return nil
}
