//go:build !unix

package store

import "errors"

// walHeader and walIndex have no fast path here: the cache reads
// auth_version on every lookup.
type walHeader [12]uint32

type walIndex struct{}

func openWALIndex(string) (*walIndex, error) {
	return nil, errors.New("no wal-index mapping on this system")
}

func (*walIndex) read(*walHeader) bool { return false }

func (*walIndex) unmap() {}

func (*walIndex) closeFile() {}
