//go:build !race

package server_test

// relRace scales the heaviest reliability tests down under the race
// detector, which makes byte-at-a-time work 10-50 times slower.
const relRace = false
