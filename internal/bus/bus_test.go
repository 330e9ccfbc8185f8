package bus

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func open(t *testing.T, opts Options) *Bus {
	t.Helper()
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	opts.Name = t.Name()
	b, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func closeBus(t *testing.T, b *Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func publishN(t *testing.T, js jetstream.JetStream, stream, subject string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{subject}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ack, err := js.Publish(ctx, subject, fmt.Appendf(nil, "m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Sequence != uint64(i+1) {
			t.Fatalf("seq %d for message %d", ack.Sequence, i)
		}
	}
}

// consumeN reads the first n messages of stream in order.
func consumeN(t *testing.T, js jetstream.JetStream, stream string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		if want := fmt.Sprintf("m%d", i); string(m.Data()) != want {
			t.Fatalf("message %d = %q, want %q", i, m.Data(), want)
		}
		i++
	}
	if i != n {
		t.Fatalf("consumed %d of %d (err %v)", i, n, batch.Error())
	}
}

func TestEmbeddedInProcessOnly(t *testing.T) {
	dir := t.TempDir()
	b := open(t, Options{ListenAddr: "off", StoreDir: dir})
	if !b.Embedded() || b.ListenAddr() != "" {
		t.Fatalf("embedded=%v listen=%q", b.Embedded(), b.ListenAddr())
	}
	publishN(t, b.JetStream(), "EVENTS", "ev.>", 50)
	consumeN(t, b.JetStream(), "EVENTS", 50)
	closeBus(t, b)

	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("JetStream did not store under the data dir: %v", err)
	}
	// The same directory after a restart still holds every message.
	b = open(t, Options{ListenAddr: "off", StoreDir: dir})
	defer closeBus(t, b)
	consumeN(t, b.JetStream(), "EVENTS", 50)
}

// A second Bus pointed at the first one's listener by URL takes the external
// path: same API, no embedded server, same stream.
func TestExternalURLReachesTheSameJetStream(t *testing.T) {
	a := open(t, Options{ListenAddr: "127.0.0.1:0", StoreDir: t.TempDir()})
	defer closeBus(t, a)
	if a.ListenAddr() == "" {
		t.Fatal("no listen address")
	}
	ext := open(t, Options{URL: "nats://" + a.ListenAddr()})
	defer closeBus(t, ext)
	if ext.Embedded() {
		t.Fatal("external bus started a server")
	}
	publishN(t, ext.JetStream(), "SHARED", "shared.>", 10)
	consumeN(t, a.JetStream(), "SHARED", 10)
	if err := ext.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestUnreachableExternalFailsFast(t *testing.T) {
	start := time.Now()
	_, err := Open(context.Background(), Options{URL: "nats://127.0.0.1:1", ConnectTimeout: 2 * time.Second})
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %s to fail", time.Since(start))
	}
}

func TestBusyPortIsAClearError(t *testing.T) {
	a := open(t, Options{ListenAddr: "127.0.0.1:0", StoreDir: t.TempDir()})
	defer closeBus(t, a)
	_, err := Open(context.Background(), Options{ListenAddr: a.ListenAddr(), StoreDir: t.TempDir(), ConnectTimeout: 2 * time.Second})
	if err == nil {
		t.Fatal("two embedded servers on one port")
	}
	t.Log(err)
}
