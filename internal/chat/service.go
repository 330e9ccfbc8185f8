package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
)

// Options configures a Service. Zero values take the defaults noted.
type Options struct {
	// Stream holds every chat event (default RALLY_CHAT).
	Stream string
	// MembersBucket is the key-value bucket of channel memberships (default
	// RALLY_CHAT_MEMBERS).
	MembersBucket string
	// MaxMessageBytes bounds a message's text (default 4096).
	MaxMessageBytes int
	// MessagesPerSecond and MessageBurst limit each player's sends and
	// edits together (defaults 5 and 10).
	MessagesPerSecond float64
	MessageBurst      int
	// HistoryMaxAge is how long the stream keeps events; zero keeps them
	// forever.
	HistoryMaxAge time.Duration
	// SubscriberQueue is how many events may wait for one Subscribe stream
	// before it is ended as too slow (default 256).
	SubscriberQueue int
	// RoomWait is how long a room channel call waits for news of the
	// caller's seat, which travels asynchronously (default 1s).
	RoomWait time.Duration

	Registerer prometheus.Registerer
	Log        *slog.Logger
	Now        func() time.Time // nil: time.Now
}

// Deps are the live parts a Service runs on, given at Start.
type Deps struct {
	JetStream jetstream.JetStream
	// Rooms says who is in which room; nil refuses room channels.
	Rooms RoomMembers
	// TracerProvider makes the spans; nil uses the global provider.
	TracerProvider trace.TracerProvider
}

// Defaults.
const (
	DefaultStream            = "RALLY_CHAT"
	DefaultMembersBucket     = "RALLY_CHAT_MEMBERS"
	DefaultMaxMessageBytes   = 4096
	DefaultMessagesPerSecond = 5
	DefaultMessageBurst      = 10
	DefaultSubscriberQueue   = 256

	// DefaultPage and MaxPage bound History pages.
	DefaultPage = 50
	MaxPage     = 100

	DefaultRoomWait = time.Second
	// maxAttempts bounds retries of a write that lost a race to another
	// writer of the same channel.
	maxAttempts = 8
	// maxMembersListed bounds JoinResponse.member_ids.
	maxMembersListed = 100
	// maxFollowed bounds the channels one Subscribe stream starts with.
	maxFollowed = 10000
	// lastCacheSize bounds the per-channel cache of last message ids.
	lastCacheSize = 1 << 16
)

// Actor is who performs an operation: a player, or the server itself
// (System), which may post to any channel and edit or delete any message.
type Actor struct {
	UserID   string
	Username string
	system   bool
}

// System is the server acting on its own behalf: no membership checks, no
// rate limit, no moderation hook.
var System = Actor{system: true}

// Player is a player acting.
func Player(userID, username string) Actor { return Actor{UserID: userID, Username: username} }

// Draft is a message about to be stored, as the moderation hook sees it.
type Draft struct {
	Channel        Channel
	SenderID       string
	SenderUsername string
	Text           string
	// Editing is the id of the message being edited; 0 for a new message.
	Editing uint64
}

// Moderator is the game's moderation hook. It returns the text to store
// (the draft's, or a rewrite) or an error to refuse the message. A gRPC
// status error reaches the client as it is; any other error is refused
// with PermissionDenied and its text.
type Moderator func(ctx context.Context, d Draft) (string, error)

// Service is chat on one node. It is safe for concurrent use.
type Service struct {
	js     jetstream.JetStream
	rooms  RoomMembers
	opts   Options
	log    *slog.Logger
	m      *metrics
	tracer trace.Tracer
	limit  *limiter
	now    func() time.Time

	stream    jetstream.Stream
	members   jetstream.KeyValue
	router    *router
	cons      jetstream.ConsumeContext
	moderator atomic.Pointer[Moderator]
	started   atomic.Bool
	done      chan struct{}
	closeOnce sync.Once

	// Writes to one subject are serialised on this node, so they link to
	// each other without retries; other nodes are caught by the stream's
	// expected-last-sequence check.
	chainSeed  maphash.Seed
	chainLocks [64]sync.Mutex
	lastMu     sync.Mutex
	last       map[string]uint64 // message subject -> id of its newest message
}

// New returns a Service; nothing runs until Start. The moderation hook may
// be set from here on.
func New(opts Options) *Service {
	if opts.Stream == "" {
		opts.Stream = DefaultStream
	}
	if opts.MembersBucket == "" {
		opts.MembersBucket = DefaultMembersBucket
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MessagesPerSecond <= 0 {
		opts.MessagesPerSecond = DefaultMessagesPerSecond
	}
	if opts.MessageBurst <= 0 {
		opts.MessageBurst = DefaultMessageBurst
	}
	if opts.RoomWait <= 0 {
		opts.RoomWait = DefaultRoomWait
	}
	if opts.SubscriberQueue <= 0 {
		opts.SubscriberQueue = DefaultSubscriberQueue
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Service{
		opts: opts, log: opts.Log.With("component", "chat"),
		m: newMetrics(opts.Registerer), tracer: otel.GetTracerProvider().Tracer("rally/chat"),
		limit: newLimiter(opts.MessagesPerSecond, opts.MessageBurst, opts.Now),
		now:   opts.Now, done: make(chan struct{}),
		chainSeed: maphash.MakeSeed(), last: map[string]uint64{},
	}
	return s
}

// Start creates or updates the stream and the members bucket and starts
// delivering events to this node's subscribers. Settings an operator
// changed on an existing stream (replicas, limits) are kept; subjects,
// retention age and direct reads are set.
func (s *Service) Start(ctx context.Context, deps Deps) error {
	if deps.JetStream == nil {
		return errors.New("chat: Start needs JetStream")
	}
	if s.started.Load() {
		return errors.New("chat: already started")
	}
	s.js, s.rooms = deps.JetStream, deps.Rooms
	if deps.TracerProvider != nil {
		s.tracer = deps.TracerProvider.Tracer("rally/chat")
	}
	s.router = newRouter(s.rooms, s.m, s.log, s.sawMessage)
	want := jetstream.StreamConfig{
		Name:        s.opts.Stream,
		Description: "Rally chat: messages, edits, deletes and presence per channel",
		Subjects:    []string{SubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		MaxAge:      s.opts.HistoryMaxAge,
		AllowDirect: true,
	}
	st, err := s.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = s.js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = s.js.Stream(ctx, want.Name) // another node was first
		}
	}
	if err != nil {
		return fmt.Errorf("chat: stream %s: %w", want.Name, err)
	}
	cfg := st.CachedInfo().Config
	if !slices.Equal(cfg.Subjects, want.Subjects) || cfg.MaxAge != want.MaxAge || !cfg.AllowDirect {
		cfg.Subjects, cfg.MaxAge, cfg.AllowDirect = want.Subjects, want.MaxAge, true
		if cfg.Duplicates > 0 && cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
			cfg.Duplicates = cfg.MaxAge // JetStream requires the window within MaxAge
		}
		if st, err = s.js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("chat: update stream %s: %w", want.Name, err)
		}
	}
	s.stream = st

	s.members, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      s.opts.MembersBucket,
		Description: "Rally chat: who is a member of which channel",
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("chat: members bucket %s: %w", s.opts.MembersBucket, err)
	}

	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("chat: consumer: %w", err)
	}
	s.cons, err = cons.Consume(func(m jetstream.Msg) {
		var seq uint64
		var at time.Time
		if meta, err := m.Metadata(); err == nil {
			seq, at = meta.Sequence.Stream, meta.Timestamp
		}
		s.router.dispatch(m.Subject(), m.Data(), seq, at)
	})
	if err != nil {
		return fmt.Errorf("chat: consume: %w", err)
	}
	s.started.Store(true)
	return nil
}

// Close stops delivering events and ends every Subscribe stream.
func (s *Service) Close(context.Context) error {
	s.closeOnce.Do(func() {
		close(s.done)
		if s.cons != nil {
			s.cons.Stop()
		}
	})
	return nil
}

// SetModerator installs the moderation hook, replacing any earlier one;
// nil removes it. It is safe to call at any time, before or after Start.
func (s *Service) SetModerator(m Moderator) {
	if m == nil {
		s.moderator.Store(nil)
		return
	}
	s.moderator.Store(&m)
}

// span starts an operation's span.
func (s *Service) span(ctx context.Context, name string, a Actor, ch Channel) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{attribute.String("chat.channel", ch.ID())}
	if a.system {
		attrs = append(attrs, attribute.Bool("chat.system", true))
	} else {
		attrs = append(attrs, attribute.String("player.id", a.UserID))
	}
	return s.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}

// reject counts a refusal and returns it as a status error.
func (s *Service) reject(reason string, code codes.Code, format string, args ...any) error {
	s.m.rejected.WithLabelValues(reason).Inc()
	return status.Errorf(code, format, args...)
}

func (s *Service) internal(what string, err error) error {
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	s.log.Error("chat: "+what, "err", err)
	return status.Errorf(codes.Unavailable, "chat: %s: %v", what, err)
}

func (s *Service) checkActor(a Actor) error {
	if !s.started.Load() {
		return status.Error(codes.Unavailable, "chat: not started")
	}
	if !a.system && a.UserID == "" {
		return status.Error(codes.Unauthenticated, "no player")
	}
	return nil
}

// checkPlayer refuses System where an operation needs a player.
func (s *Service) checkPlayer(a Actor) error {
	if a.system {
		return status.Error(codes.InvalidArgument, "only a player can do this")
	}
	return s.checkActor(a)
}

// isMember reads the members bucket.
func (s *Service) isMember(ctx context.Context, userID string, ch Channel) (bool, error) {
	_, err := s.members.Get(ctx, memberKey(userID, ch))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// access checks that a may read and write ch: server code always; a player
// seated in the room, one of a direct channel's two, or a group's member.
func (s *Service) access(ctx context.Context, a Actor, ch Channel) error {
	if a.system {
		return nil
	}
	switch ch.Kind {
	case Room:
		if s.rooms == nil {
			return s.reject(rejectNotMember, codes.FailedPrecondition, "room channels are not available on this server")
		}
		wctx, cancel := context.WithTimeout(ctx, s.opts.RoomWait)
		defer cancel()
		if !s.rooms.AwaitSeated(wctx, ch.Name, a.UserID) {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return s.reject(rejectNotMember, codes.PermissionDenied, "you are not in room %s", ch.Name)
		}
		return nil
	case Direct:
		if !ch.Has(a.UserID) {
			return s.reject(rejectNotMember, codes.PermissionDenied, "%s is between two other players", ch.ID())
		}
		return nil
	}
	ok, err := s.isMember(ctx, a.UserID, ch)
	if err != nil {
		return s.internal("membership", err)
	}
	if !ok {
		return s.reject(rejectNotMember, codes.PermissionDenied, "join %s before using it", ch.ID())
	}
	return nil
}

// Join makes a player a member of ch. Joining a direct channel makes both
// players members. Joining twice is harmless and emits no presence.
func (s *Service) Join(ctx context.Context, a Actor, ch Channel) (resp *chatv1.JoinResponse, err error) {
	ctx, span := s.span(ctx, "chat.join", a, ch)
	defer func() { endSpan(span, err) }()
	if err := s.checkPlayer(a); err != nil {
		return nil, err
	}
	if ch.Kind != Group { // anyone may join a group
		if err := s.access(ctx, a, ch); err != nil {
			return nil, err
		}
	}
	if _, err := s.addMember(ctx, ch, a.UserID, a.Username); err != nil {
		return nil, err
	}
	if ch.Kind == Direct {
		if _, err := s.addMember(ctx, ch, ch.Other(a.UserID), ""); err != nil {
			return nil, err
		}
	}
	resp = &chatv1.JoinResponse{Channel: channelProto(ch, a.UserID)}
	resp.MemberIds, err = s.memberIDs(ctx, ch)
	if err != nil {
		return nil, s.internal("members", err)
	}
	return resp, nil
}

// addMember records a membership and, if it is new, announces it.
func (s *Service) addMember(ctx context.Context, ch Channel, userID, username string) (bool, error) {
	value, _ := json.Marshal(struct {
		Username string    `json:"username,omitempty"`
		Joined   time.Time `json:"joined"`
	}{username, s.now().UTC()})
	_, err := s.members.Create(ctx, memberKey(userID, ch), value)
	if isWrongLast(err) || errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, s.internal("join", err)
	}
	if _, err := s.publish(ctx, ch.presenceSubject(), record{Type: typeJoin, Sender: userID, Username: username, At: s.now().UTC()}, nil); err != nil {
		return true, s.internal("presence", err)
	}
	s.m.presence.WithLabelValues(typeJoin).Inc()
	return true, nil
}

// memberIDs lists up to maxMembersListed members of ch.
func (s *Service) memberIDs(ctx context.Context, ch Channel) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // also ends the lister's goroutine if we stop early
	lister, err := s.members.ListKeysFiltered(ctx, "*."+ch.Kind.String()+"."+ch.token())
	if err != nil {
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	var ids []string
	for key := range lister.Keys() {
		uid, _, err := parseMemberKey(key)
		if err != nil {
			continue
		}
		// A room's chat is its players': those who joined its channel
		// but have left the room are not listed.
		if ch.Kind == Room && (s.rooms == nil || !s.rooms.Seated(ch.Name, uid)) {
			continue
		}
		ids = append(ids, uid)
		if len(ids) == maxMembersListed {
			break
		}
	}
	slices.Sort(ids)
	return ids, ctx.Err()
}

// Leave ends a player's membership of ch. Leaving a channel one is not in
// is harmless and emits nothing.
func (s *Service) Leave(ctx context.Context, a Actor, ch Channel) (err error) {
	ctx, span := s.span(ctx, "chat.leave", a, ch)
	defer func() { endSpan(span, err) }()
	if err := s.checkPlayer(a); err != nil {
		return err
	}
	key := memberKey(a.UserID, ch)
	entry, err := s.members.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return s.internal("leave", err)
	}
	// Deleting at the revision read makes a concurrent second Leave a
	// no-op rather than a second presence event.
	if err := s.members.Delete(ctx, key, jetstream.LastRevision(entry.Revision())); err != nil {
		if isWrongLast(err) {
			return nil
		}
		return s.internal("leave", err)
	}
	if _, err := s.publish(ctx, ch.presenceSubject(), record{Type: typeLeave, Sender: a.UserID, Username: a.Username, At: s.now().UTC()}, nil); err != nil {
		return s.internal("presence", err)
	}
	s.m.presence.WithLabelValues(typeLeave).Inc()
	return nil
}

// checkText applies the size limit; the moderation hook's rewrite is held
// to it too.
func (s *Service) checkText(text string) error {
	if text == "" {
		return s.reject(rejectInvalid, codes.InvalidArgument, "text is empty")
	}
	if len(text) > s.opts.MaxMessageBytes {
		return s.reject(rejectTooLarge, codes.InvalidArgument, "text is %d bytes; at most %d allowed", len(text), s.opts.MaxMessageBytes)
	}
	if !utf8.ValidString(text) {
		return s.reject(rejectInvalid, codes.InvalidArgument, "text is not valid UTF-8")
	}
	return nil
}

// admit runs the checks every new text goes through: size, the player's
// rate, then the moderation hook. It returns the text to store.
func (s *Service) admit(ctx context.Context, a Actor, ch Channel, text string, editing uint64) (string, error) {
	if err := s.checkText(text); err != nil {
		return "", err
	}
	if a.system {
		return text, nil
	}
	if ok, wait := s.limit.allow(a.UserID); !ok {
		return "", s.reject(rejectRate, codes.ResourceExhausted,
			"rate limit: at most %g messages a second (bursts of %d); retry in %s",
			s.opts.MessagesPerSecond, s.opts.MessageBurst, wait.Round(time.Millisecond))
	}
	mod := s.moderator.Load()
	if mod == nil {
		return text, nil
	}
	out, err := (*mod)(ctx, Draft{Channel: ch, SenderID: a.UserID, SenderUsername: a.Username, Text: text, Editing: editing})
	if err != nil {
		s.m.rejected.WithLabelValues(rejectModeration).Inc()
		if st, ok := status.FromError(err); ok {
			return "", st.Err()
		}
		return "", status.Error(codes.PermissionDenied, err.Error())
	}
	if err := s.checkText(out); err != nil {
		return "", err
	}
	return out, nil
}

// Send stores a message in ch as a.
func (s *Service) Send(ctx context.Context, a Actor, ch Channel, text string) (msg *chatv1.Message, err error) {
	ctx, span := s.span(ctx, "chat.send", a, ch)
	defer func() { endSpan(span, err) }()
	if err := s.checkActor(a); err != nil {
		return nil, err
	}
	if err := s.access(ctx, a, ch); err != nil {
		return nil, err
	}
	text, err = s.admit(ctx, a, ch, text, 0)
	if err != nil {
		return nil, err
	}
	if ch.Kind == Direct {
		// The other player hears a direct message without joining first.
		for _, uid := range []string{ch.Name, ch.Peer} {
			username := ""
			if uid == a.UserID {
				username = a.Username
			}
			if ok, err := s.isMember(ctx, uid, ch); err != nil {
				return nil, s.internal("membership", err)
			} else if !ok {
				if _, err := s.addMember(ctx, ch, uid, username); err != nil {
					return nil, err
				}
			}
		}
	}
	rec := record{Type: typeMessage, Sender: a.UserID, Username: a.Username, Text: text, At: s.now().UTC()}
	id, err := s.appendMessage(ctx, ch, &rec)
	if err != nil {
		return nil, s.internal("send", err)
	}
	span.SetAttributes(attribute.Int64("chat.message", int64(id)))
	s.m.messages.WithLabelValues(ch.Kind.String()).Inc()
	return messageProto(ch, id, rec, time.Time{}), nil
}

func (s *Service) chainLock(subject string) *sync.Mutex {
	return &s.chainLocks[maphash.String(s.chainSeed, subject)%uint64(len(s.chainLocks))]
}

// sawMessage notes the newest message of a channel, from this node's
// writes and from the stream.
func (s *Service) sawMessage(subject string, id uint64) {
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	if id <= s.last[subject] {
		return
	}
	if len(s.last) >= lastCacheSize {
		clear(s.last) // a cache: a miss costs one read
	}
	s.last[subject] = id
}

func (s *Service) cachedLast(subject string) (uint64, bool) {
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	id, ok := s.last[subject]
	return id, ok
}

// appendMessage stores a message linked to the channel's previous one.
// The stream refuses the write if another writer got in between; then it
// reads the newest message again and retries.
func (s *Service) appendMessage(ctx context.Context, ch Channel, rec *record) (uint64, error) {
	subject := ch.msgSubject()
	lock := s.chainLock(subject)
	lock.Lock()
	defer lock.Unlock()
	prev, known := s.cachedLast(subject)
	for attempt := 1; ; attempt++ {
		if !known {
			raw, err := s.stream.GetLastMsgForSubject(ctx, subject)
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound):
				prev = 0
			case err != nil:
				return 0, err
			default:
				prev = raw.Sequence
			}
			known = true
		}
		rec.Prev = prev
		id, err := s.publish(ctx, subject, *rec, &prev)
		if err == nil {
			s.sawMessage(subject, id)
			return id, nil
		}
		if !isWrongLast(err) || attempt == maxAttempts {
			return 0, err
		}
		s.m.conflicts.Inc()
		known = false
	}
}

// publish stores one event; expect, when set, is the id the subject's
// newest event must have for the write to be accepted.
func (s *Service) publish(ctx context.Context, subject string, rec record, expect *uint64) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(s.opts.Stream)}
	if expect != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*expect))
	}
	start := time.Now()
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data}, opts...)
	if err != nil {
		return 0, err
	}
	s.m.publish.Observe(time.Since(start).Seconds())
	return ack.Sequence, nil
}

// isWrongLast reports the stream refusing a write because the subject's
// newest event was not the one expected.
func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// message reads message id of ch; NotFound if it is not one.
func (s *Service) message(ctx context.Context, ch Channel, id uint64) (record, error) {
	if id == 0 {
		return record{}, s.reject(rejectInvalid, codes.InvalidArgument, "message_id is required")
	}
	raw, err := s.stream.GetMsg(ctx, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return record{}, status.Errorf(codes.NotFound, "no message %d in %s", id, ch.ID())
	}
	if err != nil {
		return record{}, s.internal("read", err)
	}
	if raw.Subject != ch.msgSubject() {
		return record{}, status.Errorf(codes.NotFound, "no message %d in %s", id, ch.ID())
	}
	rec, err := decodeRecord(raw.Data, suffixMsg)
	if err != nil {
		return record{}, s.internal("read", err)
	}
	return rec, nil
}

// revision reads the newest edit or delete of a message: its id (0 if
// none) and the record.
func (s *Service) revision(ctx context.Context, ch Channel, id uint64) (uint64, record, error) {
	raw, err := s.stream.GetLastMsgForSubject(ctx, ch.revSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, record{}, nil
	}
	if err != nil {
		return 0, record{}, err
	}
	rec, err := decodeRecord(raw.Data, suffixRev)
	if err != nil {
		return 0, record{}, err
	}
	return raw.Sequence, rec, nil
}

// Edit replaces the text of message id in ch. Players edit their own
// messages; System edits any.
func (s *Service) Edit(ctx context.Context, a Actor, ch Channel, id uint64, text string) (msg *chatv1.Message, err error) {
	ctx, span := s.span(ctx, "chat.edit", a, ch)
	defer func() { endSpan(span, err) }()
	span.SetAttributes(attribute.Int64("chat.message", int64(id)))
	rec, err := s.revise(ctx, a, ch, id, typeEdit, text)
	if err != nil {
		return nil, err
	}
	orig := rec
	orig.At = rec.Created
	return messageProto(ch, id, orig, rec.At), nil
}

// Delete removes message id from ch. Players delete their own messages;
// System deletes any.
func (s *Service) Delete(ctx context.Context, a Actor, ch Channel, id uint64) (err error) {
	ctx, span := s.span(ctx, "chat.delete", a, ch)
	defer func() { endSpan(span, err) }()
	span.SetAttributes(attribute.Int64("chat.message", int64(id)))
	_, err = s.revise(ctx, a, ch, id, typeDelete, "")
	return err
}

func (s *Service) revise(ctx context.Context, a Actor, ch Channel, id uint64, typ, text string) (record, error) {
	if err := s.checkActor(a); err != nil {
		return record{}, err
	}
	if err := s.access(ctx, a, ch); err != nil {
		return record{}, err
	}
	orig, err := s.message(ctx, ch, id)
	if err != nil {
		return record{}, err
	}
	if !a.system && orig.Sender != a.UserID {
		return record{}, s.reject(rejectForbidden, codes.PermissionDenied, "message %d is not yours", id)
	}
	if typ == typeEdit {
		if text, err = s.admit(ctx, a, ch, text, id); err != nil {
			return record{}, err
		}
	}
	subject := ch.revSubject(id)
	lock := s.chainLock(subject)
	lock.Lock()
	defer lock.Unlock()
	for attempt := 1; ; attempt++ {
		lastID, last, err := s.revision(ctx, ch, id)
		if err != nil {
			return record{}, s.internal("read", err)
		}
		if last.Type == typeDelete {
			return record{}, status.Errorf(codes.NotFound, "message %d was deleted", id)
		}
		rec := record{Type: typ, Sender: orig.Sender, Username: orig.Username, Text: text,
			Created: orig.At, By: a.UserID, At: s.now().UTC()}
		_, err = s.publish(ctx, subject, rec, &lastID)
		if err == nil {
			s.m.revisions.WithLabelValues(typ).Inc()
			return rec, nil
		}
		if !isWrongLast(err) || attempt == maxAttempts {
			return record{}, s.internal(typ, err)
		}
		s.m.conflicts.Inc()
	}
}

// History returns up to limit messages of ch older than cursor (the
// newest when cursor is empty), oldest first, with the cursor of the next
// older page ("" at the start of the channel). Edited messages show their
// current text; deleted ones are left out, so a page may be short while
// more remain: keep paging while next_cursor is set.
func (s *Service) History(ctx context.Context, a Actor, ch Channel, cursor string, limit int) (resp *chatv1.HistoryResponse, err error) {
	ctx, span := s.span(ctx, "chat.history", a, ch)
	defer func() { endSpan(span, err) }()
	start := time.Now()
	defer func() { s.m.history.Observe(time.Since(start).Seconds()) }()
	if err := s.checkActor(a); err != nil {
		return nil, err
	}
	if limit < 0 || limit > MaxPage {
		return nil, s.reject(rejectInvalid, codes.InvalidArgument, "limit must be within 0-%d", MaxPage)
	}
	if limit == 0 {
		limit = DefaultPage
	}
	if err := s.access(ctx, a, ch); err != nil {
		return nil, err
	}
	subject := ch.msgSubject()
	var next uint64
	if cursor != "" {
		if next, err = decodeCursor(cursor); err != nil {
			return nil, s.reject(rejectInvalid, codes.InvalidArgument, "%v", err)
		}
	} else {
		raw, err := s.stream.GetLastMsgForSubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return &chatv1.HistoryResponse{}, nil
		case err != nil:
			return nil, s.internal("history", err)
		}
		next = raw.Sequence
	}

	resp = &chatv1.HistoryResponse{}
	first := cursor != ""
	// The links are followed one read at a time; each message's revision
	// is read alongside, so a page costs about one round trip per message.
	type found struct {
		id       uint64
		rec, rev record
		err      error
	}
	// Deleted messages are skipped, so bound the reads, not the results.
	maxScan := 4*limit + 16
	for scanned := 0; next != 0 && len(resp.Messages) < limit && scanned < maxScan; {
		var batch []*found
		var wg sync.WaitGroup
		var walkErr error
		for len(batch) < limit-len(resp.Messages) && next != 0 && scanned < maxScan {
			scanned++
			raw, err := s.stream.GetMsg(ctx, next)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				next = 0 // aged out of the stream: history starts here
				break
			}
			if err != nil {
				walkErr = s.internal("history", err)
				break
			}
			if raw.Subject != subject {
				if first {
					walkErr = s.reject(rejectInvalid, codes.InvalidArgument, "the cursor belongs to another channel")
				} else {
					walkErr = s.internal("history", fmt.Errorf("message %d links to %d on %s", raw.Sequence, next, raw.Subject))
				}
				break
			}
			first = false
			rec, err := decodeRecord(raw.Data, suffixMsg)
			if err != nil {
				walkErr = s.internal("history", err)
				break
			}
			f := &found{id: next, rec: rec}
			batch = append(batch, f)
			wg.Go(func() { _, f.rev, f.err = s.revision(ctx, ch, f.id) })
			next = rec.Prev
		}
		wg.Wait()
		if walkErr != nil {
			return nil, walkErr
		}
		for _, f := range batch {
			if f.err != nil {
				return nil, s.internal("history", f.err)
			}
			var edited time.Time
			switch f.rev.Type {
			case typeDelete:
				continue
			case typeEdit:
				f.rec.Text, edited = f.rev.Text, f.rev.At
			}
			resp.Messages = append(resp.Messages, messageProto(ch, f.id, f.rec, edited))
		}
	}
	slices.Reverse(resp.Messages)
	if next != 0 {
		resp.NextCursor = encodeCursor(next)
	}
	return resp, nil
}

// Subscribe calls send with the events of a player's channels (all of them,
// including those joined later, when only is empty) until ctx ends, send
// fails, the service closes, or the player falls more than the subscriber
// queue behind (ResourceExhausted: subscribe again and read history).
func (s *Service) Subscribe(ctx context.Context, a Actor, only []Channel, send func(*chatv1.Event) error) error {
	if err := s.checkPlayer(a); err != nil {
		return err
	}
	for _, ch := range only {
		if ch.Kind == Room {
			if err := s.access(ctx, a, ch); err != nil {
				return err
			}
			continue
		}
		if ok, err := s.isMember(ctx, a.UserID, ch); err != nil {
			return s.internal("membership", err)
		} else if !ok {
			return s.reject(rejectNotMember, codes.PermissionDenied, "join %s before subscribing to it", ch.ID())
		}
	}
	sub := newSubscriber(a.UserID, only, s.opts.SubscriberQueue)
	// Registered before the channels are read, so a join meanwhile is not
	// missed: its presence event adds the channel.
	s.router.add(sub)
	defer s.router.remove(sub)
	s.m.subscribers.Inc()
	defer s.m.subscribers.Dec()
	if len(only) > 0 {
		for _, ch := range only {
			s.router.follow(sub, ch)
		}
	} else if err := s.followAll(ctx, sub); err != nil {
		return s.internal("subscribe", err)
	}
	hello := &chatv1.Subscribed{}
	for _, id := range s.router.followed(sub) {
		if len(hello.ChannelIds) == maxMembersListed {
			break
		}
		hello.ChannelIds = append(hello.ChannelIds, id)
	}
	if err := send(&chatv1.Event{Event: &chatv1.Event_Subscribed{Subscribed: hello}}); err != nil {
		return err
	}
	for {
		// A dropped stream ends at once, not after what it had queued.
		select {
		case <-sub.gone:
			return status.Errorf(codes.ResourceExhausted,
				"chat: fell more than %d events behind; subscribe again and read history for what was missed", s.opts.SubscriberQueue)
		default:
		}
		select {
		case ev := <-sub.events:
			if err := send(ev); err != nil {
				return err
			}
		case <-sub.gone:
			return status.Errorf(codes.ResourceExhausted,
				"chat: fell more than %d events behind; subscribe again and read history for what was missed", s.opts.SubscriberQueue)
		case <-s.done:
			return status.Error(codes.Unavailable, "chat: server shutting down")
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// followAll adds every channel the player is a member of.
func (s *Service) followAll(ctx context.Context, sub *subscriber) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lister, err := s.members.ListKeysFiltered(ctx, sub.user+".>")
	if err != nil {
		return err
	}
	defer func() { _ = lister.Stop() }()
	n := 0
	for key := range lister.Keys() {
		if _, ch, err := parseMemberKey(key); err == nil {
			s.router.follow(sub, ch)
			if n++; n == maxFollowed {
				s.log.Warn("chat: player is in too many channels; subscribing to the first ones", "player.id", sub.user, "channels", n)
				break
			}
		}
	}
	return ctx.Err()
}

func channelProto(ch Channel, viewer string) *chatv1.Channel {
	out := &chatv1.Channel{Id: ch.ID(), Name: ch.Name}
	switch ch.Kind {
	case Room:
		out.Kind = chatv1.ChannelKind_CHANNEL_KIND_ROOM
	case Group:
		out.Kind = chatv1.ChannelKind_CHANNEL_KIND_GROUP
	case Direct:
		out.Kind = chatv1.ChannelKind_CHANNEL_KIND_DIRECT
		out.Name = ch.Other(viewer)
	}
	return out
}

func playerAttr(a Actor) attribute.KeyValue { return attribute.String("player.id", a.UserID) }
