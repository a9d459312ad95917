//go:build unix

package e2e_test

import "time"

// scaleConfig sizes the long-running tests; scale holds the values of this
// build (scale_test.go, or scale_long_test.go with -tags e2elong).
type scaleConfig struct {
	db1ServerKills int // DB-1: kill -9 of serve
	db1CLIKills    int // DB-1: kill -9 of a CLI writer mid-command
	db1MaxUsers    int // DB-1: bound of the user-creation loop

	db2Loops int // DB-2: parallel CLI loops
	db2Ops   int // DB-2: create/delete operations per loop
	db2Rate  int // DB-2: proxied requests per second meanwhile

	db3Hold     time.Duration // DB-3: how long, at least, another process holds the write lock
	db3Requests int           // DB-3: proxied requests during the hold

	db6Users int // DB-6: users in the big database

	db8Duration    time.Duration // DB-8: how long usage is written
	db8Rate        int           // DB-8: proxied requests per second
	db8ReaderHold  time.Duration // DB-8: how long the reader holds its transaction
	db8ReaderEvery time.Duration // DB-8: one reader hold starts this often
}

// raceScale replaces the default scale under -race, where the race-built
// binary and this test process (SQLite included) run several times slower:
// `go test -race ./...` then runs every check, at smaller counts: the
// package takes about half a minute on two cores. The default counts run without -race
// (`go test ./pkg/e2e`), the full ones with -tags e2elong.
var raceScale = scaleConfig{
	db1ServerKills: 6,
	db1CLIKills:    6,
	db1MaxUsers:    200,
	db2Loops:       4,
	db2Ops:         12,
	db2Rate:        100,
	db3Hold:        0, // as long as the checks under the lock take (about the busy timeout)
	db3Requests:    100,
	db6Users:       10_000,
	db8Duration:    6 * time.Second,
	db8Rate:        200,
	db8ReaderHold:  4 * time.Second,
	db8ReaderEvery: 6 * time.Second,
}

func init() {
	if raceEnabled && !longRun {
		scale = raceScale
	}
}
