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

	db3Hold     time.Duration // DB-3: how long another process holds the write lock
	db3Requests int           // DB-3: proxied requests during the hold

	db6Users int // DB-6: users in the big database

	db8Duration    time.Duration // DB-8: how long usage is written
	db8Rate        int           // DB-8: proxied requests per second
	db8ReaderHold  time.Duration // DB-8: how long the reader holds its transaction
	db8ReaderEvery time.Duration // DB-8: one reader hold starts this often
}
