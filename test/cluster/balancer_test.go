package cluster

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBalancerAnswerBeforeBody: the balancer goes on passing the request
// body to the instance after the instance's answer has begun, as an HTTP/1
// proxy must. net/http's HTTP/1 server consumes and closes an unread
// request body when its handler begins the answer; the proxy's transport,
// which still reads the body (at least once more after Content-Length, to
// check it ended), then fails, closes its connection to the instance, and
// cuts off the event stream in flight (golang/go#40747). Under load that
// last read came late about 1 run in 20 of TestOneClientAlternately. Here
// the client sends the body only once the answer has begun: without full
// duplex the answer never arrives.
func TestBalancerAnswerBeforeBody(t *testing.T) {
	const sent = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	const events = 3
	want := strings.Repeat("data: {}\n\n", events)
	gotBody := make(chan string, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range events {
			fmt.Fprint(w, "data: {}\n\n")
			w.(http.Flusher).Flush()
			if i == 0 {
				body, _ := io.ReadAll(r.Body)
				gotBody <- string(body)
			}
		}
	}))
	t.Cleanup(backend.Close)
	lb := httptest.NewServer(newBalancer(backend.Listener.Addr().String()))
	t.Cleanup(lb.Close)

	ctx := ctxTimeout(t, 3*time.Second)
	pr, pw := io.Pipe()
	answered := make(chan struct{})
	go func() {
		select {
		case <-answered:
			_, _ = io.WriteString(pw, sent)
		case <-ctx.Done():
		}
		_ = pw.Close()
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, lb.URL+"/mcp", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(sent))
	resp, err := http.DefaultClient.Do(req)
	close(answered)
	if err != nil {
		t.Fatalf("POST through the balancer, body after the answer's beginning: %v", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if string(got) != want || err != nil {
		t.Errorf("event stream through the balancer = %q, %v; want %q", got, err, want)
	}
	if b := <-gotBody; b != sent {
		t.Errorf("request body at the instance = %q, want %q", b, sent)
	}
}
