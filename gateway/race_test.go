//go:build race

package gateway

// raceEnabled: the race detector drops sync.Pool items at random, so
// allocation counts of pooled paths hold only without it.
const raceEnabled = true
