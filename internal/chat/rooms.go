package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rallyhq/rally/internal/roomevents"
)

// RoomMembers answers whether a player is in a Rally room: a room channel's
// members are exactly the room's players.
type RoomMembers interface {
	// Seated reports, at once, whether userID holds a seat in roomID.
	Seated(roomID, userID string) bool
	// AwaitSeated is Seated, but waits until ctx ends for a seat that may
	// still be on its way.
	AwaitSeated(ctx context.Context, roomID, userID string) bool
}

// RoomSeats follows the room-event stream and knows who holds a seat in
// which room. It learns from the stream rather than from the local room
// manager so that every node knows every room's players: a chat call may
// land on a node other than the room's.
//
// Room events are published asynchronously (a room never waits on NATS),
// so a player who has just joined a room may not be seated here yet for a
// millisecond or so; AwaitSeated covers that.
type RoomSeats struct {
	log  *slog.Logger
	cons jetstream.ConsumeContext

	mu    sync.Mutex
	seats map[string]map[string]struct{} // room -> users
	wake  chan struct{}                  // closed and replaced on every change
}

// roomSubjects are the events that change who is seated. A dropped player
// keeps their seat while it is held, so player_dropped changes nothing.
var roomSubjects = []string{
	roomevents.SubjectPrefix + "*." + string(roomevents.PlayerJoined),
	roomevents.SubjectPrefix + "*." + string(roomevents.PlayerRejoined),
	roomevents.SubjectPrefix + "*." + string(roomevents.PlayerLeft),
	roomevents.SubjectPrefix + "*." + string(roomevents.RoomClosed),
}

// FollowRooms starts following the room-event stream named stream, from
// replay ago (so a node that starts while rooms run elsewhere learns their
// players), or from now when replay is 0.
func FollowRooms(ctx context.Context, js jetstream.JetStream, stream string, replay time.Duration, log *slog.Logger) (*RoomSeats, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &RoomSeats{log: log.With("component", "chat-rooms"), seats: map[string]map[string]struct{}{}, wake: make(chan struct{})}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("chat: room events stream %s: %w", stream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: roomSubjects, DeliverPolicy: jetstream.DeliverNewPolicy}
	if replay > 0 {
		from := time.Now().Add(-replay)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("chat: follow room events: %w", err)
	}
	r.cons, err = cons.Consume(func(m jetstream.Msg) { r.apply(m.Data()) })
	if err != nil {
		return nil, fmt.Errorf("chat: follow room events: %w", err)
	}
	return r, nil
}

// Stop stops following.
func (r *RoomSeats) Stop() {
	if r.cons != nil {
		r.cons.Stop()
	}
}

func (r *RoomSeats) apply(data []byte) {
	var ev roomevents.Event
	if err := json.Unmarshal(data, &ev); err != nil || ev.RoomID == "" {
		r.log.Debug("skipping a room event that does not decode", "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev.Type {
	case roomevents.PlayerJoined, roomevents.PlayerRejoined:
		if ev.UserID == "" {
			return
		}
		users := r.seats[ev.RoomID]
		if users == nil {
			users = map[string]struct{}{}
			r.seats[ev.RoomID] = users
		}
		users[ev.UserID] = struct{}{}
	case roomevents.PlayerLeft:
		users := r.seats[ev.RoomID]
		delete(users, ev.UserID)
		if len(users) == 0 {
			delete(r.seats, ev.RoomID)
		}
	case roomevents.RoomClosed:
		delete(r.seats, ev.RoomID)
	default:
		return
	}
	close(r.wake)
	r.wake = make(chan struct{})
}

// Seated implements RoomMembers.
func (r *RoomSeats) Seated(roomID, userID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.seats[roomID][userID]
	return ok
}

// AwaitSeated implements RoomMembers.
func (r *RoomSeats) AwaitSeated(ctx context.Context, roomID, userID string) bool {
	for {
		r.mu.Lock()
		_, ok := r.seats[roomID][userID]
		wake := r.wake
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return false
		}
	}
}
