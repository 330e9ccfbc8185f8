package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
	"github.com/rallyhq/rally/internal/bus"
	"github.com/rallyhq/rally/internal/roomevents"
)

var quiet = slog.New(slog.DiscardHandler)

func openBus(t testing.TB, opts bus.Options) *bus.Bus {
	t.Helper()
	opts.ConnectTimeout, opts.Name, opts.Logger = 10*time.Second, t.Name(), quiet
	if opts.URL == "" && opts.ListenAddr == "" {
		opts.ListenAddr = "off"
	}
	b, err := bus.Open(context.Background(), opts)
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

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startService starts chat on b; it is closed when the test ends.
func startService(t testing.TB, b *bus.Bus, opts Options, rooms ...RoomMembers) *Service {
	t.Helper()
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	opts.Log = quiet
	s := New(opts)
	deps := Deps{JetStream: b.JetStream()}
	if len(rooms) > 0 {
		deps.Rooms = rooms[0]
	}
	if err := s.Start(ctxT(t), deps); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func mustChannel(t testing.TB, ch Channel, err error) Channel {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// feed is a running Subscribe whose events a test reads with deadlines.
type feed struct {
	events chan *chatv1.Event
	done   chan error
	cancel context.CancelFunc
}

func subscribe(t testing.TB, s *Service, a Actor, only ...Channel) *feed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &feed{events: make(chan *chatv1.Event, 1024), done: make(chan error, 1), cancel: cancel}
	go func() {
		f.done <- s.Subscribe(ctx, a, only, func(ev *chatv1.Event) error {
			f.events <- ev
			return nil
		})
	}()
	// The first event says the stream is live: nothing sent after it is
	// missed.
	select {
	case ev := <-f.events:
		if ev.GetSubscribed() == nil {
			t.Fatalf("first event is not Subscribed: %v", ev)
		}
	case err := <-f.done:
		t.Fatalf("subscribe ended at once: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("subscribe did not start")
	}
	t.Cleanup(cancel)
	return f
}

// waitFor polls cond until it holds, failing after a deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within 5s", what)
		}
	}
}

// next returns the next event matching keep, failing after a deadline.
func (f *feed) next(t testing.TB, what string, keep func(*chatv1.Event) bool) *chatv1.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-f.events:
			if keep == nil || keep(ev) {
				return ev
			}
		case err := <-f.done:
			t.Fatalf("%s: subscription ended: %v", what, err)
		case <-deadline:
			t.Fatalf("%s: no event within 5s", what)
		}
	}
}

func isMessage(ev *chatv1.Event) bool { return ev.GetMessage() != nil }

func wantCode(t testing.TB, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

func texts(msgs []*chatv1.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetText()
	}
	return out
}

// allHistory pages through a channel from the newest message backwards
// and returns every message, oldest first.
func allHistory(t testing.TB, s *Service, a Actor, ch Channel, page int) []*chatv1.Message {
	t.Helper()
	var pages [][]*chatv1.Message
	cursor := ""
	for range 1000 {
		resp, err := s.History(ctxT(t), a, ch, cursor, page)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetMessages()) > page {
			t.Fatalf("page of %d holds %d", page, len(resp.GetMessages()))
		}
		pages = append(pages, resp.GetMessages())
		if cursor = resp.GetNextCursor(); cursor == "" {
			var out []*chatv1.Message
			for i := len(pages) - 1; i >= 0; i-- {
				out = append(out, pages[i]...)
			}
			return out
		}
	}
	t.Fatal("history does not end")
	return nil
}

// Two players in a group: presence, live messages, edit and delete as
// events; history pages backwards and shows the current state.
func TestChatGroupLiveAndHistory(t *testing.T) {
	b := openBus(t, bus.Options{StoreDir: t.TempDir()})
	defer closeBus(t, b)
	s := startService(t, b, Options{MessagesPerSecond: 1000, MessageBurst: 1000})
	ctx := ctxT(t)
	alice, bob := Player("alice", "Alice"), Player("bob", "Bob")
	lobby := mustChannelFn(t)(GroupChannel("lobby"))

	if _, err := s.Send(ctx, alice, lobby, "too early"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("send before joining: %v", err)
	}
	resp, err := s.Join(ctx, alice, lobby)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetChannel().GetId() != "group:lobby" || resp.GetChannel().GetKind() != chatv1.ChannelKind_CHANNEL_KIND_GROUP {
		t.Fatalf("join answered %v", resp)
	}
	af := subscribe(t, s, alice)

	resp, err = s.Join(ctx, bob, lobby)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(resp.GetMemberIds(), ","); got != "alice,bob" {
		t.Fatalf("members after bob joined: %s", got)
	}
	// Alice's own join, made just before she subscribed, may come first.
	ev := af.next(t, "bob's presence", func(ev *chatv1.Event) bool {
		return ev.GetJoined() != nil && ev.GetJoined().GetUserId() != "alice"
	})
	if ev.GetJoined().GetUserId() != "bob" || ev.GetJoined().GetUsername() != "Bob" || ev.GetChannelId() != "group:lobby" {
		t.Fatalf("presence: %v", ev)
	}
	// Joining again changes nothing and announces nothing.
	if _, err := s.Join(ctx, bob, lobby); err != nil {
		t.Fatal(err)
	}
	bf := subscribe(t, s, bob)

	var ids []uint64
	for i := range 7 {
		from := alice
		if i%2 == 1 {
			from = bob
		}
		m, err := s.Send(ctx, from, lobby, fmt.Sprintf("m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 0 && m.GetId() <= ids[len(ids)-1] {
			t.Fatalf("ids not increasing: %d after %d", m.GetId(), ids[len(ids)-1])
		}
		ids = append(ids, m.GetId())
	}
	for _, f := range []*feed{af, bf} {
		for i := range 7 {
			m := f.next(t, "message", isMessage).GetMessage()
			if m.GetText() != fmt.Sprintf("m%d", i) || m.GetId() != ids[i] {
				t.Fatalf("message %d: got %v", i, m)
			}
		}
	}

	if _, err := s.Edit(ctx, bob, lobby, ids[0], "hijacked"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("editing another's message: %v", err)
	}
	edited, err := s.Edit(ctx, alice, lobby, ids[0], "m0 (edited)")
	if err != nil {
		t.Fatal(err)
	}
	if edited.GetEditedUnixMs() == 0 || edited.GetSenderId() != "alice" || edited.GetText() != "m0 (edited)" {
		t.Fatalf("edit answered %v", edited)
	}
	if err := s.Delete(ctx, bob, lobby, ids[3]); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, bob, lobby, ids[3]); status.Code(err) != codes.NotFound {
		t.Fatalf("deleting twice: %v", err)
	}
	if _, err := s.Edit(ctx, bob, lobby, ids[3], "back"); status.Code(err) != codes.NotFound {
		t.Fatalf("editing a deleted message: %v", err)
	}
	// The server may delete anyone's message.
	if err := s.Delete(ctx, System, lobby, ids[4]); err != nil {
		t.Fatal(err)
	}
	ev = bf.next(t, "edit", func(ev *chatv1.Event) bool { return ev.GetEdited() != nil })
	if ev.GetEdited().GetId() != ids[0] || ev.GetEdited().GetText() != "m0 (edited)" || ev.GetEdited().GetSenderUsername() != "Alice" {
		t.Fatalf("edit event: %v", ev)
	}
	ev = bf.next(t, "delete", func(ev *chatv1.Event) bool { return ev.GetDeleted() != nil })
	if ev.GetDeleted().GetMessageId() != ids[3] || ev.GetDeleted().GetBy() != "bob" {
		t.Fatalf("delete event: %v", ev)
	}
	ev = bf.next(t, "server delete", func(ev *chatv1.Event) bool { return ev.GetDeleted() != nil })
	if ev.GetDeleted().GetMessageId() != ids[4] || ev.GetDeleted().GetBy() != "" {
		t.Fatalf("server delete event: %v", ev)
	}

	want := "m0 (edited),m1,m2,m5,m6"
	for _, page := range []int{1, 2, 3, 50} {
		if got := strings.Join(texts(allHistory(t, s, bob, lobby, page)), ","); got != want {
			t.Fatalf("history in pages of %d: %s, want %s", page, got, want)
		}
	}
	first, err := s.History(ctx, alice, lobby, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(texts(first.GetMessages()), ","); got != "m5,m6" || first.GetNextCursor() == "" {
		t.Fatalf("newest page: %s (cursor %q)", got, first.GetNextCursor())
	}
	if m := first.GetMessages()[0]; m.GetSenderId() != "bob" || m.GetCreatedUnixMs() == 0 {
		t.Fatalf("history message: %v", m)
	}

	// Bob leaves: Alice sees it; Bob can no longer send or read.
	if err := s.Leave(ctx, bob, lobby); err != nil {
		t.Fatal(err)
	}
	ev = af.next(t, "bob left", func(ev *chatv1.Event) bool { return ev.GetLeft() != nil })
	if ev.GetLeft().GetUserId() != "bob" {
		t.Fatalf("leave event: %v", ev)
	}
	if _, err := s.Send(ctx, bob, lobby, "still here?"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("send after leaving: %v", err)
	}
	if _, err := s.History(ctx, bob, lobby, "", 0); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("history after leaving: %v", err)
	}
	if _, err := s.Send(ctx, alice, lobby, "after bob"); err != nil {
		t.Fatal(err)
	}
	af.next(t, "alice's own message", isMessage)
	select {
	case ev := <-bf.events:
		if isMessage(ev) {
			t.Fatalf("bob still receives the group after leaving: %v", ev)
		}
	default:
	}
	if n := testutil.ToFloat64(s.m.rejected.WithLabelValues(rejectNotMember)); n != 3 {
		t.Fatalf("not_member rejections = %v, want 3", n)
	}
}

func mustChannelFn(t testing.TB) func(Channel, error) Channel {
	return func(ch Channel, err error) Channel { return mustChannel(t, ch, err) }
}

// Messages, edits and deletes are in JetStream: a new service on the same
// data directory serves the same history.
func TestChatHistorySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ch := mustChannelFn(t)(GroupChannel("keep"))
	a := Player("alice", "")
	b := openBus(t, bus.Options{StoreDir: dir})
	s := startService(t, b, Options{MessagesPerSecond: 1000, MessageBurst: 1000})
	if _, err := s.Join(ctxT(t), a, ch); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for i := range 5 {
		m, err := s.Send(ctxT(t), a, ch, fmt.Sprint("before ", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.GetId())
	}
	if _, err := s.Edit(ctxT(t), a, ch, ids[1], "edited"); err != nil {
		t.Fatal(err)
	}
	_ = s.Close(context.Background())
	closeBus(t, b)

	b = openBus(t, bus.Options{StoreDir: dir})
	defer closeBus(t, b)
	s = startService(t, b, Options{})
	// Membership survived too, and the chain continues from the stored
	// newest message (this service's cache is empty).
	if _, err := s.Send(ctxT(t), a, ch, "after"); err != nil {
		t.Fatal(err)
	}
	f := subscribe(t, s, a)
	if _, err := s.Send(ctxT(t), a, ch, "live"); err != nil {
		t.Fatal(err)
	}
	// The subscription may also deliver "after", sent just before it
	// opened; it must not miss "live".
	for {
		m := f.next(t, "live after restart", isMessage).GetMessage()
		if m.GetText() == "live" {
			break
		}
		if m.GetText() != "after" {
			t.Fatalf("live after restart: %v", m)
		}
	}
	got := strings.Join(texts(allHistory(t, s, a, ch, 2)), ",")
	if want := "before 0,edited,before 2,before 3,before 4,after,live"; got != want {
		t.Fatalf("history after restart: %s, want %s", got, want)
	}
}

// Size, rate, membership and ownership limits answer with clear codes and
// count in rally_chat_rejected_total.
func TestChatLimits(t *testing.T) {
	b := openBus(t, bus.Options{StoreDir: t.TempDir()})
	defer closeBus(t, b)
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s := startService(t, b, Options{MaxMessageBytes: 16, MessagesPerSecond: 2, MessageBurst: 3, Now: clock})
	ctx := ctxT(t)
	a := Player("alice", "")
	ch := mustChannelFn(t)(GroupChannel("limits"))
	if _, err := s.Join(ctx, a, ch); err != nil {
		t.Fatal(err)
	}

	_, err := s.Send(ctx, a, ch, strings.Repeat("x", 17))
	wantCode(t, err, codes.InvalidArgument, "17 bytes")
	if !strings.Contains(err.Error(), "at most 16") {
		t.Fatalf("size error does not say the limit: %v", err)
	}
	wantCode(t, mustErr(s.Send(ctx, a, ch, "")), codes.InvalidArgument, "empty")
	wantCode(t, mustErr(s.Send(ctx, a, ch, "\xff\xfe")), codes.InvalidArgument, "not UTF-8")
	if _, err := s.Send(ctx, a, ch, strings.Repeat("x", 16)); err != nil {
		t.Fatal(err)
	}
	// Burst 3: one used above, two more, then refused until tokens refill.
	for range 2 {
		if _, err := s.Send(ctx, a, ch, "ok"); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.Send(ctx, a, ch, "flood")
	wantCode(t, err, codes.ResourceExhausted, "over the rate")
	if !strings.Contains(err.Error(), "retry in 500ms") {
		t.Fatalf("rate error does not say when to retry: %v", err)
	}
	// Another player has their own bucket.
	bob := Player("bob", "")
	if _, err := s.Join(ctx, bob, ch); err != nil {
		t.Fatal(err)
	}
	m, err := s.Send(ctx, bob, ch, "mine")
	if err != nil {
		t.Fatal(err)
	}
	advance(500 * time.Millisecond)
	if _, err := s.Send(ctx, a, ch, "refilled"); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	// Edits take from the same bucket.
	wantCode(t, mustErr(s.Edit(ctx, a, ch, m.GetId(), "x")), codes.PermissionDenied, "edit bob's")
	advance(time.Second)

	// Direct channels are between their two players only.
	dm := mustChannelFn(t)(DirectChannel("bob", "carol"))
	wantCode(t, mustErr(s.Send(ctx, a, dm, "hi")), codes.PermissionDenied, "a third player in a direct channel")
	wantCode(t, mustErr(s.History(ctx, a, dm, "", 0)), codes.PermissionDenied, "a third player reads a direct channel")
	// Unknown message ids and ids of another channel's messages.
	other := mustChannelFn(t)(GroupChannel("other"))
	if _, err := s.Join(ctx, a, other); err != nil {
		t.Fatal(err)
	}
	wantCode(t, mustErr(s.Edit(ctx, a, other, m.GetId(), "x")), codes.NotFound, "message of another channel")
	wantCode(t, s.Delete(ctx, a, ch, 1<<40), codes.NotFound, "unknown id")
	wantCode(t, s.Delete(ctx, a, ch, 0), codes.InvalidArgument, "id 0")
	// Cursors of another channel or not from History.
	first, err := s.History(ctx, a, ch, "", 1)
	if err != nil || first.GetNextCursor() == "" {
		t.Fatalf("history: %v %v", first, err)
	}
	if _, err := s.Send(ctx, a, other, "x"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, mustErr(s.History(ctx, a, other, first.GetNextCursor(), 1)), codes.InvalidArgument, "a cursor of another channel")
	wantCode(t, mustErr(s.History(ctx, a, ch, "garbage!", 1)), codes.InvalidArgument, "a made-up cursor")
	wantCode(t, mustErr(s.History(ctx, a, ch, "", MaxPage+1)), codes.InvalidArgument, "limit over the maximum")

	for reason, want := range map[string]float64{
		rejectTooLarge: 1, rejectInvalid: 6, rejectRate: 1, rejectForbidden: 1, rejectNotMember: 2,
	} {
		if got := testutil.ToFloat64(s.m.rejected.WithLabelValues(reason)); got != want {
			t.Errorf("rally_chat_rejected_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
}

func mustErr[T any](_ T, err error) error { return err }

// The game's moderation hook refuses or rewrites messages and edits; the
// server's own messages bypass it.
func TestChatModerationHook(t *testing.T) {
	b := openBus(t, bus.Options{StoreDir: t.TempDir()})
	defer closeBus(t, b)
	s := startService(t, b, Options{MessagesPerSecond: 1000, MessageBurst: 1000})
	ctx := ctxT(t)
	a := Player("alice", "Alice")
	ch := mustChannelFn(t)(GroupChannel("modded"))
	if _, err := s.Join(ctx, a, ch); err != nil {
		t.Fatal(err)
	}
	var seen []Draft
	var mu sync.Mutex
	s.SetModerator(func(ctx context.Context, d Draft) (string, error) {
		mu.Lock()
		seen = append(seen, d)
		mu.Unlock()
		switch {
		case strings.Contains(d.Text, "spam"):
			return "", errors.New("no spam here")
		case strings.Contains(d.Text, "banned"):
			return "", status.Error(codes.FailedPrecondition, "you are muted")
		case strings.Contains(d.Text, "long"):
			return strings.Repeat("y", DefaultMaxMessageBytes+1), nil
		}
		return strings.ReplaceAll(d.Text, "darn", "****"), nil
	})

	m, err := s.Send(ctx, a, ch, "darn it")
	if err != nil {
		t.Fatal(err)
	}
	if m.GetText() != "**** it" {
		t.Fatalf("rewrite: %q", m.GetText())
	}
	_, err = s.Send(ctx, a, ch, "buy spam")
	wantCode(t, err, codes.PermissionDenied, "refused by the hook")
	if !strings.Contains(err.Error(), "no spam here") {
		t.Fatalf("the hook's reason is lost: %v", err)
	}
	wantCode(t, mustErr(s.Send(ctx, a, ch, "banned words")), codes.FailedPrecondition, "hook's own status")
	wantCode(t, mustErr(s.Send(ctx, a, ch, "long")), codes.InvalidArgument, "hook rewrite over the size limit")
	ed, err := s.Edit(ctx, a, ch, m.GetId(), "darn again")
	if err != nil {
		t.Fatal(err)
	}
	if ed.GetText() != "**** again" {
		t.Fatalf("edit rewrite: %q", ed.GetText())
	}
	if _, err := s.Send(ctx, System, ch, "server says darn spam"); err != nil {
		t.Fatalf("the server's message went through the hook: %v", err)
	}
	mu.Lock()
	if len(seen) != 5 || seen[4].Editing != m.GetId() || seen[0].SenderUsername != "Alice" || seen[0].Channel != ch {
		t.Fatalf("the hook saw %+v", seen)
	}
	mu.Unlock()
	s.SetModerator(nil)
	if _, err := s.Send(ctx, a, ch, "spam is fine now"); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(texts(allHistory(t, s, a, ch, 10)), ",")
	if want := "**** again,server says darn spam,spam is fine now"; got != want {
		t.Fatalf("history: %s", got)
	}
	// The rewrite over the size limit counts as too_large, not moderation.
	if n := testutil.ToFloat64(s.m.rejected.WithLabelValues(rejectModeration)); n != 2 {
		t.Fatalf("moderation rejections = %v, want 2", n)
	}
}

// A direct message reaches the other player without them joining first;
// both see each other's presence.
func TestChatDirectChannel(t *testing.T) {
	b := openBus(t, bus.Options{StoreDir: t.TempDir()})
	defer closeBus(t, b)
	s := startService(t, b, Options{})
	ctx := ctxT(t)
	a, c := Player("alice", "Alice"), Player("carol", "Carol")
	cf := subscribe(t, s, c) // carol is in no channel yet
	dm := mustChannelFn(t)(DirectChannel("carol", "alice"))
	if dm.ID() != "direct:alice:carol" {
		t.Fatalf("canonical id: %s", dm.ID())
	}
	if _, err := s.Send(ctx, a, dm, "psst"); err != nil {
		t.Fatal(err)
	}
	m := cf.next(t, "direct message", isMessage).GetMessage()
	if m.GetText() != "psst" || m.GetChannelId() != "direct:alice:carol" || m.GetSenderId() != "alice" {
		t.Fatalf("carol got %v", m)
	}
	resp, err := s.Join(ctx, c, dm)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetChannel().GetName() != "alice" || strings.Join(resp.GetMemberIds(), ",") != "alice,carol" {
		t.Fatalf("join: %v", resp)
	}
	if h, err := s.History(ctx, c, dm, "", 0); err != nil || len(h.GetMessages()) != 1 {
		t.Fatalf("carol's history: %v %v", h, err)
	}
}

// Room channels belong to a Rally room's players, learned from the
// room-event stream; leaving the room ends access.
func TestChatRoomChannelFollowsRoomEvents(t *testing.T) {
	b := openBus(t, bus.Options{StoreDir: t.TempDir()})
	defer closeBus(t, b)
	events := roomevents.New(b.JetStream(), roomevents.Options{}, nil, quiet)
	if err := events.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = events.Close(context.Background()) }()
	seats, err := FollowRooms(ctxT(t), b.JetStream(), roomevents.DefaultStream, 0, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer seats.Stop()
	s := startService(t, b, Options{RoomWait: 300 * time.Millisecond, MessagesPerSecond: 1000, MessageBurst: 1000}, seats)
	ctx := ctxT(t)
	a, bob := Player("alice", ""), Player("bob", "")
	room := mustChannelFn(t)(RoomChannel("r1"))

	var seq uint64
	publish := func(typ roomevents.Type, user string) {
		seq++
		if err := events.Publish(roomevents.Event{Type: typ, RoomID: "r1", UserID: user, Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	publish(roomevents.RoomCreated, "")
	publish(roomevents.PlayerJoined, "alice")
	// Joined right after the room event was queued: Join waits for it.
	if _, err := s.Join(ctx, a, room); err != nil {
		t.Fatal(err)
	}
	af := subscribe(t, s, a)
	start := time.Now()
	wantCode(t, mustErr(s.Send(ctx, bob, room, "let me in")), codes.PermissionDenied, "not in the room")
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Fatalf("refused after %s without waiting for the seat", waited)
	}
	publish(roomevents.PlayerJoined, "bob")
	if _, err := s.Send(ctx, bob, room, "hello room"); err != nil {
		t.Fatal(err)
	}
	if m := af.next(t, "room message", isMessage).GetMessage(); m.GetText() != "hello room" {
		t.Fatalf("alice got %v", m)
	}
	publish(roomevents.PlayerDropped, "bob") // seat held: still in
	if _, err := s.Send(ctx, bob, room, "lagging"); err != nil {
		t.Fatal(err)
	}
	publish(roomevents.PlayerLeft, "alice")
	waitFor(t, "alice's seat given up", func() bool { return !seats.Seated("r1", "alice") })
	wantCode(t, mustErr(s.History(ctx, a, room, "", 0)), codes.PermissionDenied, "history after leaving the room")
	publish(roomevents.RoomClosed, "")
	waitFor(t, "seats cleared when the room closed", func() bool { return !seats.Seated("r1", "bob") })
}

// Two nodes share one NATS: a message sent through either reaches
// subscribers of both, and concurrent writers on both keep one linked,
// complete history.
func TestChatTwoNodesShareChannels(t *testing.T) {
	b1 := openBus(t, bus.Options{StoreDir: t.TempDir(), ListenAddr: "127.0.0.1:0"})
	defer closeBus(t, b1)
	b2 := openBus(t, bus.Options{URL: "nats://" + b1.ListenAddr()})
	defer closeBus(t, b2)
	n1 := startService(t, b1, Options{MessagesPerSecond: 1e6, MessageBurst: 1e6})
	n2 := startService(t, b2, Options{MessagesPerSecond: 1e6, MessageBurst: 1e6})
	ctx := ctxT(t)
	ch := mustChannelFn(t)(GroupChannel("shared"))
	a, bob := Player("alice", ""), Player("bob", "")
	if _, err := n1.Join(ctx, a, ch); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.Join(ctx, bob, ch); err != nil {
		t.Fatal(err)
	}
	af := subscribe(t, n1, a)
	bf := subscribe(t, n2, bob)

	const each = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, w := range []struct {
		s    *Service
		a    Actor
		name string
	}{{n1, a, "a"}, {n2, bob, "b"}} {
		wg.Go(func() {
			for i := range each {
				if _, err := w.s.Send(ctx, w.a, ch, fmt.Sprintf("%s%02d", w.name, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, f := range []*feed{af, bf} {
		var last uint64
		for range 2 * each {
			m := f.next(t, "message from either node", isMessage).GetMessage()
			if m.GetId() <= last {
				t.Fatalf("live order: %d after %d", m.GetId(), last)
			}
			last = m.GetId()
		}
	}
	for _, n := range []*Service{n1, n2} {
		hist := allHistory(t, n, a, ch, 7)
		if len(hist) != 2*each {
			t.Fatalf("history has %d messages, want %d", len(hist), 2*each)
		}
		next := map[string]int{}
		for i, m := range hist {
			if i > 0 && m.GetId() <= hist[i-1].GetId() {
				t.Fatalf("history out of order at %d", i)
			}
			w := m.GetText()[:1]
			if m.GetText() != fmt.Sprintf("%s%02d", w, next[w]) {
				t.Fatalf("writer %s: got %s, want #%d", w, m.GetText(), next[w])
			}
			next[w]++
		}
	}
	t.Logf("write conflicts retried: node1 %v, node2 %v",
		testutil.ToFloat64(n1.m.conflicts), testutil.ToFloat64(n2.m.conflicts))
}

// A subscriber that stops reading is ended with ResourceExhausted rather
// than holding up the others.
func TestChatSlowSubscriberIsDropped(t *testing.T) {
	b := openBus(t, bus.Options{StoreDir: t.TempDir()})
	defer closeBus(t, b)
	s := startService(t, b, Options{SubscriberQueue: 4, MessagesPerSecond: 1000, MessageBurst: 1000})
	ctx := ctxT(t)
	a, slow := Player("alice", ""), Player("slow", "")
	ch := mustChannelFn(t)(GroupChannel("busy"))
	for _, p := range []Actor{a, slow} {
		if _, err := s.Join(ctx, p, ch); err != nil {
			t.Fatal(err)
		}
	}
	af := subscribe(t, s, a)
	block, ready := make(chan struct{}), make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		ended <- s.Subscribe(ctx, slow, nil, func(ev *chatv1.Event) error {
			if ev.GetSubscribed() != nil {
				if got := ev.GetSubscribed().GetChannelIds(); len(got) != 1 || got[0] != ch.ID() {
					t.Errorf("subscribed to %v", got)
				}
				close(ready)
				return nil
			}
			<-block // a client that stopped reading
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-ended:
		t.Fatalf("ended early: %v", err)
	}
	// Paced by the fast reader, so only the slow one falls behind.
	for i := range 10 {
		if _, err := s.Send(ctx, a, ch, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		if m := af.next(t, "fast subscriber", isMessage).GetMessage(); m.GetText() != fmt.Sprint(i) {
			t.Fatalf("fast subscriber got %v", m)
		}
	}
	waitFor(t, "slow subscriber dropped", func() bool { return testutil.ToFloat64(s.m.dropped) == 1 })
	close(block)
	select {
	case err := <-ended:
		wantCode(t, err, codes.ResourceExhausted, "slow subscriber")
	case <-time.After(5 * time.Second):
		t.Fatal("slow subscriber's stream did not end")
	}
	if n := testutil.ToFloat64(s.m.dropped); n != 1 {
		t.Fatalf("dropped = %v", n)
	}
}
