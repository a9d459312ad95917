package store

import "context"

type secretSource struct{}

func (d *DB) openSecret(context.Context, secretSource) error { return nil }
