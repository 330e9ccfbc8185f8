package roomevents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Publisher. Zero values take the defaults noted.
type Options struct {
	// Stream is the main stream (default RALLY_ROOM_EVENTS).
	Stream string
	// DeadLetter is the stream for events that could not be stored
	// (default RALLY_ROOM_EVENTS_DLQ).
	DeadLetter string
	// MaxAge is how long both streams keep events; zero keeps them forever.
	MaxAge time.Duration
	// Retries is how many times a failed publish is retried before the
	// event is dead-lettered; zero means one attempt only.
	Retries int
	// RetryBackoff is the wait before the first retry; it doubles for each
	// further retry, up to maxBackoff (default 50ms).
	RetryBackoff time.Duration
	// QueueSize bounds the events waiting to be published, over all workers
	// (default 8192).
	QueueSize int
	// Workers is the number of publishing workers; a room always maps to the
	// same one, which keeps its order (default 4).
	Workers int
	// OverflowSize bounds the events waiting for the dead-letter stream
	// because the queue was full (default QueueSize/4, at least 64).
	OverflowSize int
}

// Defaults.
const (
	DefaultStream       = "RALLY_ROOM_EVENTS"
	DefaultDeadLetter   = "RALLY_ROOM_EVENTS_DLQ"
	DefaultQueueSize    = 8192
	DefaultWorkers      = 4
	DefaultRetryBackoff = 50 * time.Millisecond

	// duplicateWindow is how long JetStream remembers message ids, so a
	// retry or a restart within it does not store an event twice.
	duplicateWindow = 2 * time.Minute
	// maxBackoff caps the doubling so large Retries values stay sane.
	maxBackoff = 5 * time.Second
	// attemptTimeout bounds one publish round trip, so that a silent server
	// becomes a retry rather than a stuck worker.
	attemptTimeout = 5 * time.Second
	// maxBatch is how many events (of distinct rooms) a worker has in flight
	// at once.
	maxBatch = 64
)

// Headers set on dead-lettered events.
const (
	HeaderReason  = "Rally-Reason"
	HeaderSubject = "Rally-Subject"
)

// Errors returned by Publish.
var (
	// ErrQueueFull: the queue was full; the event went to the dead-letter
	// stream instead (or, if that path was full too, was counted as lost).
	// It is not to be published again.
	ErrQueueFull = errors.New("roomevents: publish queue full")
	// ErrNotStarted: Publish before Start.
	ErrNotStarted = errors.New("roomevents: publisher not started")
	// ErrClosed: Publish after Close.
	ErrClosed = errors.New("roomevents: publisher closed")
)

// Publisher publishes room events to JetStream in the background.
//
// Overflow policy: Publish never waits, so a room never waits on NATS. It
// hands the event (not yet encoded: encoding happens on the workers) to a
// bounded queue with one non-blocking send. When the queue is full the event
// goes to the dead-letter path instead, with the reason "publish queue
// full": it is counted in rally_roomevents_queue_full_total and Publish
// returns ErrQueueFull. Only when that path is full too is the event counted
// in rally_roomevents_lost_total and logged. PublishWait is for callers that
// would rather wait than overflow. QueueSize is split evenly over the
// workers, so one busy worker can overflow before the total is reached.
//
// Delivery: each event is published with a message id (room, seq, type), so
// retries and restarts within the stream's two-minute duplicate window store
// it once. A failed publish is retried with exponential backoff; when the
// retries are spent the event goes to the dead-letter stream with the last
// error in the Rally-Reason header, and if even that fails it is logged and
// counted as lost.
//
// Order: a room's events are stored in the order Publish accepted them. Rooms
// are sharded over the workers by id; a worker publishes a batch
// asynchronously but never holds two events of one room in flight, and
// finishes a batch (retries included) before starting the next.
type Publisher struct {
	js   jetstream.JetStream
	opts Options
	log  *slog.Logger
	m    metrics

	mu      sync.RWMutex // guards started and closed against queue sends
	started bool
	closed  bool
	shards  []chan item
	// overflow feeds the dead-letter path with events a full queue did
	// not take.
	overflow chan item
	lostLog  atomic.Int64 // unix nanos of the last "lost on overflow" log

	cancel context.CancelFunc // aborts the workers when Close runs out of time
	done   chan struct{}      // closed when every worker has returned
}

// item is an accepted event; the worker encodes it (subject, msgID, data).
type item struct {
	ev      Event
	subject string
	msgID   string
	roomID  string
	typ     Type
	data    []byte
	enq     time.Time
}

// New returns a Publisher; nothing is created or started until Start. reg
// may be nil, which leaves the metrics unregistered.
func New(js jetstream.JetStream, opts Options, reg prometheus.Registerer, log *slog.Logger) *Publisher {
	if opts.Stream == "" {
		opts.Stream = DefaultStream
	}
	if opts.DeadLetter == "" {
		opts.DeadLetter = DefaultDeadLetter
	}
	if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = DefaultRetryBackoff
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.OverflowSize <= 0 {
		opts.OverflowSize = max(opts.QueueSize/4, 64)
	}
	if log == nil {
		log = slog.Default()
	}
	p := &Publisher{
		js:       js,
		opts:     opts,
		log:      log.With("component", "roomevents"),
		shards:   make([]chan item, opts.Workers),
		overflow: make(chan item, opts.OverflowSize),
		done:     make(chan struct{}),
	}
	perShard := (opts.QueueSize + opts.Workers - 1) / opts.Workers
	for i := range p.shards {
		p.shards[i] = make(chan item, perShard)
	}
	p.m = newMetrics(reg, p.queueDepth)
	return p
}

// Start creates or updates both streams and starts the workers. Settings an
// operator changed on an existing stream (replicas, size limits) are kept;
// only subjects, retention age and the duplicate window are set.
func (p *Publisher) Start(ctx context.Context) error {
	if err := p.state(); err != nil {
		return err
	}
	dup := duplicateWindow
	if p.opts.MaxAge > 0 && p.opts.MaxAge < dup {
		dup = p.opts.MaxAge // JetStream requires the window within MaxAge
	}
	if err := p.ensureStream(ctx, jetstream.StreamConfig{
		Name:       p.opts.Stream,
		Subjects:   []string{SubjectPrefix + ">"},
		Storage:    jetstream.FileStorage,
		MaxAge:     p.opts.MaxAge,
		Duplicates: dup,
	}); err != nil {
		return err
	}
	// Dead letters age like the events they stand for: past MaxAge the main
	// stream would have dropped them too.
	if err := p.ensureStream(ctx, jetstream.StreamConfig{
		Name:     p.opts.DeadLetter,
		Subjects: []string{DeadLetterPrefix + ">"},
		Storage:  jetstream.FileStorage,
		MaxAge:   p.opts.MaxAge,
	}); err != nil {
		return err
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.stateLocked(); err != nil {
		return err
	}
	p.started = true
	// The workers outlive Start's ctx; only Close stops them.
	wctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	var wg sync.WaitGroup
	for _, ch := range p.shards {
		wg.Go(func() { p.work(wctx, ch) })
	}
	wg.Go(func() { p.overflowWork(wctx) })
	go func() {
		wg.Wait()
		close(p.done)
	}()
	return nil
}

// state reports why Start cannot run, if it cannot.
func (p *Publisher) state() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.stateLocked()
}

func (p *Publisher) stateLocked() error {
	if p.closed {
		return ErrClosed
	}
	if p.started {
		return errors.New("roomevents: already started")
	}
	return nil
}

// openLocked reports why events cannot be queued now, if they cannot.
func (p *Publisher) openLocked() error {
	switch {
	case p.closed:
		return ErrClosed
	case !p.started:
		return ErrNotStarted
	}
	return nil
}

func (p *Publisher) ensureStream(ctx context.Context, want jetstream.StreamConfig) error {
	s, err := p.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = p.js.CreateStream(ctx, want)
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			if err != nil {
				return fmt.Errorf("roomevents: create stream %s: %w", want.Name, err)
			}
			return nil
		}
		// Another node created it meanwhile: update that one instead.
		s, err = p.js.Stream(ctx, want.Name)
	}
	if err != nil {
		return fmt.Errorf("roomevents: stream %s: %w", want.Name, err)
	}
	cfg := s.CachedInfo().Config
	cfg.Subjects = want.Subjects
	cfg.MaxAge = want.MaxAge
	if want.Duplicates > 0 {
		cfg.Duplicates = want.Duplicates
	}
	if cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
		cfg.Duplicates = cfg.MaxAge // JetStream requires the window within MaxAge
	}
	if _, err := p.js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("roomevents: update stream %s: %w", want.Name, err)
	}
	return nil
}

// Publish validates and encodes ev and queues it for publishing. It returns
// at once unless the queue is full, and then within Options.FullWait (see the
// overflow policy on Publisher). A zero At is set to now.
func (p *Publisher) Publish(ev Event) error {
	it, err := p.accept(ev)
	if err != nil {
		return err
	}
	// The read lock keeps Close from closing the queues under a send; it
	// is never held across a wait.
	p.mu.RLock()
	defer p.mu.RUnlock()
	if err := p.openLocked(); err != nil {
		return err
	}
	select {
	case p.shards[shardOf(ev.RoomID, len(p.shards))] <- it:
		return nil
	default:
	}
	p.m.queueFull.Inc()
	select {
	case p.overflow <- it:
	default:
		p.m.lost.Inc()
		// One line a second at most: an overflow storm must not become a
		// logging storm.
		now := time.Now().UnixNano()
		if last := p.lostLog.Load(); now-last > int64(time.Second) && p.lostLog.CompareAndSwap(last, now) {
			p.log.Error("room events lost: the queue and the dead-letter path are both full",
				"room.id", ev.RoomID, "type", ev.Type, "queue_size", p.opts.QueueSize)
		}
	}
	return fmt.Errorf("%w: %s event of room %s sent to the dead-letter stream", ErrQueueFull, ev.Type, ev.RoomID)
}

// PublishWait is Publish for callers that would rather wait for room in
// the queue than overflow: it blocks until the event is queued or ctx ends.
// Rooms never call it.
func (p *Publisher) PublishWait(ctx context.Context, ev Event) error {
	it, err := p.accept(ev)
	if err != nil {
		return err
	}
	ch := p.shards[shardOf(ev.RoomID, len(p.shards))]
	for {
		p.mu.RLock()
		if err := p.openLocked(); err != nil {
			p.mu.RUnlock()
			return err
		}
		select {
		case ch <- it:
			p.mu.RUnlock()
			return nil
		default:
		}
		p.mu.RUnlock()
		// Close may need the write lock: wait outside the read lock.
		t := time.NewTimer(time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// accept validates ev and makes it an item; the encoding is left to the
// worker. Data is copied: the caller may reuse it.
func (p *Publisher) accept(ev Event) (item, error) {
	if err := ev.validate(); err != nil {
		return item{}, err
	}
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	ev.At = ev.At.UTC()
	if len(ev.Data) > 0 {
		ev.Data = bytes.Clone(ev.Data)
	}
	return item{ev: ev, roomID: ev.RoomID, typ: ev.Type, enq: time.Now()}, nil
}

// encode fills the item's subject, message id and JSON on a worker.
func (it *item) encode() error {
	if it.data != nil {
		return nil
	}
	data, err := json.Marshal(&it.ev)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	it.subject, it.msgID, it.data = it.ev.Subject(), it.ev.msgID(), data
	it.ev.Data = nil
	return nil
}

// overflowWork dead-letters the events a full queue did not take.
func (p *Publisher) overflowWork(ctx context.Context) {
	for it := range p.overflow {
		if ctx.Err() != nil {
			p.abandon([]item{it})
			continue
		}
		if err := it.encode(); err != nil {
			p.m.lost.Inc()
			p.log.Error("room event lost: cannot encode", "room.id", it.roomID, "err", err)
			continue
		}
		p.deadLetter(ctx, &it, errOverflow)
	}
}

var errOverflow = errors.New("publish queue full")

// PublishCustom publishes a game-defined event named name. data must be
// valid JSON (or empty); it is copied before PublishCustom returns.
func (p *Publisher) PublishCustom(roomID, name string, seq uint64, data []byte) error {
	return p.Publish(Event{Type: Custom, RoomID: roomID, Name: name, Seq: seq, Data: data})
}

// Close stops accepting events, publishes everything already queued and
// stops the workers. If ctx ends first, the workers abandon what is left
// (logged and counted as lost) and Close returns ctx's error.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	started := p.started
	for _, ch := range p.shards {
		close(ch)
	}
	close(p.overflow)
	p.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-p.done:
		p.cancel()
		return nil
	case <-ctx.Done():
		p.cancel()
		<-p.done
		return fmt.Errorf("roomevents: close: queued events abandoned: %w", ctx.Err())
	}
}

func (p *Publisher) queueDepth() float64 {
	n := 0
	for _, ch := range p.shards {
		n += len(ch)
	}
	return float64(n)
}

// shardOf maps a room to a worker (FNV-1a, without allocating).
func shardOf(roomID string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(roomID); i++ {
		h ^= uint32(roomID[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// work publishes the events of one shard until its queue is closed and
// drained.
func (p *Publisher) work(ctx context.Context, ch <-chan item) {
	batch := make([]item, 0, maxBatch)
	var held item // first event of the next batch: its room was in this one
	hasHeld := false
	for {
		batch = batch[:0]
		if hasHeld {
			batch = append(batch, held)
			hasHeld = false
		} else {
			it, ok := <-ch
			if !ok {
				return
			}
			batch = append(batch, it)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case it, ok := <-ch:
				if !ok {
					break fill
				}
				if roomInBatch(batch, it.roomID) {
					held, hasHeld = it, true
					break fill
				}
				batch = append(batch, it)
			default:
				break fill
			}
		}
		batch = p.encodeBatch(batch)
		p.flush(ctx, batch)
		clear(batch) // drop references to the encoded events
	}
}

// encodeBatch encodes a batch's events, dropping (as lost, logged) any that
// cannot be encoded.
func (p *Publisher) encodeBatch(batch []item) []item {
	kept := batch[:0]
	for _, it := range batch {
		if err := it.encode(); err != nil {
			p.m.lost.Inc()
			p.log.Error("room event lost: cannot encode", "room.id", it.roomID, "err", err)
			continue
		}
		kept = append(kept, it)
	}
	return kept
}

func roomInBatch(batch []item, roomID string) bool {
	for i := range batch {
		if batch[i].roomID == roomID {
			return true
		}
	}
	return false
}

// flush stores a batch of events of distinct rooms. A single event goes
// synchronously; several go asynchronously, and those that fail are retried
// one by one before the next batch starts, which keeps each room in order.
func (p *Publisher) flush(ctx context.Context, batch []item) {
	if len(batch) == 0 {
		return
	}
	if ctx.Err() != nil {
		p.abandon(batch)
		return
	}
	if len(batch) == 1 {
		p.deliver(ctx, &batch[0], 0, nil)
		return
	}
	futures := make([]jetstream.PubAckFuture, len(batch))
	errs := make([]error, len(batch))
	for i := range batch {
		futures[i], errs[i] = p.js.PublishMsgAsync(batch[i].msg(), jetstream.WithMsgID(batch[i].msgID))
	}
	timeout := time.NewTimer(attemptTimeout)
	defer timeout.Stop()
	expired := false
	for i, f := range futures {
		if errs[i] != nil {
			continue
		}
		if expired {
			errs[i] = jetstream.ErrAsyncPublishTimeout
			continue
		}
		select {
		case ack := <-f.Ok():
			p.stored(&batch[i], ack)
		case err := <-f.Err():
			errs[i] = err
		case <-timeout.C:
			expired = true
			errs[i] = jetstream.ErrAsyncPublishTimeout
		case <-ctx.Done():
			expired = true
			errs[i] = ctx.Err()
		}
	}
	for i := range batch {
		if errs[i] != nil {
			p.deliver(ctx, &batch[i], 1, errs[i])
		}
	}
}

func (it *item) msg() *nats.Msg {
	return &nats.Msg{Subject: it.subject, Data: it.data}
}

// deliver publishes one event synchronously, from attempt (0 is the first
// try; the async try of a batch counts as attempt 0) until the retries are
// spent, then dead-letters it.
func (p *Publisher) deliver(ctx context.Context, it *item, attempt int, lastErr error) {
	for ; attempt <= p.opts.Retries; attempt++ {
		if attempt > 0 {
			if ctx.Err() != nil {
				break
			}
			p.m.retries.Inc()
			p.log.Debug("retrying room event", "subject", it.subject, "msg_id", it.msgID, "attempt", attempt, "err", lastErr)
			if !sleep(ctx, backoff(p.opts.RetryBackoff, attempt)) {
				break
			}
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		ack, err := p.js.PublishMsg(actx, it.msg(), jetstream.WithMsgID(it.msgID))
		cancel()
		if err == nil {
			p.stored(it, ack)
			return
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	p.deadLetter(ctx, it, lastErr)
}

func (p *Publisher) stored(it *item, ack *jetstream.PubAck) {
	if ack.Duplicate {
		return // stored by an earlier attempt or process
	}
	p.m.published(it.typ).Inc()
	p.m.latency.Observe(time.Since(it.enq).Seconds())
}

// backoff is the wait before retry n (n >= 1): base, 2*base, 4*base, ...
func backoff(base time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// sleep waits d or until ctx ends, reporting whether it waited the full d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (p *Publisher) deadLetter(ctx context.Context, it *item, reason error) {
	m := &nats.Msg{
		Subject: "rally.deadletter." + it.subject[len("rally."):],
		Data:    it.data,
		Header: nats.Header{
			HeaderReason:  []string{reason.Error()},
			HeaderSubject: []string{it.subject},
		},
	}
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	_, err := p.js.PublishMsg(actx, m, jetstream.WithMsgID(it.msgID))
	cancel()
	if err != nil {
		p.m.lost.Inc()
		p.log.Error("room event lost: not stored and not dead-lettered",
			"subject", it.subject, "msg_id", it.msgID, "event", string(it.data),
			"reason", reason.Error(), "dead_letter_err", err.Error())
		return
	}
	p.m.deadLettered.Inc()
	p.log.Warn("room event dead-lettered", "subject", it.subject, "msg_id", it.msgID,
		"stream", p.opts.DeadLetter, "reason", reason.Error())
}

// abandon drops events once Close has run out of time.
func (p *Publisher) abandon(batch []item) {
	p.m.lost.Add(float64(len(batch)))
	for i := range batch {
		p.log.Error("room event lost: abandoned at shutdown",
			"subject", batch[i].subject, "msg_id", batch[i].msgID, "event", string(batch[i].data))
	}
}
