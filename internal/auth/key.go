package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/rallyhq/rally/internal/store"
)

const (
	keyBucket = "auth"
	keyName   = "signing_key"
	keyBytes  = 32
)

// ResolveKey returns the token signing key: the configured one if set,
// otherwise a random key created on first call and kept in st, so tokens
// stay valid across restarts of a node that has no key configured.
func ResolveKey(ctx context.Context, st store.Store, configured string) ([]byte, error) {
	if configured != "" {
		return []byte(configured), nil
	}
	fresh := make([]byte, keyBytes)
	_, _ = rand.Read(fresh) // crypto/rand never fails; it crashes instead
	// PutIfAbsent: two processes starting on one store agree on one key.
	key, _, err := st.PutIfAbsent(ctx, keyBucket, keyName, fresh)
	if err != nil {
		return nil, fmt.Errorf("auth: signing key: %w", err)
	}
	if len(key) == 0 {
		return nil, errors.New("auth: signing key in the store is empty")
	}
	return key, nil
}
