//go:build race

package store_test

// raceDivisor: the race detector slows SQLite (pure Go) about tenfold, so
// the longest randomised comparisons run a raceDivisor-th of their usual
// size under it.
const raceDivisor = 8
