package roomevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// replayIdle is how long Replay waits for a message before asking the server
// whether anything is still pending (events can expire between the count and
// their delivery).
const replayIdle = time.Second

// Replay calls fn with the room's events from the beginning of the stream,
// in the order they were stored, and returns once it has delivered every
// event stored when it was called (events stored meanwhile may be included).
// An error from fn stops the replay and is returned. Replay does not need
// Start and works after Close.
func (p *Publisher) Replay(ctx context.Context, roomID string, fn func(Event) error) error {
	if err := checkToken("room id", roomID); err != nil {
		return err
	}
	stream, err := p.js.Stream(ctx, p.opts.Stream)
	if err != nil {
		return fmt.Errorf("roomevents: replay room %s: %w", roomID, err)
	}
	// Stream.Info was just fetched: its last sequence bounds "stored at the
	// time of the call", so a busy room cannot keep Replay going forever.
	lastSeq := stream.CachedInfo().State.LastSeq
	if lastSeq == 0 {
		return nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{RoomSubjects(roomID)},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second, // in case the delete below fails
	})
	if err != nil {
		return fmt.Errorf("roomevents: replay room %s: %w", roomID, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("roomevents: replay room %s: %w", roomID, err)
	}
	defer func() {
		msgs.Stop()
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = stream.DeleteConsumer(dctx, info.Name)
			cancel()
		}
	}()

	// The consumer's first state says whether the room has any event at all;
	// without it an empty room would wait out replayIdle.
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("roomevents: replay room %s: %w", roomID, err)
	}
	if info.NumPending == 0 && info.Delivered.Consumer == 0 {
		return nil
	}

	for {
		nctx, cancel := context.WithTimeout(ctx, replayIdle)
		msg, err := msgs.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			info, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("roomevents: replay room %s: %w", roomID, err)
			}
			if info.NumPending == 0 {
				return nil
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("roomevents: replay room %s: %w", roomID, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("roomevents: replay room %s: %w", roomID, err)
		}
		var ev Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			return fmt.Errorf("roomevents: replay room %s: message %d on %s is not an event: %w",
				roomID, meta.Sequence.Stream, msg.Subject(), err)
		}
		if err := fn(ev); err != nil {
			return err
		}
		if meta.NumPending == 0 || meta.Sequence.Stream >= lastSeq {
			return nil
		}
	}
}
