package postgres

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyChannel is the one channel of every notification; the payload is
// the topic.
const notifyChannel = "mcp_auth"

// ListenApplicationName is the application_name of Watch's connection,
// so it can be told apart in pg_stat_activity.
const ListenApplicationName = "mcp-auth listen"

// Reconnect backoff of Watch: doubling from minListenBackoff, at most
// maxListenBackoff, so a database that comes back is listened to again
// within seconds without a flood of attempts while it is down.
const (
	minListenBackoff = 100 * time.Millisecond
	maxListenBackoff = 5 * time.Second
)

// Notify implements store.Notifier with NOTIFY, which PostgreSQL delivers
// on commit only, and merges when sent twice in one transaction.
func (t *tx) Notify(topic string) error {
	if err := t.check(notifyChannel, topic, true); err != nil {
		return err
	}
	if _, err := t.ptx.Exec(t.ctx, `SELECT pg_notify($1, $2)`, notifyChannel, topic); err != nil {
		return t.fail("notify", notifyChannel, topic, err)
	}
	return nil
}

// Watch implements store.Watcher with LISTEN on a connection of its own,
// outside the pool. It also returns when the store is closed (Close
// waits for it), at once when it was already.
func (s *Store) Watch(ctx context.Context, topics []string, fn func(topic string)) {
	s.watchMu.Lock()
	if s.closed.Load() {
		s.watchMu.Unlock()
		return
	}
	s.watches.Add(1)
	s.watchMu.Unlock()
	defer s.watches.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()

	backoff := minListenBackoff
	for ctx.Err() == nil && !s.closed.Load() {
		listening, _ := s.listen(ctx, topics, fn)
		if listening {
			backoff = minListenBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, maxListenBackoff)
	}
}

// listen connects, listens, calls fn for every topic, and then for every
// notification on one of topics until the connection fails or ctx ends.
// It reports whether it got as far as listening.
func (s *Store) listen(ctx context.Context, topics []string, fn func(topic string)) (bool, error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = ListenApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{notifyChannel}.Sanitize()); err != nil {
		return false, err
	}
	for _, topic := range topics {
		fn(topic)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		if n.Channel == notifyChannel && slices.Contains(topics, n.Payload) {
			fn(n.Payload)
		}
		if s.closed.Load() {
			return true, errors.New("postgres: closed")
		}
	}
}
