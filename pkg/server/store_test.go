package server_test

import (
	"context"

	"github.com/aiproxy/aiproxy/pkg/store"
)

func storeOpen(path string) (*store.DB, error) { return store.Open(context.Background(), path) }
