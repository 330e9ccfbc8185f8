package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Revocations end sessions before their tokens expire: logouts, refresh
// families revoked on reuse, and bans. They live in two JetStream
// key-value buckets, so they are durable and every node on the same NATS
// follows them; each node keeps what it has seen in memory, so checking a
// token costs no round trip.
//
// Bucket RALLY_SESSIONS holds, per session id, "r.<sid>" (the id of the
// refresh token that may be used next) and "x.<sid>" (the session ended,
// with the unix time after which its tokens are expired anyway); its
// entries age out after the refresh TTL. Bucket RALLY_BANS holds a Ban per
// user id and never ages.
type Revocations struct {
	sessions, bans jetstream.KeyValue
	refreshTTL     time.Duration
	now            func() time.Time
	log            *slog.Logger

	mu      sync.RWMutex
	revoked map[string]time.Time // session id -> its tokens' last expiry
	banned  map[string]Ban
	swept   time.Time
	onEnd   []func(End)

	stop func()
	done chan struct{}
}

// Ban keeps a player out: no new sessions, no refresh, existing tokens
// refused and sockets closed.
type Ban struct {
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
	// Until is when the ban lifts; zero is never.
	Until time.Time `json:"until,omitzero"`
}

// End tells that sessions ended: one session (SessionID set) or every
// session of a banned player (SessionID empty).
type End struct {
	UserID, SessionID string
	Reason            string
}

// RevocationOptions configure OpenRevocations.
type RevocationOptions struct {
	// RefreshTTL bounds how long a session's records matter.
	RefreshTTL time.Duration
	// Replicas of the buckets on a JetStream cluster (default 1).
	Replicas int
	Now      func() time.Time
	Log      *slog.Logger
}

// ErrBanned wraps the refusal of a banned player.
var ErrBanned = errors.New("auth: banned")

// OpenRevocations creates or opens the buckets and loads what they hold
// before it returns, so a restarted node refuses what was revoked.
func OpenRevocations(ctx context.Context, js jetstream.JetStream, opts RevocationOptions) (*Revocations, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	sessions, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: "RALLY_SESSIONS", Description: "Rally session families and ended sessions",
		TTL: opts.RefreshTTL + time.Hour, Storage: jetstream.FileStorage, Replicas: opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("auth: sessions bucket: %w", err)
	}
	bans, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: "RALLY_BANS", Description: "Rally player bans",
		Storage: jetstream.FileStorage, Replicas: opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("auth: bans bucket: %w", err)
	}
	r := &Revocations{
		sessions: sessions, bans: bans, refreshTTL: opts.RefreshTTL, now: opts.Now, log: opts.Log,
		revoked: map[string]time.Time{}, banned: map[string]Ban{}, done: make(chan struct{}),
	}
	watchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ended, err := sessions.Watch(watchCtx, "x.*")
	if err != nil {
		cancel()
		return nil, fmt.Errorf("auth: watch sessions: %w", err)
	}
	banned, err := bans.WatchAll(watchCtx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("auth: watch bans: %w", err)
	}
	// Each watcher sends nil once what the bucket held has been delivered.
	loaded := make(chan struct{}, 2)
	r.stop = cancel
	go r.follow(ended, banned, loaded)
	for range 2 {
		select {
		case <-loaded:
		case <-ctx.Done():
			cancel()
			return nil, fmt.Errorf("auth: loading revocations: %w", ctx.Err())
		}
	}
	return r, nil
}

// OnEnd registers fn to hear of every session that ends on any node
// (after it is in force here); call it before serving.
func (r *Revocations) OnEnd(fn func(End)) {
	r.mu.Lock()
	r.onEnd = append(r.onEnd, fn)
	r.mu.Unlock()
}

func (r *Revocations) follow(ended, banned jetstream.KeyWatcher, loaded chan<- struct{}) {
	defer close(r.done)
	defer ended.Stop()
	defer banned.Stop()
	for {
		select {
		case e, ok := <-ended.Updates():
			if !ok {
				return
			}
			if e == nil {
				loaded <- struct{}{}
				continue
			}
			r.sessionEntry(e)
		case e, ok := <-banned.Updates():
			if !ok {
				return
			}
			if e == nil {
				loaded <- struct{}{}
				continue
			}
			r.banEntry(e)
		}
	}
}

func (r *Revocations) sessionEntry(e jetstream.KeyValueEntry) {
	sid := strings.TrimPrefix(e.Key(), "x.")
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	uid, expiry, _ := strings.Cut(string(e.Value()), " ")
	unix, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil {
		unix = r.now().Add(r.refreshTTL).Unix()
	}
	r.mu.Lock()
	r.revoked[sid] = time.Unix(unix, 0)
	r.sweepLocked()
	fns := r.onEnd
	r.mu.Unlock()
	for _, fn := range fns {
		fn(End{UserID: uid, SessionID: sid, Reason: "session ended"})
	}
}

func (r *Revocations) banEntry(e jetstream.KeyValueEntry) {
	uid := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		r.mu.Lock()
		delete(r.banned, uid)
		r.mu.Unlock()
		return
	}
	var b Ban
	if err := json.Unmarshal(e.Value(), &b); err != nil {
		r.log.Warn("unreadable ban; treating it as permanent", "player.id", uid, "err", err)
	}
	r.mu.Lock()
	r.banned[uid] = b
	fns := r.onEnd
	r.mu.Unlock()
	for _, fn := range fns {
		fn(End{UserID: uid, Reason: banMessage(b)})
	}
}

// sweepLocked forgets ended sessions whose tokens have expired anyway, at
// most once a minute.
func (r *Revocations) sweepLocked() {
	now := r.now()
	if now.Sub(r.swept) < time.Minute {
		return
	}
	r.swept = now
	for sid, until := range r.revoked {
		if now.After(until) {
			delete(r.revoked, sid)
		}
	}
}

// Ended reports whether a session was ended (logout or refresh reuse).
func (r *Revocations) Ended(sid string) bool {
	r.mu.RLock()
	_, ok := r.revoked[sid]
	r.mu.RUnlock()
	return ok
}

// Banned returns the player's ban, if one is in force.
func (r *Revocations) Banned(uid string) (Ban, bool) {
	r.mu.RLock()
	b, ok := r.banned[uid]
	r.mu.RUnlock()
	if ok && !b.Until.IsZero() && r.now().After(b.Until) {
		return Ban{}, false
	}
	return b, ok
}

func banMessage(b Ban) string {
	msg := "account banned"
	if b.Reason != "" {
		msg += ": " + b.Reason
	}
	if !b.Until.IsZero() {
		msg += " (until " + b.Until.UTC().Format(time.RFC3339) + ")"
	}
	return msg
}

// validKey reports whether id can be a key of the buckets.
func validKey(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// start records the first refresh token of a new session.
func (r *Revocations) start(ctx context.Context, sid, refreshID string) error {
	_, err := r.sessions.Put(ctx, "r."+sid, []byte(refreshID))
	return err
}

// errReused is returned by rotate when the refresh token presented is not
// the family's current one.
var errReused = errors.New("auth: refresh token reused")

// rotate swaps the family's current refresh token id from used to next;
// errReused if used is not current (a replayed token, or a concurrent
// refresh that won).
func (r *Revocations) rotate(ctx context.Context, sid, used, next string) error {
	e, err := r.sessions.Get(ctx, "r."+sid)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return errReused // no family: it ended, aged out, or never was
	}
	if err != nil {
		return err
	}
	if string(e.Value()) != used {
		return errReused
	}
	if _, err := r.sessions.Update(ctx, "r."+sid, []byte(next), e.Revision()); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return errReused
		}
		return err
	}
	return nil
}

// end ends a session on every node: its tokens are refused from now on.
func (r *Revocations) end(ctx context.Context, uid, sid string, expires time.Time) error {
	if !validKey(sid) {
		return fmt.Errorf("auth: session id %q", sid)
	}
	if _, err := r.sessions.Put(ctx, "x."+sid, []byte(uid+" "+strconv.FormatInt(expires.Unix(), 10))); err != nil {
		return err
	}
	_ = r.sessions.Delete(ctx, "r."+sid)
	// In force here before the caller hears back, not only once the
	// watcher catches up.
	r.mu.Lock()
	r.revoked[sid] = expires
	r.mu.Unlock()
	return nil
}

// ban stores a ban; the watcher makes it known here and everywhere.
func (r *Revocations) ban(ctx context.Context, uid string, b Ban) error {
	v, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if _, err := r.bans.Put(ctx, uid, v); err != nil {
		return err
	}
	r.mu.Lock()
	r.banned[uid] = b
	r.mu.Unlock()
	return nil
}

func (r *Revocations) unban(ctx context.Context, uid string) (bool, error) {
	if _, err := r.bans.Get(ctx, uid); errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := r.bans.Delete(ctx, uid); err != nil {
		return false, err
	}
	r.mu.Lock()
	delete(r.banned, uid)
	r.mu.Unlock()
	return true, nil
}

// Close stops following the buckets.
func (r *Revocations) Close(context.Context) error {
	r.stop()
	<-r.done
	return nil
}
