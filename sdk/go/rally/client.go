package rally

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/statesync"
)

// Options tune a Client. Handlers run on the client's reader goroutine:
// keep them short.
type Options struct {
	// OnData receives relayed messages and messages from room logic.
	OnData func(roomID, fromUser string, op uint32, payload []byte)
	// OnState is called after a state frame was applied to the room's view.
	OnState func(roomID string, tick uint32)
	// OnPresence receives seat changes.
	OnPresence func(p *rtv1.Presence)
	// OnRoomClosed is called when the server closes a room.
	OnRoomClosed func(roomID, reason string)
	// OnError receives errors the server pushed without a request (cid 0),
	// such as the reason for a disconnect.
	OnError func(e *rtv1.Error)
	// OnMatch receives matchmaking updates of tickets queued with FindMatch.
	OnMatch func(u *matchv1.TicketUpdate)
	// OnReconnect is called after an automatic reconnect succeeded.
	OnReconnect func()
	// Reconnect enables automatic reconnect with backoff (default on;
	// set DisableReconnect to turn off).
	DisableReconnect bool
	// MaxBackoff caps the reconnect backoff (default 5 s).
	MaxBackoff time.Duration
	// JSON speaks the protojson form instead of binary protobuf.
	JSON bool
	// AckInterval spaces state acknowledgements: the client acks the newest
	// applied frame at most this often per room (default 100 ms; negative
	// acks every frame). Deltas stay correct either way, since the server
	// encodes against whatever was acked; rarer acks save a message and a
	// system call per frame on both ends for slightly larger deltas.
	AckInterval time.Duration
}

// Client is a realtime connection to Rally that survives drops.
type Client struct {
	sess *Session
	opts Options

	mu      sync.Mutex
	ws      *websocket.Conn
	pending map[uint32]chan *rtv1.Envelope
	streams map[uint32]*callStream
	rooms   map[string]*RoomState
	closed  bool
	connGen int
	cid     atomic.Uint32
	writeMu sync.Mutex
	done    chan struct{}
	lastErr atomic.Pointer[rtv1.Error]
	sendBuf []byte
}

// RoomState is the client's view of an authoritative room's entities.
type RoomState struct {
	Room    *rtv1.Room
	mu      sync.RWMutex
	dec     *statesync.Decoder
	lastAck time.Time // reader goroutine only
}

// Tick returns the tick the view shows.
func (s *RoomState) Tick() uint32 {
	if s == nil || s.dec == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.dec.Tick()
}

// Entities returns a copy of the view: entity id to field values.
func (s *RoomState) Entities() map[uint32][]float64 {
	out := map[uint32][]float64{}
	if s == nil || s.dec == nil {
		return out
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.dec.Range(func(id uint32, v []float64) bool {
		out[id] = append([]float64(nil), v...)
		return true
	})
	return out
}

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("rally: client closed")

// ErrDisconnected fails requests whose connection dropped before the answer.
var ErrDisconnected = errors.New("rally: disconnected before the answer")

// ServerError is an Error envelope answering a request.
type ServerError struct{ E *rtv1.Error }

func (e *ServerError) Error() string {
	return fmt.Sprintf("rally: %s: %s", e.E.GetCode(), e.E.GetMessage())
}

// Code returns the server's error code.
func (e *ServerError) Code() rtv1.Error_Code { return e.E.GetCode() }

// Dial connects a session's realtime socket.
func Dial(ctx context.Context, sess *Session, opts Options) (*Client, error) {
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.AckInterval == 0 {
		opts.AckInterval = 100 * time.Millisecond
	}
	c := &Client{sess: sess, opts: opts, pending: map[uint32]chan *rtv1.Envelope{}, streams: map[uint32]*callStream{}, rooms: map[string]*RoomState{}, done: make(chan struct{})}
	ws, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.ws = ws
	go c.readLoop(ws, 0)
	return c, nil
}

func (c *Client) dial(ctx context.Context) (*websocket.Conn, error) {
	tok, err := c.sess.token(ctx)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(c.sess.BaseURL)
	if err != nil {
		return nil, err
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	u.Path = "/ws"
	q := url.Values{"token": {tok}}
	if c.opts.JSON {
		q.Set("format", "json")
	}
	u.RawQuery = q.Encode()
	ws, _, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(16 << 20)
	return ws, nil
}

// UserID returns the player's id.
func (c *Client) UserID() string { return c.sess.UserID }

// LastError returns the last error the server pushed without a request.
func (c *Client) LastError() *rtv1.Error { return c.lastErr.Load() }

// Done is closed when the client is closed for good.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close ends the connection without reconnecting.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	ws := c.ws
	c.mu.Unlock()
	err := ws.Close(websocket.StatusNormalClosure, "")
	close(c.done)
	return err
}

// Drop cuts the connection abruptly, as a network failure would; the
// client then reconnects unless reconnect is disabled. For tests and demos.
func (c *Client) Drop() {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	_ = ws.CloseNow()
}

func (c *Client) readLoop(ws *websocket.Conn, gen int) {
	ctx := context.Background()
	for {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			c.disconnected(gen)
			return
		}
		var env rtv1.Envelope
		if c.opts.JSON || typ == websocket.MessageText {
			err = protojsonUnmarshal(b, &env)
		} else {
			err = proto.Unmarshal(b, &env)
		}
		if err != nil {
			continue
		}
		c.dispatch(&env)
	}
}

func (c *Client) dispatch(env *rtv1.Envelope) {
	if cid := env.GetCid(); cid != 0 {
		if c.streamEvent(cid, env) {
			return
		}
		c.mu.Lock()
		ch := c.pending[cid]
		delete(c.pending, cid)
		c.mu.Unlock()
		if ch != nil {
			ch <- env
		}
		return
	}
	switch m := env.GetMessage().(type) {
	case *rtv1.Envelope_Data:
		if c.opts.OnData != nil {
			c.opts.OnData(m.Data.GetRoomId(), m.Data.GetFromUser(), m.Data.GetOp(), m.Data.GetPayload())
		}
	case *rtv1.Envelope_StateFrame:
		c.applyFrame(m.StateFrame)
	case *rtv1.Envelope_Presence:
		if c.opts.OnPresence != nil {
			c.opts.OnPresence(m.Presence)
		}
	case *rtv1.Envelope_RoomJoined:
		// Pushed after a reconnect: the server resumed a held seat.
		c.trackRoom(m.RoomJoined.GetRoom())
	case *rtv1.Envelope_RoomClosed:
		c.mu.Lock()
		delete(c.rooms, m.RoomClosed.GetRoomId())
		c.mu.Unlock()
		if c.opts.OnRoomClosed != nil {
			c.opts.OnRoomClosed(m.RoomClosed.GetRoomId(), m.RoomClosed.GetReason())
		}
	case *rtv1.Envelope_MatchUpdate:
		if c.opts.OnMatch != nil {
			c.opts.OnMatch(m.MatchUpdate.GetUpdate())
		}
	case *rtv1.Envelope_Error:
		c.lastErr.Store(m.Error)
		if c.opts.OnError != nil {
			c.opts.OnError(m.Error)
		}
	}
}

func (c *Client) applyFrame(f *rtv1.StateFrame) {
	c.mu.Lock()
	rs := c.rooms[f.GetRoomId()]
	c.mu.Unlock()
	if rs == nil {
		return
	}
	if rs.dec != nil && f.GetTick() > 0 {
		rs.mu.Lock()
		err := rs.dec.Apply(f.GetTick(), f.GetBaseTick(), f.GetData())
		rs.mu.Unlock()
		if err == nil {
			now := time.Now()
			if now.Sub(rs.lastAck) >= c.opts.AckInterval {
				rs.lastAck = now
				_ = c.write(&rtv1.Envelope{Message: &rtv1.Envelope_AckState{AckState: &rtv1.AckState{RoomId: f.GetRoomId(), Tick: f.GetTick()}}})
			}
		}
	}
	for _, d := range f.GetMessages() {
		if c.opts.OnData != nil {
			c.opts.OnData(f.GetRoomId(), "", d.GetOp(), d.GetPayload())
		}
	}
	if c.opts.OnState != nil && f.GetTick() > 0 {
		c.opts.OnState(f.GetRoomId(), f.GetTick())
	}
}

func (c *Client) trackRoom(r *rtv1.Room) *RoomState {
	rs := &RoomState{Room: r}
	if len(r.GetSchema()) > 0 {
		schema := make(statesync.Schema, len(r.GetSchema()))
		for i, f := range r.GetSchema() {
			schema[i] = statesync.Field{Name: f.GetName(), Quantum: f.GetQuantum()}
		}
		if dec, err := statesync.NewDecoder(schema, 64); err == nil {
			rs.dec = dec
		}
	}
	c.mu.Lock()
	c.rooms[r.GetId()] = rs
	c.mu.Unlock()
	return rs
}

// disconnected fails pending requests and, unless closed, reconnects with
// exponential backoff and jitter.
func (c *Client) disconnected(gen int) {
	c.mu.Lock()
	if gen != c.connGen {
		c.mu.Unlock()
		return
	}
	for cid, ch := range c.pending {
		close(ch)
		delete(c.pending, cid)
	}
	for cid, st := range c.streams {
		st.finish(ErrDisconnected)
		delete(c.streams, cid)
	}
	closed := c.closed
	c.mu.Unlock()
	// A session the server ended (logout elsewhere, a ban) cannot come
	// back: retrying would only be refused again.
	ended := c.LastError().GetCode() == rtv1.Error_CODE_UNAUTHENTICATED
	if closed || ended || c.opts.DisableReconnect {
		c.mu.Lock()
		if !c.closed {
			c.closed = true
			close(c.done)
		}
		c.mu.Unlock()
		return
	}
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-c.done:
			return
		case <-time.After(backoff + rand.N(backoff/2+1)):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ws, err := c.dial(ctx)
		cancel()
		if err == nil {
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				_ = ws.CloseNow()
				return
			}
			c.connGen++
			c.ws = ws
			next := c.connGen
			for cid, st := range c.streams {
				if st.gen != next {
					st.finish(ErrDisconnected)
					delete(c.streams, cid)
				}
			}
			c.mu.Unlock()
			go c.readLoop(ws, next)
			if c.opts.OnReconnect != nil {
				c.opts.OnReconnect()
			}
			return
		}
		backoff = min(backoff*2, c.opts.MaxBackoff)
	}
}

func (c *Client) write(env *rtv1.Envelope) error {
	c.mu.Lock()
	ws, closed := c.ws, c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	var err error
	if c.opts.JSON {
		b, merr := protojsonMarshal(env)
		if merr != nil {
			return merr
		}
		return ws.Write(context.Background(), websocket.MessageText, b)
	}
	c.sendBuf, err = proto.MarshalOptions{}.MarshalAppend(c.sendBuf[:0], env)
	if err != nil {
		return err
	}
	return ws.Write(context.Background(), websocket.MessageBinary, c.sendBuf)
}

// request sends env with a fresh cid and waits for the answer.
func (c *Client) request(ctx context.Context, env *rtv1.Envelope) (*rtv1.Envelope, error) {
	cid := c.nextCID()
	env.Cid = cid
	ch := make(chan *rtv1.Envelope, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.pending[cid] = ch
	c.mu.Unlock()
	if err := c.write(env); err != nil {
		c.mu.Lock()
		delete(c.pending, cid)
		c.mu.Unlock()
		return nil, err
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return nil, ErrDisconnected
		}
		if e := resp.GetError(); e != nil {
			return nil, &ServerError{E: e}
		}
		return resp, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, cid)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// CreateRoom creates a room and joins it.
func (c *Client) CreateRoom(ctx context.Context, req *rtv1.CreateRoom) (*rtv1.RoomJoined, error) {
	resp, err := c.request(ctx, &rtv1.Envelope{Message: &rtv1.Envelope_CreateRoom{CreateRoom: req}})
	if err != nil {
		return nil, err
	}
	j := resp.GetRoomJoined()
	c.trackRoom(j.GetRoom())
	return j, nil
}

// JoinRoom joins a room by id, or by labels (join-or-create).
func (c *Client) JoinRoom(ctx context.Context, req *rtv1.JoinRoom) (*rtv1.RoomJoined, error) {
	resp, err := c.request(ctx, &rtv1.Envelope{Message: &rtv1.Envelope_JoinRoom{JoinRoom: req}})
	if err != nil {
		return nil, err
	}
	j := resp.GetRoomJoined()
	c.trackRoom(j.GetRoom())
	return j, nil
}

// LeaveRoom leaves a room.
func (c *Client) LeaveRoom(ctx context.Context, roomID string) error {
	_, err := c.request(ctx, &rtv1.Envelope{Message: &rtv1.Envelope_LeaveRoom{LeaveRoom: &rtv1.LeaveRoom{RoomId: roomID}}})
	c.mu.Lock()
	delete(c.rooms, roomID)
	c.mu.Unlock()
	return err
}

// ListRooms lists rooms matching labels.
func (c *Client) ListRooms(ctx context.Context, req *rtv1.ListRooms) ([]*rtv1.Room, error) {
	resp, err := c.request(ctx, &rtv1.Envelope{Message: &rtv1.Envelope_ListRooms{ListRooms: req}})
	if err != nil {
		return nil, err
	}
	return resp.GetRoomList().GetRooms(), nil
}

// Ping measures a round trip to the server.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	_, err := c.request(ctx, &rtv1.Envelope{Message: &rtv1.Envelope_Ping{Ping: &rtv1.Ping{ClientTimeUnixNano: start.UnixNano()}}})
	return time.Since(start), err
}

// Send sends data to a room without waiting: relayed to the other players,
// or queued as input for an authoritative room's next tick.
func (c *Client) Send(roomID string, op uint32, payload []byte, toUsers ...string) error {
	return c.write(&rtv1.Envelope{Message: &rtv1.Envelope_SendData{SendData: &rtv1.SendData{
		RoomId: roomID, Op: op, Payload: payload, ToUsers: toUsers,
	}}})
}

// SendRaw writes an already encoded frame as is: tests and load tools use
// it to send what a broken or hostile client would.
func (c *Client) SendRaw(typ websocket.MessageType, b []byte) error {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return ws.Write(context.Background(), typ, b)
}

// State returns the view of a joined authoritative room (nil if unknown).
func (c *Client) State(roomID string) *RoomState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rooms[roomID]
}

// FindMatch queues a matchmaking ticket over the socket and returns its id;
// updates (queued, widened, matched with the room and reservation, ...)
// arrive through Options.OnMatch. Closing the client cancels the ticket.
func (c *Client) FindMatch(ctx context.Context, req *matchv1.TicketRequest) (string, error) {
	resp, err := c.request(ctx, &rtv1.Envelope{Message: &rtv1.Envelope_FindMatch{FindMatch: &rtv1.FindMatch{Request: req}}})
	if err != nil {
		return "", err
	}
	return resp.GetMatchTicket().GetTicketId(), nil
}

// CancelMatch withdraws a waiting ticket.
func (c *Client) CancelMatch(ctx context.Context, ticketID string) error {
	_, err := c.request(ctx, &rtv1.Envelope{Message: &rtv1.Envelope_CancelMatch{CancelMatch: &rtv1.CancelMatch{TicketId: ticketID}}})
	return err
}
