package postgres

// MigrateLock is migrateLock, for tests that hold it as another instance.
const MigrateLock = migrateLock

// MaxBackoff, MinListenBackoff and MaxListenBackoff are the retry and
// reconnect backoffs, for tests that check them against README.
const (
	MaxBackoff       = maxBackoff
	MinListenBackoff = minListenBackoff
	MaxListenBackoff = maxListenBackoff
)
