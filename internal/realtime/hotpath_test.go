package realtime_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/realtime"
	"github.com/rallyhq/rally/internal/room"
)

// rig is a realtime server on loopback with raw WebSocket clients, so the
// benchmarks measure the server's real path: socket read, decode, room,
// encode, socket write.
type rig struct {
	srv   *httptest.Server
	rooms *room.Manager
}

func newRig(tb testing.TB) *rig {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rooms := room.NewManager(room.Config{
		DefaultTickRate: 20, MaxPlayers: 16, EmptyTimeout: time.Minute, InputQueue: 1024,
		InputOverflow: room.OverflowDropOldest,
	}, room.NewRegistry(), nil, nil, log)
	// The token is the user id: the benchmark measures messages, not auth.
	verify := func(tok string) (room.Player, error) {
		if tok == "" {
			return room.Player{}, errors.New("no token")
		}
		return room.Player{UserID: tok, Username: tok, SessionID: "s-" + tok}, nil
	}
	rt := realtime.New(rooms, verify, func(r *http.Request) string { return r.URL.Query().Get("token") }, realtime.Limits{
		MaxFrameBytes: 64 << 10, MsgsPerSec: 1 << 30, Burst: 1 << 30, SendQueue: 4096,
		WriteTimeout: time.Second,
	}, nil, log)
	srv := httptest.NewServer(rt)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rt.Close(ctx)
		srv.Close()
	})
	return &rig{srv: srv, rooms: rooms}
}

// client is a raw socket that reads into one reused buffer.
type client struct {
	ws  *websocket.Conn
	buf []byte
}

func (r *rig) dial(tb testing.TB, user string) *client {
	tb.Helper()
	ws, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(r.srv.URL, "http")+"/?token="+user, nil)
	if err != nil {
		tb.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	return &client{ws: ws, buf: make([]byte, 64<<10)}
}

func (c *client) request(tb testing.TB, env *rtv1.Envelope) *rtv1.Envelope {
	tb.Helper()
	b, _ := proto.Marshal(env)
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, b); err != nil {
		tb.Fatal(err)
	}
	for {
		n := c.read(tb)
		var resp rtv1.Envelope
		if err := proto.Unmarshal(c.buf[:n], &resp); err != nil {
			tb.Fatal(err)
		}
		if resp.Cid == env.Cid {
			if e := resp.GetError(); e != nil {
				tb.Fatal(e)
			}
			return &resp
		}
	}
}

// read reads one message into c.buf without allocating.
func (c *client) read(tb testing.TB) int {
	_, rd, err := c.ws.Reader(context.Background()) // no deadline: no timer per read
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for {
		m, err := rd.Read(c.buf[n:])
		n += m
		if err == io.EOF {
			return n
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkRelayPath: player A's input crosses the server to player B:
// A's write, server read, decode, relay encode, server write, B's read.
func BenchmarkRelayPath(b *testing.B) {
	r := newRig(b)
	a, c := r.dial(b, "a"), r.dial(b, "b")
	joined := a.request(b, &rtv1.Envelope{Cid: 1, Message: &rtv1.Envelope_CreateRoom{CreateRoom: &rtv1.CreateRoom{}}})
	roomID := joined.GetRoomJoined().GetRoom().GetId()
	c.request(b, &rtv1.Envelope{Cid: 1, Message: &rtv1.Envelope_JoinRoom{JoinRoom: &rtv1.JoinRoom{RoomId: roomID}}})
	a.read(b) // presence: b joined

	in, _ := proto.Marshal(&rtv1.Envelope{Message: &rtv1.Envelope_SendData{SendData: &rtv1.SendData{
		RoomId: roomID, Op: 1, Payload: make([]byte, 128)}}})
	ctx := context.Background()
	// Warm the pools and buffers first: steady state is what counts.
	for range 1000 {
		if err := a.ws.Write(ctx, websocket.MessageBinary, in); err != nil {
			b.Fatal(err)
		}
		c.read(b)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	b.ResetTimer()
	for b.Loop() {
		if err := a.ws.Write(ctx, websocket.MessageBinary, in); err != nil {
			b.Fatal(err)
		}
		c.read(b)
	}
}

// BenchmarkAuthoritativePath: inputs from 8 players of an arena room queue
// for the tick; each op is one tick whose state frame reaches a player.
func BenchmarkAuthoritativePath(b *testing.B) {
	r := newRig(b)
	const players = 8
	clients := make([]*client, players)
	var roomID string
	for i := range clients {
		clients[i] = r.dial(b, "p"+string(rune('a'+i)))
		var env *rtv1.Envelope
		if i == 0 {
			env = clients[i].request(b, &rtv1.Envelope{Cid: 1, Message: &rtv1.Envelope_CreateRoom{CreateRoom: &rtv1.CreateRoom{
				Handler: room.ArenaHandler, TickRate: 128}}})
			roomID = env.GetRoomJoined().GetRoom().GetId()
		} else {
			clients[i].request(b, &rtv1.Envelope{Cid: 1, Message: &rtv1.Envelope_JoinRoom{JoinRoom: &rtv1.JoinRoom{RoomId: roomID}}})
		}
	}
	move := room.EncodeArenaMove(make([]byte, 0, 128), 1, 0.5)
	move = move[:cap(move)]
	in, _ := proto.Marshal(&rtv1.Envelope{Message: &rtv1.Envelope_SendData{SendData: &rtv1.SendData{RoomId: roomID, Op: room.ArenaOpMove, Payload: move}}})
	ctx := context.Background()
	// Every client drains its socket in the background so no queue fills;
	// the benchmark waits for client 0's frames, one per tick.
	frames := make(chan int, 1024)
	for i, c := range clients {
		go func() {
			for {
				_, rd, err := c.ws.Reader(ctx)
				if err != nil {
					return
				}
				n, _ := io.ReadFull(rd, c.buf)
				if i == 0 {
					select {
					case frames <- n:
					default:
					}
				}
			}
		}()
	}
	step := func() {
		for _, c := range clients {
			if err := c.ws.Write(ctx, websocket.MessageBinary, in); err != nil {
				b.Fatal(err)
			}
		}
		<-frames
	}
	for range 200 {
		step()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		step()
	}
	b.StopTimer()
	for _, c := range clients {
		_ = c.ws.CloseNow()
	}
}
