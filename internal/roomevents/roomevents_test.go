package roomevents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rallyhq/rally/internal/bus"
)

var quiet = slog.New(slog.DiscardHandler)

func openBus(t testing.TB, dir string) *bus.Bus {
	t.Helper()
	b, err := bus.Open(context.Background(), bus.Options{
		ListenAddr: "off", StoreDir: dir, ConnectTimeout: 10 * time.Second, Name: t.Name(), Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func closeBus(t testing.TB, b *bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// newBus opens a bus on a fresh directory, closed when the test ends.
func newBus(t testing.TB) *bus.Bus {
	b := openBus(t, t.TempDir())
	t.Cleanup(func() { closeBus(t, b) })
	return b
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func start(t testing.TB, js jetstream.JetStream, opts Options, log *slog.Logger) (*Publisher, *prometheus.Registry) {
	t.Helper()
	if log == nil {
		log = quiet
	}
	reg := prometheus.NewRegistry()
	p := New(js, opts, reg, log)
	if err := p.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p, reg
}

func closePub(t testing.TB, p *Publisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// metric sums the samples of one metric family (counter, gauge or histogram
// count) whose labels include want.
func metric(t testing.TB, reg *prometheus.Registry, name string, want ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(want); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == want[i] && lp.GetValue() == want[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func replayAll(t testing.TB, p *Publisher, roomID string) []Event {
	t.Helper()
	var got []Event
	if err := p.Replay(ctxT(t), roomID, func(ev Event) error {
		got = append(got, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func streamMsgs(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(ctxT(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

func mustPublish(t testing.TB, p *Publisher, ev Event) {
	t.Helper()
	if err := p.Publish(ev); err != nil {
		t.Fatal(err)
	}
}

func TestLifecycleReplayInOrder(t *testing.T) {
	b := newBus(t)
	p, reg := start(t, b.JetStream(), Options{}, nil)

	at := time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC)
	want := []Event{
		{Type: RoomCreated, RoomID: "r1", Data: json.RawMessage(`{"labels":{"mode":"duel"},"handler":"arena"}`)},
		{Type: PlayerJoined, RoomID: "r1", UserID: "u1", Username: "ada"},
		{Type: PlayerJoined, RoomID: "r1", UserID: "u2", Username: "bob"},
		{Type: PlayerDropped, RoomID: "r1", UserID: "u1", Username: "ada", Reason: "connection lost"},
		{Type: PlayerRejoined, RoomID: "r1", UserID: "u1", Username: "ada"},
		{Type: Custom, RoomID: "r1", Name: "goal", Data: json.RawMessage(`{"by":"u1","score":[1,0]}`)},
		{Type: PlayerLeft, RoomID: "r1", UserID: "u2", Username: "bob", Reason: "quit"},
		{Type: RoomClosed, RoomID: "r1", Reason: "empty"},
	}
	for i := range want {
		want[i].Seq = uint64(i + 1)
		want[i].At = at.Add(time.Duration(i) * time.Millisecond)
		// Another room's events interleave; they must not show up in r1.
		mustPublish(t, p, Event{Type: PlayerJoined, RoomID: "r2", UserID: fmt.Sprint("x", i), Seq: uint64(i + 1), At: at})
		if want[i].Type == Custom {
			want[i].At = time.Time{} // PublishCustom stamps the current time
			if err := p.PublishCustom(want[i].RoomID, want[i].Name, want[i].Seq, want[i].Data); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mustPublish(t, p, want[i])
	}
	closePub(t, p)

	got := replayAll(t, p, "r1")
	if len(got) != len(want) {
		t.Fatalf("replayed %d events, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.At.IsZero() {
			if time.Since(g.At) > time.Minute || g.At.Location() != time.UTC {
				t.Errorf("event %d stamped %s", i, g.At)
			}
			w.At = g.At
		}
		if !g.At.Equal(w.At) || g.Type != w.Type || g.RoomID != w.RoomID || g.Name != w.Name || g.UserID != w.UserID ||
			g.Username != w.Username || g.Reason != w.Reason || g.Seq != w.Seq || !jsonEqual(t, g.Data, w.Data) {
			t.Errorf("event %d = %+v\nwant %+v", i, g, w)
		}
	}
	if n := len(replayAll(t, p, "r2")); n != len(want) {
		t.Errorf("room r2 replayed %d events, want %d", n, len(want))
	}
	if n := len(replayAll(t, p, "nobody")); n != 0 {
		t.Errorf("unknown room replayed %d events", n)
	}

	// The stored form is plain JSON any NATS client can read.
	s, err := b.JetStream().Stream(ctxT(t), DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(ctxT(t), "rally.room.r1.custom.goal")
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw.Data, &fields); err != nil {
		t.Fatal(err)
	}
	if fields["type"] != "custom" || fields["name"] != "goal" || fields["room_id"] != "r1" {
		t.Errorf("stored JSON %s", raw.Data)
	}
	if ts, err := time.Parse(time.RFC3339Nano, fields["at"].(string)); err != nil || !ts.Equal(got[5].At) {
		t.Errorf("at %v: %v", fields["at"], err)
	}
	if _, ok := fields["user_id"]; ok {
		t.Errorf("empty optional fields are stored: %s", raw.Data)
	}

	if n := metric(t, reg, "rally_roomevents_published_total"); n != 16 {
		t.Errorf("published_total = %v, want 16", n)
	}
	if n := metric(t, reg, "rally_roomevents_published_total", "type", "player_joined"); n != 10 {
		t.Errorf("published_total{type=player_joined} = %v, want 10", n)
	}
	if n := metric(t, reg, "rally_roomevents_publish_seconds"); n != 16 {
		t.Errorf("publish_seconds count = %v, want 16", n)
	}
}

func jsonEqual(t testing.TB, a, b json.RawMessage) bool {
	t.Helper()
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(x) == fmt.Sprint(y)
}

func TestReplayStopsOnCallbackError(t *testing.T) {
	b := newBus(t)
	p, _ := start(t, b.JetStream(), Options{}, nil)
	for i := range 5 {
		mustPublish(t, p, Event{Type: PlayerJoined, RoomID: "r", Seq: uint64(i + 1)})
	}
	closePub(t, p)
	stop := errors.New("enough")
	calls := 0
	err := p.Replay(ctxT(t), "r", func(Event) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

// Many rooms publishing at once, spread over workers and batched: each
// room's events must still be stored in its own order.
func TestPerRoomOrderUnderConcurrency(t *testing.T) {
	b := newBus(t)
	p, reg := start(t, b.JetStream(), Options{}, nil)
	const rooms, perRoom = 16, 200
	var wg sync.WaitGroup
	for r := range rooms {
		wg.Go(func() {
			for i := range perRoom {
				ev := Event{Type: PlayerJoined, RoomID: fmt.Sprint("room", r), Seq: uint64(i + 1)}
				if err := p.Publish(ev); err != nil {
					t.Error(err) // 3,200 events fit the default queue
					return
				}
			}
		})
	}
	wg.Wait()
	closePub(t, p)
	for r := range rooms {
		got := replayAll(t, p, fmt.Sprint("room", r))
		if len(got) != perRoom {
			t.Fatalf("room%d: %d events, want %d", r, len(got), perRoom)
		}
		for i, ev := range got {
			if ev.Seq != uint64(i+1) {
				t.Fatalf("room%d: event %d has seq %d", r, i, ev.Seq)
			}
		}
	}
	if n := metric(t, reg, "rally_roomevents_published_total"); n != rooms*perRoom {
		t.Errorf("published_total = %v, want %d", n, rooms*perRoom)
	}
}

func TestDuplicateStoredOnce(t *testing.T) {
	b := newBus(t)
	p, reg := start(t, b.JetStream(), Options{}, nil)
	ev := Event{Type: PlayerLeft, RoomID: "r", UserID: "u", Seq: 7}
	mustPublish(t, p, ev)
	mustPublish(t, p, ev)
	closePub(t, p)
	if n := streamMsgs(t, b.JetStream(), DefaultStream); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	if n := metric(t, reg, "rally_roomevents_published_total"); n != 1 {
		t.Errorf("published_total = %v, want 1", n)
	}
}

// fullStream makes the server itself refuse publishes: the main stream holds
// at most max messages and discards new ones.
func fullStream(t testing.TB, js jetstream.JetStream, max int64) {
	t.Helper()
	if _, err := js.CreateStream(ctxT(t), jetstream.StreamConfig{
		Name: DefaultStream, Subjects: []string{SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		MaxMsgs: max, Discard: jetstream.DiscardNew,
	}); err != nil {
		t.Fatal(err)
	}
}

func TestRetriesThenDeadLetter(t *testing.T) {
	b := newBus(t)
	js := b.JetStream()
	fullStream(t, js, 2) // Start must keep this operator-set limit
	g := newGated(js)
	p, reg := start(t, g, Options{Retries: 2, RetryBackoff: time.Millisecond, Workers: 1}, nil)

	// r0 goes alone (synchronously) and is stored; while it is held the
	// other rooms queue up and then go as one asynchronous batch, of which
	// r1 is stored and the rest are refused, retried and dead-lettered.
	const rooms = 5
	mustPublish(t, p, Event{Type: PlayerJoined, RoomID: "r0", UserID: "u", Seq: 1})
	waitEntered(t, g)
	for i := 1; i < rooms; i++ {
		mustPublish(t, p, Event{Type: PlayerJoined, RoomID: fmt.Sprint("r", i), UserID: "u", Seq: 1})
	}
	close(g.gate)
	closePub(t, p)
	if got := replayAll(t, p, "r1"); len(got) != 1 {
		t.Errorf("r1 (first of the batch) stored %d times, want 1", len(got))
	}

	if n := streamMsgs(t, js, DefaultStream); n != 2 {
		t.Fatalf("main stream holds %d, want 2", n)
	}
	if n := streamMsgs(t, js, DefaultDeadLetter); n != rooms-2 {
		t.Fatalf("dead-letter stream holds %d, want %d", n, rooms-2)
	}
	if n := metric(t, reg, "rally_roomevents_retries_total"); n != 2*(rooms-2) {
		t.Errorf("retries_total = %v, want %d", n, 2*(rooms-2))
	}
	if n := metric(t, reg, "rally_roomevents_dead_lettered_total"); n != rooms-2 {
		t.Errorf("dead_lettered_total = %v, want %d", n, rooms-2)
	}
	if n := metric(t, reg, "rally_roomevents_lost_total"); n != 0 {
		t.Errorf("lost_total = %v", n)
	}

	dlq, err := js.Stream(ctxT(t), DefaultDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dlq.OrderedConsumer(ctxT(t), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(rooms-2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for m := range batch.Messages() {
		seen++
		orig := m.Headers().Get(HeaderSubject)
		if !strings.HasPrefix(m.Subject(), DeadLetterPrefix) || "rally.deadletter."+strings.TrimPrefix(orig, "rally.") != m.Subject() {
			t.Errorf("dead letter on %s for %s", m.Subject(), orig)
		}
		if reason := m.Headers().Get(HeaderReason); !strings.Contains(reason, "maximum messages") {
			t.Errorf("%s = %q", HeaderReason, reason)
		}
		var ev Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil || ev.Type != PlayerJoined || SubjectPrefix+ev.RoomID+".player_joined" != orig {
			t.Errorf("dead letter %s: %+v %v", m.Data(), ev, err)
		}
	}
	if seen != rooms-2 {
		t.Errorf("read %d dead letters (%v)", seen, batch.Error())
	}
}

// syncBuf is a log sink the test reads after the writers stopped.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLostWhenDeadLetterFails(t *testing.T) {
	b := newBus(t)
	js := b.JetStream()
	fullStream(t, js, 1)
	var logs syncBuf
	p, reg := start(t, js, Options{Retries: 1, RetryBackoff: time.Millisecond}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err := js.DeleteStream(ctxT(t), DefaultDeadLetter); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, p, Event{Type: RoomCreated, RoomID: "r", Seq: 1})
	mustPublish(t, p, Event{Type: RoomClosed, RoomID: "r", Seq: 2, Reason: "done"})
	closePub(t, p)
	if n := metric(t, reg, "rally_roomevents_lost_total"); n != 1 {
		t.Errorf("lost_total = %v, want 1", n)
	}
	if n := metric(t, reg, "rally_roomevents_dead_lettered_total"); n != 0 {
		t.Errorf("dead_lettered_total = %v, want 0", n)
	}
	if out := logs.String(); !strings.Contains(out, "room event lost") || !strings.Contains(out, `r-2-room_closed`) ||
		!strings.Contains(out, `\"reason\":\"done\"`) {
		t.Errorf("lost event not logged with the event:\n%s", out)
	}
}

// gatedJS holds every synchronous publish until gate is closed (or the
// publish's context ends), and reports each one on entered.
type gatedJS struct {
	jetstream.JetStream
	gate    chan struct{}
	entered chan string
}

func newGated(js jetstream.JetStream) *gatedJS {
	return &gatedJS{JetStream: js, gate: make(chan struct{}), entered: make(chan string, 64)}
}

func (g *gatedJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	select {
	case g.entered <- m.Subject:
	default:
	}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.JetStream.PublishMsg(ctx, m, opts...)
}

func waitEntered(t testing.TB, g *gatedJS) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("worker never published")
	}
}

// A full queue never makes Publish wait: the event goes to the dead-letter
// stream with its reason, and the room's stored events stay in order.
func TestQueueFullGoesToDeadLetters(t *testing.T) {
	b := newBus(t)
	g := newGated(b.JetStream())
	p, reg := start(t, g, Options{QueueSize: 1, Workers: 1}, nil)

	mustPublish(t, p, Event{Type: RoomCreated, RoomID: "r", Seq: 1})
	waitEntered(t, g) // the worker holds event 1; the queue is empty
	mustPublish(t, p, Event{Type: PlayerJoined, RoomID: "r", Seq: 2})
	if d := metric(t, reg, "rally_roomevents_queue_depth"); d != 1 {
		t.Errorf("queue_depth = %v, want 1", d)
	}
	// The worker is stuck on NATS; Publish still returns at once.
	if err := p.Publish(Event{Type: PlayerJoined, RoomID: "r", Seq: 3}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want ErrQueueFull", err)
	}
	if n := metric(t, reg, "rally_roomevents_queue_full_total"); n != 1 {
		t.Errorf("queue_full_total = %v, want 1", n)
	}

	close(g.gate)
	closePub(t, p)
	got := replayAll(t, p, "r")
	if len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 2 {
		t.Errorf("stored %+v, want seqs 1 and 2", got)
	}
	if n := metric(t, reg, "rally_roomevents_dead_lettered_total"); n != 1 {
		t.Errorf("dead_lettered_total = %v, want 1", n)
	}
	if n := metric(t, reg, "rally_roomevents_lost_total"); n != 0 {
		t.Errorf("lost_total = %v, want 0", n)
	}
	dlq, err := b.JetStream().Stream(ctxT(t), DefaultDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dlq.GetLastMsgForSubject(ctxT(t), DeadLetterPrefix+">")
	if err != nil {
		t.Fatal(err)
	}
	var ev Event
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Seq != 3 || m.Header.Get(HeaderReason) != "publish queue full" {
		t.Fatalf("dead letter %s (%v): reason %q", m.Data, err, m.Header.Get(HeaderReason))
	}
}

func TestCloseFlushesQueue(t *testing.T) {
	b := newBus(t)
	g := newGated(b.JetStream())
	p, reg := start(t, g, Options{Workers: 1}, nil)

	const n = 50
	mustPublish(t, p, Event{Type: PlayerJoined, RoomID: "r", Seq: 1})
	waitEntered(t, g)
	for i := 2; i <= n; i++ {
		mustPublish(t, p, Event{Type: PlayerJoined, RoomID: "r", Seq: uint64(i)})
	}
	if d := metric(t, reg, "rally_roomevents_queue_depth"); d != n-1 {
		t.Fatalf("queue_depth = %v, want %d", d, n-1)
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close(ctxT(t)) }()
	close(g.gate)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := p.Publish(Event{Type: PlayerLeft, RoomID: "r", Seq: n + 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	got := replayAll(t, p, "r")
	if len(got) != n {
		t.Fatalf("stored %d events, want %d", len(got), n)
	}
	for i, ev := range got {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
	if d := metric(t, reg, "rally_roomevents_queue_depth"); d != 0 {
		t.Errorf("queue_depth = %v after Close", d)
	}
}

func TestCloseBoundedByContext(t *testing.T) {
	b := newBus(t)
	g := newGated(b.JetStream()) // never opened: the server is unreachable
	p, reg := start(t, g, Options{Workers: 1}, nil)
	const n = 10
	mustPublish(t, p, Event{Type: PlayerJoined, RoomID: "r", Seq: 1})
	waitEntered(t, g)
	for i := 2; i <= n; i++ {
		mustPublish(t, p, Event{Type: PlayerJoined, RoomID: "r", Seq: uint64(i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err := p.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want deadline exceeded", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Close took %s past its deadline", took)
	}
	if l := metric(t, reg, "rally_roomevents_lost_total"); l != n {
		t.Errorf("lost_total = %v, want %d", l, n)
	}
}

func TestLifecycleErrors(t *testing.T) {
	b := newBus(t)
	p := New(b.JetStream(), Options{}, nil, quiet)
	if err := p.Publish(Event{Type: RoomCreated, RoomID: "r"}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Publish before Start = %v", err)
	}
	if err := p.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctxT(t)); err == nil {
		t.Error("second Start succeeded")
	}
	closePub(t, p)
	closePub(t, p) // idempotent
	if err := p.Publish(Event{Type: RoomCreated, RoomID: "r"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v", err)
	}
}

func TestRejectsBadInput(t *testing.T) {
	b := newBus(t)
	p, _ := start(t, b.JetStream(), Options{}, nil)
	for _, id := range []string{"", "a.b", "a b", "a*", "a>", ">", "tab\there", "nl\n", strings.Repeat("x", 129)} {
		err := p.Publish(Event{Type: RoomCreated, RoomID: id})
		if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "room id") {
			t.Errorf("room id %q: %v", id, err)
		}
		if err := p.Replay(ctxT(t), id, func(Event) error { return nil }); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("Replay room id %q: %v", id, err)
		}
	}
	for _, name := range []string{"", "a.b", "a b", "*", "x>"} {
		err := p.PublishCustom("r", name, 1, []byte(`{}`))
		if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "custom event name") {
			t.Errorf("custom name %q: %v", name, err)
		}
	}
	if err := p.PublishCustom("r", "score", 1, []byte("not json")); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("custom non-JSON data: %v", err)
	}
	if err := p.Publish(Event{Type: "exploded", RoomID: "r"}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("unknown type: %v", err)
	}
	if err := p.Publish(Event{Type: PlayerJoined, RoomID: "r", Name: "x"}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("name on a non-custom event: %v", err)
	}
	if err := p.PublishCustom("room-7_é", "score", 1, nil); err != nil {
		t.Errorf("good custom event rejected: %v", err)
	}
	if err := p.PublishCustom("r", "score", 2, []byte(`"a string"`)); err != nil {
		t.Errorf("JSON string data rejected: %v", err)
	}
}

func TestStreamConfig(t *testing.T) {
	b := newBus(t)
	js := b.JetStream()
	start(t, js, Options{MaxAge: time.Minute}, nil)
	s, err := js.Stream(ctxT(t), DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Subjects[0] != "rally.room.>" || cfg.Storage != jetstream.FileStorage || cfg.MaxAge != time.Minute ||
		cfg.Duplicates != time.Minute {
		t.Errorf("main stream %+v", cfg)
	}
	d, err := js.Stream(ctxT(t), DefaultDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := d.CachedInfo().Config; cfg.Subjects[0] != "rally.deadletter.room.>" || cfg.Storage != jetstream.FileStorage {
		t.Errorf("dead-letter stream %+v", cfg)
	}

	// Restarting with the configured retention restores the two-minute
	// duplicate window.
	start(t, js, Options{MaxAge: time.Hour}, nil)
	s, err = js.Stream(ctxT(t), DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; cfg.MaxAge != time.Hour || cfg.Duplicates != 2*time.Minute {
		t.Errorf("updated main stream %+v", cfg)
	}
}

func TestEventsSurviveBusRestart(t *testing.T) {
	dir := t.TempDir()
	b := openBus(t, dir)
	p, _ := start(t, b.JetStream(), Options{}, nil)
	evs := []Event{
		{Type: RoomCreated, RoomID: "r", Seq: 1},
		{Type: PlayerJoined, RoomID: "r", UserID: "u", Seq: 2},
		{Type: RoomClosed, RoomID: "r", Seq: 3},
	}
	for _, ev := range evs {
		mustPublish(t, p, ev)
	}
	closePub(t, p)
	closeBus(t, b)

	b = openBus(t, dir)
	defer closeBus(t, b)
	p, reg := start(t, b.JetStream(), Options{}, nil)
	got := replayAll(t, p, "r")
	if len(got) != len(evs) {
		t.Fatalf("after restart %d events, want %d", len(got), len(evs))
	}
	for i := range evs {
		if got[i].Type != evs[i].Type || got[i].Seq != evs[i].Seq {
			t.Errorf("event %d = %+v", i, got[i])
		}
	}
	// A process that restarts and sends its last event again stores it once.
	mustPublish(t, p, evs[2])
	closePub(t, p)
	if n := len(replayAll(t, p, "r")); n != len(evs) {
		t.Errorf("after re-publishing, %d events, want %d", n, len(evs))
	}
	if n := metric(t, reg, "rally_roomevents_published_total"); n != 0 {
		t.Errorf("duplicate counted as published: %v", n)
	}
}

// BenchmarkPublish measures end-to-end throughput: Publish until every event
// is acknowledged by the embedded JetStream (file storage, no fsync).
func BenchmarkPublish(b *testing.B) {
	for _, rooms := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("rooms=%d", rooms), func(b *testing.B) {
			bs := openBus(b, b.TempDir())
			defer closeBus(b, bs)
			p := New(bs.JetStream(), Options{}, prometheus.NewRegistry(), quiet)
			if err := p.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			ids := make([]string, rooms)
			for i := range ids {
				ids[i] = fmt.Sprint("room", i)
			}
			at := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			begin := time.Now()
			for i := range b.N {
				ev := Event{Type: PlayerJoined, RoomID: ids[i%rooms], UserID: "u", Seq: uint64(i/rooms + 1), At: at}
				if err := p.PublishWait(context.Background(), ev); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "events/s")
		})
	}
}
