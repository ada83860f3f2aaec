package issuer

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// limiterPlaces are the ways the brute-force limiter keeps its scores,
// each as the issuers that share them: in memory on a bbolt store; in a
// store that runs every Update twice; and on one PostgreSQL database
// under two instances, which take the requests in turn.
func limiterPlaces(t *testing.T) map[string]func(*testing.T) []*testEnv {
	return map[string]func(*testing.T) []*testEnv{
		"bolt": func(t *testing.T) []*testEnv {
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			st, err := bolt.Open(filepath.Join(t.TempDir(), "auth.db"), bolt.Options{Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return []*testEnv{newTokEnvStore(t, st, clock)}
		},
		"store counters": func(t *testing.T) []*testEnv {
			e := newTokEnv(t)
			e.iss.limiter.c = storeCounters{e.store, limitsBruteForce}
			return []*testEnv{e}
		},
		"postgres, two instances": func(t *testing.T) []*testEnv {
			envs, _ := clusterEnvs(t, 2)
			return envs
		},
	}
}

// concurrently sends n client_credentials requests for client with
// secret from remote all at once, in turn to envs, and returns the
// answers and the hashes run.
func concurrently(envs []*testEnv, n int, remote, client, secret string) ([]*httptest.ResponseRecorder, int64) {
	before := int64(0)
	for _, e := range envs {
		before += e.iss.hashes.runs.Load()
	}
	answers := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for k := range answers {
		wg.Go(func() { answers[k] = envs[k%len(envs)].tokenFrom(remote, client, secret) })
	}
	wg.Wait()
	hashed := -before
	for _, e := range envs {
		hashed += e.iss.hashes.runs.Load()
	}
	return answers, hashed
}

// TestConcurrentRightSecretsPass: a busy service client sending many
// client_credentials requests with the right secret at once from one
// address gets every one of them, wherever the scores are kept: an
// attempt in flight is not a failure.
func TestConcurrentRightSecretsPass(t *testing.T) {
	for name, place := range limiterPlaces(t) {
		t.Run(name, func(t *testing.T) {
			envs := place(t)
			const n = 40
			answers, hashed := concurrently(envs, n, "198.51.100.7:4000", tConf, tSecret)
			for k, w := range answers {
				if w.Code != http.StatusOK {
					t.Errorf("right secret %d of %d at once = %d %s, want 200", k+1, n, w.Code, w.Body)
				}
			}
			if hashed != n {
				t.Errorf("hashes = %d, want %d", hashed, n)
			}
		})
	}
}

// TestConcurrentWrongSecretsBudget: wrong secrets sent all at once for
// one client from one address, wherever the scores are kept, run no
// more hashes than the pair's budget (its free failures, then the one
// that blocks); every other attempt is refused with 429, and the right
// secret from that address is refused too until the block ends.
func TestConcurrentWrongSecretsBudget(t *testing.T) {
	for name, place := range limiterPlaces(t) {
		t.Run(name, func(t *testing.T) {
			envs := place(t)
			const attacker, n = "203.0.113.9:4000", 40
			answers, hashed := concurrently(envs, n, attacker, tConf, "wrong")
			if hashed < 1 || hashed > limitFreePair+1 {
				t.Errorf("hashes for %d concurrent wrong secrets = %d, want 1..%d", n, hashed, limitFreePair+1)
			}
			failed, refused := 0, 0
			for _, w := range answers {
				switch w.Code {
				case http.StatusUnauthorized:
					failed++
				case http.StatusTooManyRequests:
					refused++
					if w.Header().Get("Retry-After") == "" || errorCode(t, w) != "invalid_client" {
						t.Errorf("429 = %v %s, want invalid_client with Retry-After", w.Header(), w.Body)
					}
				default:
					t.Errorf("concurrent wrong secret = %d %s, want 401 or 429", w.Code, w.Body)
				}
			}
			if int64(failed) != hashed || failed+refused != n {
				t.Errorf("401s, 429s = %d, %d with %d hashed, want one 401 per hash and 429 for the rest", failed, refused, hashed)
			}
			for _, e := range envs {
				if w := e.tokenFrom(attacker, tConf, tSecret); w.Code != http.StatusTooManyRequests {
					t.Errorf("right secret from the blocked address = %d %s, want 429", w.Code, w.Body)
				}
			}
		})
	}
}

// TestConcurrentRightPasswordsPass: many sign-ins with the right
// password at once from one address (an office behind one NAT, one
// user's tabs) all succeed.
func TestConcurrentRightPasswordsPass(t *testing.T) {
	e := newBrowserEnv(t, nil)
	const from, n = "198.51.100.7:4000", 40
	attempts := make([]loginAttempt, n)
	for k := range attempts {
		attempts[k] = e.prepareLogin(t, from)
	}
	codes := make([]int, n)
	var wg sync.WaitGroup
	for k := range attempts {
		wg.Go(func() { codes[k] = e.submit(attempts[k], bUser, bPassword).Code })
	}
	wg.Wait()
	for k, c := range codes {
		if c != http.StatusSeeOther {
			t.Errorf("right password %d of %d at once = %d, want 303", k+1, n, c)
		}
	}
}
