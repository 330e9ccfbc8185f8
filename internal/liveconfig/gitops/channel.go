// Package gitops converges every node of a cluster on the tip of a Git
// branch. A node that fetches a new commit validates the whole of it and,
// if it is sound, publishes it (commit id and files) to a JetStream
// key-value bucket; every node follows that bucket and swaps in what it
// holds. A bad commit is never published, so no node ever runs it, and
// nodes that never reach Git themselves still converge.
package gitops

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rallyhq/rally/internal/liveconfig"
)

// key is the one key of the bucket: its history is the cluster's history
// of published versions.
const key = "current"

// Published is a version as published to the cluster.
type Published struct {
	Version     string           `json:"version"`
	Files       liveconfig.Files `json:"files"`
	PublishedAt time.Time        `json:"published_at"`
	// Node published it; Message is the commit message.
	Node    string `json:"node"`
	Message string `json:"message,omitempty"`
}

// Channel is the key-value bucket versions are published through.
type Channel struct {
	kv jetstream.KeyValue
}

// OpenChannel creates the bucket if needed. It keeps the last 64 versions.
func OpenChannel(ctx context.Context, js jetstream.JetStream, bucket string) (*Channel, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, History: 64, Storage: jetstream.FileStorage,
		Description: "Rally live config: the accepted version every node runs",
	})
	if err != nil {
		return nil, fmt.Errorf("liveconfig: bucket %s: %w", bucket, err)
	}
	return &Channel{kv: kv}, nil
}

// Current returns the published version and its revision (0 and nil when
// nothing was published yet).
func (c *Channel) Current(ctx context.Context) (*Published, uint64, error) {
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("liveconfig: read published version: %w", err)
	}
	p, err := decode(e.Value())
	if err != nil {
		return nil, e.Revision(), err
	}
	return p, e.Revision(), nil
}

// ErrConflict means another node published first.
var ErrConflict = errors.New("liveconfig: another version was published meanwhile")

// Publish replaces the version at revision (0: none yet) with p; if
// someone published in between it returns ErrConflict.
func (c *Channel) Publish(ctx context.Context, p *Published, revision uint64) error {
	b, err := encode(p)
	if err != nil {
		return err
	}
	if revision == 0 {
		_, err = c.kv.Create(ctx, key, b)
	} else {
		_, err = c.kv.Update(ctx, key, b, revision)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("liveconfig: publish %s: %w", p.Version, err)
	}
	return nil
}

// Entry is one published version, without its files.
type Entry struct {
	Version     string    `json:"version"`
	PublishedAt time.Time `json:"published_at"`
	Node        string    `json:"node"`
	Message     string    `json:"message,omitempty"`
	Revision    uint64    `json:"revision"`
}

// History returns the versions the bucket still holds, oldest first.
func (c *Channel) History(ctx context.Context) ([]Entry, error) {
	entries, err := c.kv.History(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(entries))
	for _, e := range entries {
		p, err := decode(e.Value())
		if err != nil {
			continue
		}
		out = append(out, Entry{Version: p.Version, PublishedAt: p.PublishedAt, Node: p.Node, Message: p.Message, Revision: e.Revision()})
	}
	return out, nil
}

// Follow applies every published version to target: the current one
// before it returns (so a starting node serves the cluster's version at
// once), the later ones as they come, until ctx ends. Each is validated
// again on the way in.
func (c *Channel) Follow(ctx context.Context, target Target) (stop func(), err error) {
	w, err := c.kv.Watch(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("liveconfig: watch published versions: %w", err)
	}
	apply := func(e jetstream.KeyValueEntry) {
		if e.Operation() != jetstream.KeyValuePut {
			return
		}
		p, err := decode(e.Value())
		if err != nil {
			target.Rejected(Source, fmt.Sprintf("revision %d", e.Revision()), err)
			return
		}
		// Offer logs and counts a refusal.
		_, _ = target.Offer(ctx, p.Files, liveconfig.Options{Version: p.Version, Source: Source}, p.PublishedAt)
	}
	// The watcher sends the current entry, then nil, then updates.
initial:
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("liveconfig: watch of published versions closed")
			}
			if e == nil {
				break initial
			}
			apply(e)
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e != nil {
				apply(e)
			}
		}
	}()
	return func() { _ = w.Stop(); <-done }, nil
}

// Values are gzipped JSON: configurations compress well, and a value must
// fit in one NATS message (1 MB by default).
func encode(p *Published) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(p); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decode(b []byte) (*Published, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("liveconfig: published version: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("liveconfig: published version: %w", err)
	}
	var p Published
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("liveconfig: published version: %w", err)
	}
	return &p, nil
}
