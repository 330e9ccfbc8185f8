package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/chat"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// chatFeed is one SDK client's SubscribeChat, its events read with
// deadlines.
type chatFeed struct {
	events chan *chatv1.Event
	ended  chan error
}

// subscribeChat subscribes c to all its channels and returns once the
// server has confirmed the stream (its first event).
func subscribeChat(t *testing.T, ctx context.Context, c *rally.Client) *chatFeed {
	t.Helper()
	f := &chatFeed{events: make(chan *chatv1.Event, 4096), ended: make(chan error, 1)}
	go func() { f.ended <- c.SubscribeChat(ctx, func(ev *chatv1.Event) { f.events <- ev }) }()
	select {
	case ev := <-f.events:
		if ev.GetSubscribed() == nil {
			t.Fatalf("%s: first event is not Subscribed: %v", c.UserID(), ev)
		}
	case err := <-f.ended:
		t.Fatalf("%s: subscribe failed: %v", c.UserID(), err)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: subscribe not confirmed", c.UserID())
	}
	return f
}

// next returns the next event keep accepts.
func (f *chatFeed) next(t *testing.T, what string, keep func(*chatv1.Event) bool) *chatv1.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-f.events:
			if keep(ev) {
				return ev
			}
		case err := <-f.ended:
			t.Fatalf("%s: stream ended: %v", what, err)
		case <-deadline:
			t.Fatalf("%s: nothing within 10s", what)
		}
	}
}

// chatPlayer logs a device in and connects it without automatic
// reconnect (the test reconnects by hand after the restart).
func chatPlayer(t *testing.T, ctx context.Context, s *Server, name string) (*rally.Session, *rally.Client) {
	t.Helper()
	sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-"+name+"-0123456789", name, true)
	if err != nil {
		t.Fatal(err)
	}
	return sess, redial(t, ctx, s, sess)
}

// redial connects a session to s (its address may have changed).
func redial(t *testing.T, ctx context.Context, s *Server, sess *rally.Session) *rally.Client {
	t.Helper()
	sess.BaseURL = "http://" + s.Addrs().HTTP
	c, err := rally.Dial(ctx, sess, rally.Options{DisableReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func chatMessages(ev *chatv1.Event) bool { return ev.GetMessage() != nil }

// chatHistory pages backwards through a channel over the socket and
// returns it oldest first.
func chatHistory(t *testing.T, ctx context.Context, c *rally.Client, channelID string, page uint32) []*chatv1.Message {
	t.Helper()
	var pages [][]*chatv1.Message
	cursor := ""
	for range 100 {
		resp, err := c.ChatHistory(ctx, channelID, cursor, page)
		if err != nil {
			t.Fatal(err)
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

func describeHistory(msgs []*chatv1.Message) string {
	parts := make([]string, len(msgs))
	for i, m := range msgs {
		parts[i] = fmt.Sprintf("%d:%s:%s", m.GetId(), m.GetSenderUsername(), m.GetText())
	}
	return strings.Join(parts, " ")
}

func serverCode(err error) rtv1.Error_Code {
	var se *rally.ServerError
	if errors.As(err, &se) {
		return se.Code()
	}
	return rtv1.Error_CODE_UNSPECIFIED
}

// The acceptance test: two SDK clients chat in a group channel over real
// WebSockets; Rally restarts on the same data directory in between; the
// history is intact and in order afterwards, and each sees the other's
// presence before and after.
func TestChatAcrossRestart(t *testing.T) {
	cfg := testConfig(t)
	s1 := startServer(t, cfg)
	stopped := false
	defer func() {
		if !stopped {
			shutdown(t, s1)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The clients reconnect by hand, with the sessions they logged in with:
	// the new process must accept them (its signing key is in the store).
	aliceSess, alice := chatPlayer(t, ctx, s1, "alice")
	bobSess, bob := chatPlayer(t, ctx, s1, "bob")

	joined, err := alice.JoinGroupChat(ctx, "guild")
	if err != nil {
		t.Fatal(err)
	}
	guild := joined.GetChannel().GetId()
	if guild != "group:guild" {
		t.Fatalf("channel id %q", guild)
	}
	af := subscribeChat(t, ctx, alice)
	if _, err := bob.JoinGroupChat(ctx, "guild"); err != nil {
		t.Fatal(err)
	}
	// Alice's own join, made just before she subscribed, may come first.
	ev := af.next(t, "alice sees bob join", func(ev *chatv1.Event) bool {
		return ev.GetJoined() != nil && ev.GetJoined().GetUserId() != alice.UserID()
	})
	if ev.GetJoined().GetUserId() != bob.UserID() || ev.GetJoined().GetUsername() != "bob" || ev.GetChannelId() != guild {
		t.Fatalf("presence: %v", ev)
	}
	bf := subscribeChat(t, ctx, bob)

	// A conversation: each line is received live by the other player.
	lines := []struct {
		from *rally.Client
		text string
	}{{alice, "anyone up for a raid?"}, {bob, "sure, give me 5"}, {alice, "meet at the gate"},
		{bob, "on my way"}, {alice, "bring potions"}, {bob, "typo: potoins"}}
	var sent []*chatv1.Message
	for _, l := range lines {
		m, err := l.from.SendChat(ctx, guild, l.text)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
		// Both hear every line, their own included, in the order sent.
		for _, f := range []*chatFeed{af, bf} {
			got := f.next(t, "live message", chatMessages).GetMessage()
			if got.GetId() != m.GetId() || got.GetText() != l.text || got.GetSenderId() != l.from.UserID() {
				t.Fatalf("live: got %v, sent %v", got, m)
			}
		}
	}
	if _, err := bob.EditChat(ctx, guild, sent[5].GetId(), "typo: potions"); err != nil {
		t.Fatal(err)
	}
	if ev := af.next(t, "edit", func(ev *chatv1.Event) bool { return ev.GetEdited() != nil }); ev.GetEdited().GetText() != "typo: potions" {
		t.Fatalf("edit event %v", ev)
	}
	if err := alice.DeleteChat(ctx, guild, sent[4].GetId()); err != nil {
		t.Fatal(err)
	}
	if ev := bf.next(t, "delete", func(ev *chatv1.Event) bool { return ev.GetDeleted() != nil }); ev.GetDeleted().GetMessageId() != sent[4].GetId() {
		t.Fatalf("delete event %v", ev)
	}
	// Limits answer over the socket with the mirrored codes.
	if _, err := alice.SendChat(ctx, guild, strings.Repeat("x", cfg.Chat.MaxMessageBytes+1)); serverCode(err) != rtv1.Error_CODE_BAD_REQUEST {
		t.Fatalf("oversized message: %v", err)
	}
	if err := alice.DeleteChat(ctx, guild, sent[1].GetId()); serverCode(err) != rtv1.Error_CODE_PERMISSION_DENIED {
		t.Fatalf("deleting bob's message: %v", err)
	}
	before := chatHistory(t, ctx, bob, guild, 2)
	want := "anyone up for a raid?|sure, give me 5|meet at the gate|on my way|typo: potions"
	if got := strings.Join(chatTexts(before), "|"); got != want {
		t.Fatalf("history before restart: %s", got)
	}

	// Restart on the same data directory.
	shutdown(t, s1)
	stopped = true
	for name, f := range map[string]*chatFeed{"alice": af, "bob": bf} {
		select {
		case err := <-f.ended:
			if !errors.Is(err, rally.ErrDisconnected) && serverCode(err) == rtv1.Error_CODE_UNSPECIFIED {
				t.Fatalf("%s's stream ended with %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s's stream outlived the server", name)
		}
	}
	s2 := startServer(t, cfg)
	defer shutdown(t, s2)
	alice = redial(t, ctx, s2, aliceSess)
	bob = redial(t, ctx, s2, bobSess)

	after := chatHistory(t, ctx, alice, guild, 3)
	if got, wantH := describeHistory(after), describeHistory(before); got != wantH {
		t.Fatalf("history changed across the restart:\n got %s\nwant %s", got, wantH)
	}
	if !slices.IsSortedFunc(after, func(a, b *chatv1.Message) int { return int(a.GetId()) - int(b.GetId()) }) {
		t.Fatalf("history out of order: %s", describeHistory(after))
	}
	if after[4].GetEditedUnixMs() == 0 {
		t.Fatalf("the edit was lost: %v", after[4])
	}

	// Memberships survived: both subscribe again without joining, see a
	// newcomer's presence, and talk on.
	af = subscribeChat(t, ctx, alice)
	bf = subscribeChat(t, ctx, bob)
	carol := player(t, s2, "carol", rally.Options{})
	if _, err := carol.JoinGroupChat(ctx, "guild"); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*chatFeed{"alice": af, "bob": bf} {
		if ev := f.next(t, name+" sees carol", func(ev *chatv1.Event) bool { return ev.GetJoined() != nil }); ev.GetJoined().GetUserId() != carol.UserID() {
			t.Fatalf("%s: presence %v", name, ev)
		}
	}
	m, err := alice.SendChat(ctx, guild, "welcome back")
	if err != nil {
		t.Fatal(err)
	}
	if m.GetId() <= before[len(before)-1].GetId() {
		t.Fatalf("new id %d not after the old ones", m.GetId())
	}
	if got := bf.next(t, "message after restart", chatMessages).GetMessage(); got.GetText() != "welcome back" {
		t.Fatalf("bob got %v", got)
	}
	if err := bob.LeaveChat(ctx, guild); err != nil {
		t.Fatal(err)
	}
	if ev := af.next(t, "bob leaves", func(ev *chatv1.Event) bool { return ev.GetLeft() != nil }); ev.GetLeft().GetUserId() != bob.UserID() {
		t.Fatalf("leave %v", ev)
	}
	if _, err := bob.SendChat(ctx, guild, "hello?"); serverCode(err) != rtv1.Error_CODE_PERMISSION_DENIED {
		t.Fatalf("send after leaving: %v", err)
	}
	final := chatHistory(t, ctx, carol, guild, 0)
	if got := strings.Join(chatTexts(final), "|"); got != want+"|welcome back" {
		t.Fatalf("final history: %s", got)
	}
	closeClients(alice, bob, carol)
}

// closeClients closes clients while their server is up, so the WebSocket
// closing handshake is answered at once.
func closeClients(cs ...*rally.Client) {
	for _, c := range cs {
		_ = c.Close()
	}
}

func chatTexts(msgs []*chatv1.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetText()
	}
	return out
}

// A room's channel is its players': joined over the socket right after
// joining the room, refused to a player outside it; the game's moderation
// hook, installed before Start, rewrites and refuses; the rate limit
// answers RESOURCE_EXHAUSTED; the server posts as itself.
func TestChatRoomChannelModerationAndLimits(t *testing.T) {
	cfg := testConfig(t)
	cfg.Chat.MessagesPerSecond, cfg.Chat.MessageBurst = 1, 3
	s := New(cfg, slog.New(slog.DiscardHandler))
	s.Chat().SetModerator(func(_ context.Context, d chat.Draft) (string, error) {
		if strings.Contains(d.Text, "cheat") {
			return "", status.Error(codes.FailedPrecondition, "no cheating talk")
		}
		return strings.ReplaceAll(d.Text, "noob", "friend"), nil
	})
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	if err := s.Start(sctx); err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	alice := player(t, s, "alice", rally.Options{})
	bob := player(t, s, "bob", rally.Options{})
	joined, err := alice.CreateRoom(ctx, &rtv1.CreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	roomID := joined.GetRoom().GetId()
	cj, err := alice.JoinRoomChat(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	roomChat := cj.GetChannel().GetId()
	if _, err := bob.JoinRoomChat(ctx, roomID); serverCode(err) != rtv1.Error_CODE_PERMISSION_DENIED {
		t.Fatalf("bob joined the chat of a room he is not in: %v", err)
	}
	if _, err := bob.JoinRoom(ctx, &rtv1.JoinRoom{RoomId: roomID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomChat(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	bf := subscribeChat(t, ctx, bob)

	m, err := alice.SendChat(ctx, roomChat, "gg noob")
	if err != nil {
		t.Fatal(err)
	}
	if m.GetText() != "gg friend" {
		t.Fatalf("not rewritten: %q", m.GetText())
	}
	if got := bf.next(t, "room message", chatMessages).GetMessage(); got.GetText() != "gg friend" {
		t.Fatalf("bob got %v", got)
	}
	if _, err := alice.SendChat(ctx, roomChat, "how to cheat"); serverCode(err) != rtv1.Error_CODE_FAILED_PRECONDITION {
		t.Fatalf("moderation refusal: %v", err)
	}
	// Burst 3 at 1/s: two of the three tokens were used above.
	var limited error
	for i := range 5 {
		if _, err := alice.SendChat(ctx, roomChat, fmt.Sprint("spam ", i)); err != nil {
			limited = err
			break
		}
	}
	if serverCode(limited) != rtv1.Error_CODE_RESOURCE_EXHAUSTED || !strings.Contains(limited.Error(), "retry in") {
		t.Fatalf("rate limit: %v", limited)
	}
	// The server posts as itself, past the hook and the limit.
	roomCh, err := chat.RoomChannel(roomID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Chat().Send(ctx, chat.System, roomCh, "round 2 starts, noob"); err != nil {
		t.Fatal(err)
	}
	for {
		got := bf.next(t, "server message", chatMessages).GetMessage()
		if got.GetSenderId() == "" {
			if got.GetText() != "round 2 starts, noob" {
				t.Fatalf("server message: %v", got)
			}
			break
		}
	}
	if err := alice.LeaveRoom(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "alice loses the room's chat with her seat", func() (bool, string) {
		_, err := alice.SendChat(ctx, roomChat, "still here")
		return serverCode(err) == rtv1.Error_CODE_PERMISSION_DENIED, fmt.Sprint(err)
	})
	closeClients(alice, bob)
	metrics := gatherChatRejections(t, s)
	for _, reason := range []string{"moderation", "rate_limited", "not_member"} {
		if metrics[reason] < 1 {
			t.Errorf("rally_chat_rejected_total{reason=%q} = %v", reason, metrics[reason])
		}
	}
}

func gatherChatRejections(t *testing.T, s *Server) map[string]float64 {
	t.Helper()
	families, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "rally_chat_rejected_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// Send-to-receive latency between two SDK clients over real WebSockets,
// through JetStream and this node's live delivery. The figures go to
// docs/benchmarks.md.
func TestChatLatencyOverTheSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("measures latency")
	}
	cfg := testConfig(t)
	cfg.Chat.MessagesPerSecond, cfg.Chat.MessageBurst = 1e6, 1e6
	// Calls count against the socket's own flood guard too.
	cfg.Realtime.MaxMsgsPerSec, cfg.Realtime.MsgBurst = 1e6, 1e6
	s := startServer(t, cfg)
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := player(t, s, "alice", rally.Options{})
	bob := player(t, s, "bob", rally.Options{})
	for _, c := range []*rally.Client{alice, bob} {
		if _, err := c.JoinGroupChat(ctx, "latency"); err != nil {
			t.Fatal(err)
		}
	}
	const n = 300
	var mu sync.Mutex
	sentAt := map[string]time.Time{}
	lat := make([]time.Duration, 0, n)
	done, ready := make(chan struct{}), make(chan struct{})
	go func() {
		_ = bob.SubscribeChat(ctx, func(ev *chatv1.Event) {
			if ev.GetSubscribed() != nil {
				close(ready)
			}
			m := ev.GetMessage()
			if m == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if at, ok := sentAt[m.GetText()]; ok {
				lat = append(lat, time.Since(at))
				if len(lat) == n {
					close(done)
				}
			}
		})
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("bob's subscription not confirmed")
	}
	// Warm up, then measure one message at a time (no pipelining), so each
	// figure is one message's full trip.
	if _, err := alice.SendChat(ctx, "group:latency", "warm-up"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range n {
		text := fmt.Sprint("m", i)
		mu.Lock()
		sentAt[text] = time.Now()
		mu.Unlock()
		if _, err := alice.SendChat(ctx, "group:latency", text); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		mu.Lock()
		t.Fatalf("bob received %d of %d", len(lat), n)
	}
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	closeClients(alice, bob)
	t.Logf("chat send->receive over WebSocket, %d messages one at a time: p50 %s, p90 %s, p99 %s, max %s; %.0f sends/s sequential",
		n, pct(0.5), pct(0.9), pct(0.99), lat[len(lat)-1], float64(n)/elapsed.Seconds())
	if pct(0.99) > 500*time.Millisecond {
		t.Fatalf("p99 %s: chat delivery is far too slow", pct(0.99))
	}
}

// ChatService is on gRPC too, with the session in the metadata; a
// Subscribe stream over gRPC sees what SDK clients say.
func TestChatOverGRPC(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-grpc-chat-0123", "watcher", true)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := chatv1.NewChatServiceClient(conn)
	if _, err := client.Join(ctx, &chatv1.JoinRequest{Target: &chatv1.JoinRequest_Group{Group: "g"}}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	authed := bearer(ctx, sess.Token)
	if _, err := client.Join(authed, &chatv1.JoinRequest{Target: &chatv1.JoinRequest_Group{Group: "g"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Send(authed, &chatv1.SendRequest{ChannelId: "group:not..valid", Text: "x"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad channel id: %v", err)
	}
	sctx, stop := context.WithCancel(authed)
	stream, err := client.Subscribe(sctx, &chatv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := stream.Recv(); err != nil || ev.GetSubscribed() == nil || ev.GetSubscribed().GetChannelIds()[0] != "group:g" {
		t.Fatalf("first event %v %v", ev, err)
	}
	_, player := chatPlayer(t, ctx, s, "speaker")
	if _, err := player.JoinGroupChat(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if _, err := player.SendChat(ctx, "group:g", "over the socket"); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m := ev.GetMessage(); m != nil {
			if m.GetText() != "over the socket" || m.GetSenderUsername() != "speaker" {
				t.Fatalf("gRPC subscriber got %v", m)
			}
			break
		}
	}
	stop()
	closeClients(player)
}
