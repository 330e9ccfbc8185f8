package server

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/room"
	"github.com/rallyhq/rally/internal/roomevents"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// player authenticates a device and connects it.
func player(t *testing.T, s *Server, name string, opts rally.Options) *rally.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := "http://" + s.Addrs().HTTP
	sess, err := rally.AuthenticateDevice(ctx, base, "device-"+name+"-0123456789", name, true)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rally.Dial(ctx, sess, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually polls cond until it holds or the deadline passes; it waits on
// the clock, not on a fixed sleep, and reports what it last saw.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last string
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		<-tick.C
	}
	t.Fatalf("%s: not within %s; last: %s", what, within, last)
}

func serverPositions(t *testing.T, s *Server, roomID string) map[uint32][2]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := s.Rooms().Signal(ctx, roomID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var byID map[string][2]float64
	if err := json.Unmarshal(raw, &byID); err != nil {
		t.Fatal(err)
	}
	out := map[uint32][2]float64{}
	for k, v := range byID {
		id, _ := strconv.ParseUint(k, 10, 32)
		out[uint32(id)] = v
	}
	return out
}

// converged reports whether a client's view matches the server's positions
// to within the quantum.
func converged(c *rally.Client, roomID string, want map[uint32][2]float64) (bool, string) {
	got := c.State(roomID).Entities()
	if len(got) != len(want) {
		return false, fmt.Sprintf("%s sees %d entities, server has %d", c.UserID(), len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok || math.Abs(g[0]-w[0]) > 0.006 || math.Abs(g[1]-w[1]) > 0.006 {
			return false, fmt.Sprintf("%s entity %d at %v, server %v", c.UserID(), id, g, w)
		}
	}
	return true, ""
}

// Three players join the example arena and move; one drops and reconnects;
// everyone converges to the server's state; the room's history replays
// from JetStream in order.
func TestArenaGameWithReconnect(t *testing.T) {
	cfg := testConfig(t)
	cfg.Realtime.ReconnectHold = 10 * time.Second
	s := startServer(t, cfg)
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Bob may reconnect again while the server shuts down at the end: only
	// the first reconnect is the one this test waits for.
	reconnected := make(chan struct{})
	var reconnectOnce sync.Once
	alice := player(t, s, "alice", rally.Options{})
	bob := player(t, s, "bob", rally.Options{OnReconnect: func() { reconnectOnce.Do(func() { close(reconnected) }) }})
	carol := player(t, s, "carol", rally.Options{})

	joined, err := alice.CreateRoom(ctx, &rtv1.CreateRoom{Handler: room.ArenaHandler, TickRate: 30})
	if err != nil {
		t.Fatal(err)
	}
	roomID := joined.GetRoom().GetId()
	if len(joined.GetRoom().GetSchema()) != 2 {
		t.Fatalf("schema not announced: %v", joined.GetRoom())
	}
	for _, c := range []*rally.Client{bob, carol} {
		if _, err := c.JoinRoom(ctx, &rtv1.JoinRoom{RoomId: roomID}); err != nil {
			t.Fatal(err)
		}
	}

	// Everyone moves in a different direction.
	dirs := map[*rally.Client][2]float64{alice: {1, 0}, bob: {0, 1}, carol: {-1, -1}}
	for c, d := range dirs {
		if err := c.Send(roomID, room.ArenaOpMove, room.EncodeArenaMove(nil, d[0], d[1])); err != nil {
			t.Fatal(err)
		}
	}
	start := serverPositions(t, s, roomID)
	eventually(t, 10*time.Second, "players move", func() (bool, string) {
		now := serverPositions(t, s, roomID)
		moved := 0
		for id, p := range now {
			if p != start[id] {
				moved++
			}
		}
		return moved == 3, fmt.Sprint(now)
	})

	// Bob's connection dies; his seat is held and he comes back.
	bob.Drop()
	<-reconnected
	if err := bob.Send(roomID, room.ArenaOpMove, room.EncodeArenaMove(nil, 0, 0)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*rally.Client{alice, carol} {
		if err := c.Send(roomID, room.ArenaOpMove, room.EncodeArenaMove(nil, 0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	// Once everyone has stopped, every view equals the server's state.
	eventually(t, 10*time.Second, "views converge", func() (bool, string) {
		want := serverPositions(t, s, roomID)
		for _, c := range []*rally.Client{alice, bob, carol} {
			if ok, why := converged(c, roomID, want); !ok {
				return false, why
			}
		}
		return true, ""
	})

	for _, c := range []*rally.Client{alice, bob, carol} {
		if err := c.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
	}

	// The history: created, three joins, bob dropped and rejoined, three
	// leaves; per-room sequence numbers strictly increase.
	var types []string
	eventually(t, 10*time.Second, "events stored", func() (bool, string) {
		types = types[:0]
		var lastSeq uint64
		err := s.Events().Replay(ctx, roomID, func(ev roomevents.Event) error {
			if ev.Seq <= lastSeq {
				return fmt.Errorf("seq %d after %d", ev.Seq, lastSeq)
			}
			lastSeq = ev.Seq
			types = append(types, string(ev.Type))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(types) >= 9, strings.Join(types, ",")
	})
	want := "room_created,player_joined,player_joined,player_joined,player_dropped,player_rejoined,player_left,player_left,player_left"
	if got := strings.Join(types, ","); got != want {
		t.Fatalf("history:\n got %s\nwant %s", got, want)
	}
}

// A relayed room forwards data to the others, and a client that floods,
// sends an oversized frame or garbage is cut off with an error while the
// others notice nothing.
func TestRelayAndGuards(t *testing.T) {
	cfg := testConfig(t)
	cfg.Realtime.MaxMsgsPerSec, cfg.Realtime.MsgBurst = 50, 50
	cfg.Realtime.MaxFrameBytes = 1024
	cfg.Realtime.ReconnectHold = 0
	s := startServer(t, cfg)
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	received := make(chan string, 1024)
	listener := player(t, s, "listener", rally.Options{OnData: func(_, from string, _ uint32, p []byte) {
		received <- from + ":" + string(p)
	}, OnError: func(e *rtv1.Error) { received <- "ERROR " + e.GetMessage() }})
	j, err := listener.CreateRoom(ctx, &rtv1.CreateRoom{Labels: map[string]string{"mode": "relay"}})
	if err != nil {
		t.Fatal(err)
	}
	roomID := j.GetRoom().GetId()

	attacks := []struct {
		name string
		code rtv1.Error_Code
		act  func(c *rally.Client) error
	}{
		{"flood", rtv1.Error_CODE_RATE_LIMITED, func(c *rally.Client) error {
			for i := 0; i < 500; i++ {
				if err := c.Send(roomID, 1, []byte("x")); err != nil {
					return nil // cut off mid-flood: expected
				}
			}
			return nil
		}},
		{"oversize", rtv1.Error_CODE_TOO_LARGE, func(c *rally.Client) error {
			return c.Send(roomID, 1, make([]byte, 4096))
		}},
		{"garbage", rtv1.Error_CODE_MALFORMED, func(c *rally.Client) error {
			return c.SendRaw(websocket.MessageBinary, []byte{0xff, 0xff, 0xff, 0x01})
		}},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			errs := make(chan *rtv1.Error, 4)
			bad := player(t, s, "bad"+a.name, rally.Options{DisableReconnect: true, OnError: func(e *rtv1.Error) { errs <- e }})
			if _, err := bad.JoinRoom(ctx, &rtv1.JoinRoom{Labels: map[string]string{"mode": "relay"}}); err != nil {
				t.Fatal(err)
			}
			if err := a.act(bad); err != nil {
				t.Fatal(err)
			}
			select {
			case e := <-errs:
				if e.GetCode() != a.code {
					t.Fatalf("error %v, want %v", e, a.code)
				}
			case <-ctx.Done():
				t.Fatal("no error envelope")
			}
			select {
			case <-bad.Done():
			case <-ctx.Done():
				t.Fatal("offender still connected")
			}
		})
	}

	// The listener is still connected and still served: a fresh player's
	// message reaches it, and nothing else (no error) did.
	good := player(t, s, "good", rally.Options{})
	if _, err := good.JoinRoom(ctx, &rtv1.JoinRoom{RoomId: roomID}); err != nil {
		t.Fatal(err)
	}
	if err := good.Send(roomID, 7, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case msg := <-received:
			if strings.HasPrefix(msg, "ERROR") {
				t.Fatalf("bystander got %q", msg)
			}
			if msg == good.UserID()+":hello" {
				if _, err := listener.Ping(ctx); err != nil {
					t.Fatal(err)
				}
				return
			}
			// Messages the flooder got through before the cut are fine.
		case <-ctx.Done():
			t.Fatal("relay did not deliver")
		}
	}
}

func TestJoinOrCreateByLabelAndList(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := player(t, s, "lista", rally.Options{})
	b := player(t, s, "listb", rally.Options{})
	req := &rtv1.JoinRoom{Labels: map[string]string{"mode": "duel"}, Create: &rtv1.CreateRoom{MaxPlayers: 2}}
	ja, err := a.JoinRoom(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := b.JoinRoom(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if ja.GetRoom().GetId() != jb.GetRoom().GetId() {
		t.Fatalf("join-or-create made two rooms: %s %s", ja.GetRoom().GetId(), jb.GetRoom().GetId())
	}
	if len(jb.GetPlayers()) != 2 {
		t.Fatalf("players %v", jb.GetPlayers())
	}
	c := player(t, s, "listc", rally.Options{})
	if _, err := c.JoinRoom(ctx, &rtv1.JoinRoom{RoomId: ja.GetRoom().GetId()}); err == nil {
		t.Fatal("joined a full room")
	} else if se, ok := err.(*rally.ServerError); !ok || se.Code() != rtv1.Error_CODE_ROOM_FULL {
		t.Fatalf("err %v", err)
	}
	rooms, err := c.ListRooms(ctx, &rtv1.ListRooms{Labels: map[string]string{"mode": "duel"}})
	if err != nil || len(rooms) != 1 || rooms[0].GetPlayers() != 2 {
		t.Fatalf("list: %v %v", rooms, err)
	}
	if _, err := c.JoinRoom(ctx, &rtv1.JoinRoom{Handler: room.ArenaHandler, Metadata: []byte("spectator-only"),
		Create: &rtv1.CreateRoom{}}); err == nil {
		t.Fatal("arena accepted a spectator")
	}
}

func TestWebSocketNeedsAValidToken(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tok := range []string{"", "garbage", "eyJhbGciOiJub25lIn0.eyJ1aWQiOiJ4In0."} {
		_, resp, err := websocket.Dial(ctx, "ws://"+s.Addrs().HTTP+"/ws?token="+tok, nil)
		if err == nil {
			t.Fatalf("token %q accepted", tok)
		}
		if resp == nil || resp.StatusCode != 401 {
			t.Fatalf("token %q: %v", tok, resp)
		}
	}
}

// A client's trace continues into the socket's spans, which carry the
// session, player and room ids.
func TestRealtimeSpansCarryIDs(t *testing.T) {
	rec, endpoint := startReceiver(t)
	cfg := testConfig(t)
	cfg.Telemetry.OTLPEndpoint, cfg.Telemetry.OTLPInsecure = endpoint, true
	s := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-traced-0123456789", "traced", true)
	if err != nil {
		t.Fatal(err)
	}
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	ws, _, err := websocket.Dial(ctx, "ws://"+s.Addrs().HTTP+"/ws?token="+sess.Token, &websocket.DialOptions{
		HTTPHeader: map[string][]string{"Traceparent": {"00-" + traceID + "-b7ad6b7169203331-01"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(&rtv1.Envelope{Cid: 1, Message: &rtv1.Envelope_CreateRoom{CreateRoom: &rtv1.CreateRoom{}}})
	if err := ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
	var roomID string
	for roomID == "" {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var env rtv1.Envelope
		if proto.Unmarshal(msg, &env) == nil && env.GetRoomJoined() != nil {
			roomID = env.GetRoomJoined().GetRoom().GetId()
		}
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
	shutdown(t, s) // flushes spans

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, name := range []string{"realtime.connect", "room.create"} {
		if rec.trace[name] != traceID {
			t.Errorf("%s: trace %q, want the client's %s", name, rec.trace[name], traceID)
		}
		a := rec.attrs[name]
		if a["player.id"] != sess.UserID || a["session.id"] == "" {
			t.Errorf("%s attributes: %v", name, a)
		}
	}
	if rec.attrs["room.create"]["room.id"] != roomID {
		t.Errorf("room.create room.id = %q, want %q", rec.attrs["room.create"]["room.id"], roomID)
	}
}

// A JSON client and a protobuf client share a room: the same protocol in
// either encoding.
func TestJSONAndProtobufClientsTogether(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan string, 4)
	js := player(t, s, "jsonplayer", rally.Options{JSON: true, OnData: func(_, from string, op uint32, p []byte) {
		got <- fmt.Sprintf("json got %d:%s", op, p)
	}})
	pb := player(t, s, "pbplayer", rally.Options{OnData: func(_, from string, op uint32, p []byte) {
		got <- fmt.Sprintf("pb got %d:%s", op, p)
	}})
	j, err := js.CreateRoom(ctx, &rtv1.CreateRoom{Labels: map[string]string{"enc": "mixed"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pb.JoinRoom(ctx, &rtv1.JoinRoom{RoomId: j.GetRoom().GetId()}); err != nil {
		t.Fatal(err)
	}
	if err := js.Send(j.GetRoom().GetId(), 3, []byte("from json")); err != nil {
		t.Fatal(err)
	}
	if err := pb.Send(j.GetRoom().GetId(), 4, []byte("from pb")); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"pb got 3:from json": true, "json got 4:from pb": true}
	for len(want) > 0 {
		select {
		case m := <-got:
			delete(want, m)
		case <-ctx.Done():
			t.Fatalf("missing %v", want)
		}
	}
}

// announcer is game logic that publishes its own event when a player joins.
type announcer struct{ room.Arena }

func (a *announcer) Join(h *room.Handle, p room.Player) {
	a.Arena.Join(h, p)
	if err := h.PublishEvent("greeted", []byte(`{"player":"`+p.UserID+`"}`)); err != nil {
		panic(err)
	}
}

// The game's own events go to the room's stream in order with Rally's.
func TestCustomRoomEventsReplay(t *testing.T) {
	s := startServer(t, testConfig(t), func(r *room.Registry) {
		r.MustRegister("announcer", func() room.Logic { return &announcer{Arena: *room.NewArena().(*room.Arena)} })
	})
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := player(t, s, "greeter", rally.Options{})
	j, err := c.CreateRoom(ctx, &rtv1.CreateRoom{Handler: "announcer"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	eventually(t, 10*time.Second, "custom event stored", func() (bool, string) {
		got = got[:0]
		err := s.Events().Replay(ctx, j.GetRoom().GetId(), func(ev roomevents.Event) error {
			name := string(ev.Type)
			if ev.Type == roomevents.Custom {
				name += ":" + ev.Name + ":" + string(ev.Data)
			}
			got = append(got, name)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(got) >= 3, strings.Join(got, ",")
	})
	want := `room_created,player_joined,custom:greeted:{"player":"` + c.UserID() + `"}`
	if g := strings.Join(got, ","); g != want {
		t.Fatalf("history:\n got %s\nwant %s", g, want)
	}
}
