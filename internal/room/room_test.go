package room

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
)

// recorder is a Conn that keeps what a room sends it. The end-to-end tests
// in internal/server run the same paths over real sockets; these pin the
// room's own rules.
type recorder struct {
	mu     sync.Mutex
	envs   []*rtv1.Envelope
	kicked *rtv1.Error
	got    chan struct{}
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 1024)} }

func (r *recorder) Send(f *Frame) bool {
	var env rtv1.Envelope
	err := proto.Unmarshal(f.B, &env)
	f.Release()
	if err != nil {
		panic(err)
	}
	r.mu.Lock()
	r.envs = append(r.envs, &env)
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
	return true
}

func (r *recorder) Kick(code rtv1.Error_Code, msg string) {
	r.mu.Lock()
	r.kicked = &rtv1.Error{Code: code, Message: msg}
	r.mu.Unlock()
}

// waitFor blocks until an envelope matching fn arrived.
func (r *recorder) waitFor(t *testing.T, what string, fn func(*rtv1.Envelope) bool) *rtv1.Envelope {
	t.Helper()
	deadline := time.After(5 * time.Second)
	seen := 0
	for {
		r.mu.Lock()
		for ; seen < len(r.envs); seen++ {
			if fn(r.envs[seen]) {
				env := r.envs[seen]
				r.mu.Unlock()
				return env
			}
		}
		r.mu.Unlock()
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("no %s", what)
		}
	}
}

func newTestManager(cfg Config) (*Manager, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	if cfg.MaxPlayers == 0 {
		cfg.MaxPlayers = 8
	}
	if cfg.DefaultTickRate == 0 {
		cfg.DefaultTickRate = 20
	}
	if cfg.InputQueue == 0 {
		cfg.InputQueue = 4
	}
	if cfg.InputOverflow == "" {
		cfg.InputOverflow = OverflowDropOldest
	}
	if cfg.EmptyTimeout == 0 {
		cfg.EmptyTimeout = time.Minute
	}
	return NewManager(cfg, NewRegistry(), nil, reg, slog.New(slog.NewTextHandler(io.Discard, nil))), reg
}

func TestInputQueuePolicies(t *testing.T) {
	for _, tc := range []struct {
		policy Overflow
		want   []uint32 // ops left in the queue after pushing 1..6 into 4 slots
	}{
		{OverflowDropOldest, []uint32{3, 4, 5, 6}},
		{OverflowDropNewest, []uint32{1, 2, 3, 4}},
		{OverflowDisconnect, []uint32{1, 2, 3, 4}},
	} {
		q := newInputQueue(4)
		accepted := 0
		for op := uint32(1); op <= 6; op++ {
			if q.push(op, []byte{byte(op)}, tc.policy) {
				accepted++
			}
		}
		if accepted != 4 {
			t.Errorf("%s: %d accepted, want 4 (2 dropped)", tc.policy, accepted)
		}
		got := q.drain(nil, "u")
		if len(got) != len(tc.want) {
			t.Fatalf("%s: drained %d", tc.policy, len(got))
		}
		for i, in := range got {
			if in.Op != tc.want[i] || in.Payload[0] != byte(tc.want[i]) {
				t.Errorf("%s: slot %d = op %d payload %v, want %d", tc.policy, i, in.Op, in.Payload, tc.want[i])
			}
		}
		// Inputs arriving while the tick holds the drained slots go to the
		// other set and do not overwrite them.
		q.push(9, []byte{9}, tc.policy)
		if got[0].Payload[0] != byte(tc.want[0]) {
			t.Errorf("%s: lent slot overwritten", tc.policy)
		}
		if next := q.drain(nil, "u"); len(next) != 1 || next[0].Op != 9 {
			t.Errorf("%s: after release %v", tc.policy, next)
		}
	}
}

// A full input queue applies the policy and counts every drop; with
// "disconnect" the player is cut off.
func TestInputOverflowIsCountedAndDisconnects(t *testing.T) {
	m, reg := newTestManager(Config{InputQueue: 2, InputOverflow: OverflowDisconnect, DefaultTickRate: 1})
	c := newRecorder()
	ctx := context.Background()
	j, err := m.Create(ctx, Player{UserID: "u1"}, c, &rtv1.CreateRoom{Handler: ArenaHandler, TickRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := m.Get([]byte(j.GetRoom().GetId()))
	for range 5 {
		if err := r.Input("u1", ArenaOpMove, EncodeArenaMove(nil, 1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(m.metrics.inputsDropped.WithLabelValues("disconnect")); got < 1 {
		t.Fatalf("dropped inputs counted: %v", got)
	}
	c.mu.Lock()
	kicked := c.kicked
	c.mu.Unlock()
	if kicked == nil || kicked.Code != rtv1.Error_CODE_RATE_LIMITED {
		t.Fatalf("not disconnected: %v", kicked)
	}
	if n, _ := testutil.GatherAndCount(reg, "rally_room_inputs_dropped_total"); n == 0 {
		t.Fatal("metric not registered")
	}
	_ = m.Close(ctx)
}

// A dropped player's seat is held; when the hold expires the leave is
// processed and the empty room closes after its empty timeout.
func TestHoldExpiryAndEmptyClose(t *testing.T) {
	m, _ := newTestManager(Config{ReconnectHold: 50 * time.Millisecond, EmptyTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	a, b := newRecorder(), newRecorder()
	j, err := m.Create(ctx, Player{UserID: "a"}, a, &rtv1.CreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	id := j.GetRoom().GetId()
	if _, err := m.Join(ctx, Player{UserID: "b"}, b, &rtv1.JoinRoom{RoomId: id}); err != nil {
		t.Fatal(err)
	}
	m.Disconnected(Player{UserID: "b"}, b)
	a.waitFor(t, "dropped presence", func(e *rtv1.Envelope) bool { return len(e.GetPresence().GetDropped()) == 1 })
	a.waitFor(t, "leave after the hold", func(e *rtv1.Envelope) bool {
		l := e.GetPresence().GetLeaves()
		return len(l) == 1 && l[0].UserId == "b"
	})
	if err := m.Leave(ctx, Player{UserID: "a"}, id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Get([]byte(id)) != nil {
		if time.Now().After(deadline) {
			t.Fatal("empty room not closed")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// A reconnect within the hold keeps the seat: no leave, and the next frame
// is a full snapshot.
func TestResumeWithinHold(t *testing.T) {
	m, _ := newTestManager(Config{ReconnectHold: time.Minute})
	ctx := context.Background()
	a := newRecorder()
	j, err := m.Create(ctx, Player{UserID: "a"}, a, &rtv1.CreateRoom{Handler: ArenaHandler, TickRate: 50})
	if err != nil {
		t.Fatal(err)
	}
	id := j.GetRoom().GetId()
	first := a.waitFor(t, "state frame", func(e *rtv1.Envelope) bool { return e.GetStateFrame() != nil })
	m.Get([]byte(id)).Ack("a", first.GetStateFrame().GetTick())
	a.waitFor(t, "a delta", func(e *rtv1.Envelope) bool { return e.GetStateFrame().GetBaseTick() != 0 })

	m.Disconnected(Player{UserID: "a"}, a)
	a2 := newRecorder()
	resumed := m.Resume(Player{UserID: "a"}, a2)
	if len(resumed) != 1 || resumed[0].GetRoom().GetId() != id {
		t.Fatalf("resume: %v", resumed)
	}
	f := a2.waitFor(t, "snapshot after resume", func(e *rtv1.Envelope) bool { return e.GetStateFrame() != nil })
	if f.GetStateFrame().GetBaseTick() != 0 {
		t.Fatalf("first frame after resume is a delta against %d", f.GetStateFrame().GetBaseTick())
	}
	_ = m.Close(ctx)
}

func TestFrameRefcount(t *testing.T) {
	f := NewFrame()
	f.Retain()
	f.Release()
	f.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("over-release not caught")
		}
	}()
	f.Release()
}

// panicky is logic with a bug in its tick.
type panicky struct{ movers }

func (p *panicky) Tick(*Handle, uint32, []Input) { panic("bug in game code") }

// A panic in game logic closes that room, not the server.
func TestLogicPanicClosesOnlyItsRoom(t *testing.T) {
	m, _ := newTestManager(Config{})
	if err := m.handlers.Register("panicky", func() Logic { return &panicky{} }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := newRecorder()
	if _, err := m.Create(ctx, Player{UserID: "a"}, c, &rtv1.CreateRoom{Handler: "panicky", TickRate: 100}); err != nil {
		t.Fatal(err)
	}
	closed := c.waitFor(t, "room closed", func(e *rtv1.Envelope) bool { return e.GetRoomClosed() != nil })
	if closed.GetRoomClosed().GetReason() != "internal error" {
		t.Fatalf("reason %q", closed.GetRoomClosed().GetReason())
	}
	if got := testutil.ToFloat64(m.metrics.logicPanics); got < 1 {
		t.Fatalf("panics counted: %v", got)
	}
	// The manager still serves other rooms.
	if _, err := m.Create(ctx, Player{UserID: "b"}, newRecorder(), &rtv1.CreateRoom{Handler: ArenaHandler}); err != nil {
		t.Fatal(err)
	}
	_ = m.Close(ctx)
}
