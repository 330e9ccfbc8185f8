package chat

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
)

// subscriber is one open Subscribe stream.
type subscriber struct {
	user string
	// only holds the channel ids the stream asked for; nil means every
	// channel of the user, including those joined later.
	only    map[string]bool
	events  chan *chatv1.Event
	gone    chan struct{} // closed when dropped for falling behind
	follows map[string]Channel
}

func newSubscriber(user string, only []Channel, queue int) *subscriber {
	s := &subscriber{user: user, events: make(chan *chatv1.Event, queue), gone: make(chan struct{}), follows: map[string]Channel{}}
	if len(only) > 0 {
		s.only = map[string]bool{}
		for _, ch := range only {
			s.only[ch.ID()] = true
		}
	}
	return s
}

// router hands each event of the chat stream to this node's subscribers of
// its channel. Every node runs one, fed by its own consumer of the whole
// stream, so an event stored through any node reaches every subscriber.
type router struct {
	rooms RoomMembers // nil: no room channels
	m     *metrics
	log   *slog.Logger
	// stored is told the id of every message seen, so this node's next
	// write to that channel links to it without a read.
	stored func(subject string, id uint64)

	mu        sync.RWMutex
	byChannel map[string]map[*subscriber]struct{}
	byUser    map[string]map[*subscriber]struct{}
}

func newRouter(rooms RoomMembers, m *metrics, log *slog.Logger, stored func(string, uint64)) *router {
	return &router{rooms: rooms, m: m, log: log, stored: stored,
		byChannel: map[string]map[*subscriber]struct{}{}, byUser: map[string]map[*subscriber]struct{}{}}
}

func (r *router) add(s *subscriber) {
	r.mu.Lock()
	defer r.mu.Unlock()
	addTo(r.byUser, s.user, s)
}

func (r *router) remove(s *subscriber) {
	r.mu.Lock()
	defer r.mu.Unlock()
	removeFrom(r.byUser, s.user, s)
	for id := range s.follows {
		removeFrom(r.byChannel, id, s)
	}
	clear(s.follows)
}

// follow adds a channel to a stream, if the stream wants it.
func (r *router) follow(s *subscriber, ch Channel) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.followLocked(s, ch)
}

func (r *router) followLocked(s *subscriber, ch Channel) {
	id := ch.ID()
	if s.only != nil && !s.only[id] {
		return
	}
	if _, ok := s.follows[id]; ok {
		return
	}
	s.follows[id] = ch
	addTo(r.byChannel, id, s)
}

// followed lists a stream's channels, sorted.
func (r *router) followed(s *subscriber) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(s.follows))
	for id := range s.follows {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func addTo(m map[string]map[*subscriber]struct{}, k string, s *subscriber) {
	set := m[k]
	if set == nil {
		set = map[*subscriber]struct{}{}
		m[k] = set
	}
	set[s] = struct{}{}
}

func removeFrom(m map[string]map[*subscriber]struct{}, k string, s *subscriber) {
	set := m[k]
	delete(set, s)
	if len(set) == 0 {
		delete(m, k)
	}
}

// dispatch delivers one stored event. It runs on the consumer's goroutine
// and never blocks: a subscriber whose queue is full is dropped.
func (r *router) dispatch(subject string, data []byte, seq uint64, stored time.Time) {
	ref, err := parseSubject(subject)
	if err != nil {
		r.m.undecodable.Inc()
		r.log.Debug("skipping a message that is not a chat event", "subject", subject, "err", err)
		return
	}
	rec, err := decodeRecord(data, ref.suffix)
	if err != nil {
		r.m.undecodable.Inc()
		r.log.Debug("skipping a chat event that does not decode", "subject", subject, "seq", seq, "err", err)
		return
	}
	if ref.suffix == suffixMsg && r.stored != nil {
		r.stored(subject, seq)
	}
	ev := toEvent(ref, rec, seq)
	id := ev.ChannelId
	if rec.Type == typeJoin {
		// A stream learns the channels its player joins, on any node, here.
		r.mu.Lock()
		for s := range r.byUser[rec.Sender] {
			r.followLocked(s, ref.ch)
		}
		r.mu.Unlock()
	}

	var slow []*subscriber
	r.mu.RLock()
	for s := range r.byChannel[id] {
		if ref.ch.Kind == Room && (r.rooms == nil || !r.rooms.Seated(ref.ch.Name, s.user)) {
			continue // no longer in the room: the room's chat is not theirs
		}
		select {
		case s.events <- ev:
			r.m.delivered.Inc()
		default:
			slow = append(slow, s)
		}
	}
	r.mu.RUnlock()

	if rec.Type == typeLeave || len(slow) > 0 {
		r.mu.Lock()
		if rec.Type == typeLeave {
			for s := range r.byUser[rec.Sender] {
				delete(s.follows, id)
				removeFrom(r.byChannel, id, s)
			}
		}
		for _, s := range slow {
			if _, still := r.byUser[s.user][s]; !still {
				continue
			}
			removeFrom(r.byUser, s.user, s)
			for fid := range s.follows {
				removeFrom(r.byChannel, fid, s)
			}
			clear(s.follows)
			close(s.gone)
			r.m.dropped.Inc()
		}
		r.mu.Unlock()
	}
	if !stored.IsZero() {
		r.m.lag.Observe(time.Since(stored).Seconds())
	}
}

// toEvent renders a stored event for subscribers.
func toEvent(ref subjectRef, rec record, seq uint64) *chatv1.Event {
	id := ref.ch.ID()
	ev := &chatv1.Event{ChannelId: id}
	switch rec.Type {
	case typeMessage:
		ev.Event = &chatv1.Event_Message{Message: messageProto(ref.ch, seq, rec, time.Time{})}
	case typeEdit:
		orig := rec
		orig.At = rec.Created
		ev.Event = &chatv1.Event_Edited{Edited: messageProto(ref.ch, ref.target, orig, rec.At)}
	case typeDelete:
		ev.Event = &chatv1.Event_Deleted{Deleted: &chatv1.Deleted{MessageId: ref.target, By: rec.By}}
	case typeJoin:
		ev.Event = &chatv1.Event_Joined{Joined: &chatv1.Presence{UserId: rec.Sender, Username: rec.Username}}
	case typeLeave:
		ev.Event = &chatv1.Event_Left{Left: &chatv1.Presence{UserId: rec.Sender, Username: rec.Username}}
	}
	return ev
}

// messageProto renders a message; edited is when it was last edited, or
// zero.
func messageProto(ch Channel, id uint64, rec record, edited time.Time) *chatv1.Message {
	m := &chatv1.Message{
		ChannelId: ch.ID(), Id: id, SenderId: rec.Sender, SenderUsername: rec.Username,
		Text: rec.Text, CreatedUnixMs: rec.At.UnixMilli(),
	}
	if !edited.IsZero() {
		m.EditedUnixMs = edited.UnixMilli()
	}
	return m
}
