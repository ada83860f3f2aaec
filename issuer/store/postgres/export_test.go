package postgres

// MigrateLock is migrateLock, for tests that hold it as another instance.
const MigrateLock = migrateLock
