//go:build unix && !e2elong

package e2e_test

import "time"

// longRun is false: scale is the bounded CI subset.
const longRun = false

// scale is the bounded CI subset: the same checks as the full run, with
// smaller counts and shorter durations (smaller still under -race, see
// raceScale). Build with -tags e2elong for the full figures of
// RELIABILITY.md.
var scale = scaleConfig{
	db1ServerKills: 20,
	db1CLIKills:    20,
	db1MaxUsers:    500,
	db2Loops:       8,
	db2Ops:         25,
	db2Rate:        200,
	db3Hold:        8 * time.Second,
	db3Requests:    100,
	db6Users:       100_000,
	db8Duration:    20 * time.Second,
	db8Rate:        300,
	db8ReaderHold:  8 * time.Second,
	db8ReaderEvery: 12 * time.Second,
}
