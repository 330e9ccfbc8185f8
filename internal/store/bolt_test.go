package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openTemp(t *testing.T) (*Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "rally.db")
	b, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	return b, path
}

func TestBoltCRUD(t *testing.T) {
	ctx := context.Background()
	b, _ := openTemp(t)
	defer b.Close()

	if _, err := b.Get(ctx, "accounts", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get on missing bucket: %v", err)
	}
	if err := b.Put(ctx, "accounts", "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "accounts", "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get on missing key: %v", err)
	}
	v, err := b.Get(ctx, "accounts", "a")
	if err != nil || string(v) != "1" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	v[0] = 'X' // the caller owns the copy
	if v, _ := b.Get(ctx, "accounts", "a"); string(v) != "1" {
		t.Fatalf("returned slice aliases the store: %q", v)
	}
	if err := b.Delete(ctx, "accounts", "a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "nobucket", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "accounts", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBoltScanPrefixInOrder(t *testing.T) {
	ctx := context.Background()
	b, _ := openTemp(t)
	defer b.Close()
	for _, k := range []string{"u/3", "u/1", "v/1", "u/2", "t/9"} {
		if err := b.Put(ctx, "b", k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	err := b.Scan(ctx, "b", "u/", func(k string, v []byte) error {
		if k != string(v) {
			return fmt.Errorf("value %q under %q", v, k)
		}
		got = append(got, k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "u/1,u/2,u/3" {
		t.Fatalf("Scan = %v", got)
	}
	stop := errors.New("stop")
	n := 0
	if err := b.Scan(ctx, "b", "", func(string, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Scan did not stop on error: n=%d err=%v", n, err)
	}
}

// Concurrent PutIfAbsent calls agree on one winner.
func TestBoltPutIfAbsentHasOneWinner(t *testing.T) {
	ctx := context.Background()
	b, _ := openTemp(t)
	defer b.Close()
	const n = 16
	var wg sync.WaitGroup
	created := make([]bool, n)
	stored := make([]string, n)
	for i := range n {
		wg.Go(func() {
			v, c, err := b.PutIfAbsent(ctx, "node", "id", []byte(fmt.Sprint(i)))
			if err != nil {
				t.Error(err)
			}
			created[i], stored[i] = c, string(v)
		})
	}
	wg.Wait()
	winners := 0
	for i := range n {
		if created[i] {
			winners++
		}
		if stored[i] != stored[0] {
			t.Fatalf("callers disagree: %q vs %q", stored[i], stored[0])
		}
	}
	if winners != 1 {
		t.Fatalf("%d callers created the key", winners)
	}
}

func TestBoltPutMany(t *testing.T) {
	ctx := context.Background()
	b, _ := openTemp(t)
	defer b.Close()
	if err := b.PutMany(ctx, "m", map[string][]byte{"a": []byte("1"), "b": []byte("2")}); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"a": "1", "b": "2"} {
		if v, err := b.Get(ctx, "m", k); err != nil || string(v) != want {
			t.Fatalf("%s = %q, %v", k, v, err)
		}
	}
}

func TestBoltSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	b, path := openTemp(t)
	if err := b.Put(ctx, "b", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if v, err := b.Get(ctx, "b", "k"); err != nil || string(v) != "v" {
		t.Fatalf("after reopen: %q, %v", v, err)
	}
}
