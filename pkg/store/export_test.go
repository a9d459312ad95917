package store

// OpenWithBusyTimeout is Open with a short busy timeout, for the tests of a
// held write lock.
var OpenWithBusyTimeout = open

// Listening reports whether d's listener is connected (pg_listen.go), for
// the benchmarks that measure lookups served from memory.
func Listening(d *DB) bool { return d.cache.live.Load() }
