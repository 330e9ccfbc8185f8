// Package store keeps what must survive a restart: small records in named
// buckets, behind an interface that an embedded file or a network database
// can implement.
package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Get when a key has no value.
var ErrNotFound = errors.New("store: not found")

// Store is a durable key-value store with named buckets. A write that
// returned nil survives a crash of the process.
type Store interface {
	// Get returns a copy of the value of key in bucket, or ErrNotFound.
	Get(ctx context.Context, bucket, key string) ([]byte, error)
	// Put sets key in bucket to value, creating the bucket if needed.
	Put(ctx context.Context, bucket, key string, value []byte) error
	// PutIfAbsent sets key only when it has no value yet and reports whether
	// it did; the value stored afterwards is returned either way.
	PutIfAbsent(ctx context.Context, bucket, key string, value []byte) (stored []byte, created bool, err error)
	// PutMany sets several keys of a bucket in one durable write.
	PutMany(ctx context.Context, bucket string, kvs map[string][]byte) error
	// Delete removes key from bucket; a missing key is not an error.
	Delete(ctx context.Context, bucket, key string) error
	// Scan calls fn for each key in bucket starting with prefix, in key order,
	// until fn returns an error. The slices are valid only during the call.
	Scan(ctx context.Context, bucket, prefix string, fn func(key string, value []byte) error) error
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}
