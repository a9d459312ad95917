//go:build unix && e2elong

package e2e_test

import "time"

// longRun is true: scale is the full run, also under -race.
const longRun = true

// scale is the full run (-tags e2elong): the figures of RELIABILITY.md.
var scale = scaleConfig{
	db1ServerKills: 20,
	db1CLIKills:    20,
	db1MaxUsers:    500,
	db2Loops:       8,
	db2Ops:         100,
	db2Rate:        200,
	db3Hold:        30 * time.Second,
	db3Requests:    100,
	db6Users:       1_000_000,
	db8Duration:    10 * time.Minute,
	db8Rate:        200,
	db8ReaderHold:  60 * time.Second,
	db8ReaderEvery: 90 * time.Second,
}
