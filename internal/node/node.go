// Package node gives a Rally process its identity: an id created on first
// start and kept in the store, so the same data directory is the same node
// across restarts.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/rallyhq/rally/internal/store"
)

const (
	bucket = "node"
	idKey  = "id"
)

// ID returns this node's id, creating it on first use.
func ID(ctx context.Context, st store.Store) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id, _, err := st.PutIfAbsent(ctx, bucket, idKey, []byte(hex.EncodeToString(b[:])))
	if err != nil {
		return "", fmt.Errorf("node: id: %w", err)
	}
	return string(id), nil
}
