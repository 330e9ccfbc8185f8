package realtime

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/coder/websocket"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/envelope"
	"github.com/rallyhq/rally/internal/room"
)

// conn is one player's socket. The read loop (serve) decodes and
// dispatches; the writer goroutine owns every write, so frames from rooms
// are queued, never written from a room's goroutine.
type conn struct {
	s      *Server
	ws     *websocket.Conn
	batch  *batchWriter
	player room.Player
	json   bool
	trace  context.Context // carries the connect span, parent of room spans

	out        chan *room.Frame
	kickOnce   sync.Once
	kicked     chan struct{}
	kickMsg    []byte
	writerDone chan struct{}

	// Read side, owned by serve.
	buf    []byte
	fast   envelope.Fast
	full   rtv1.Envelope
	tokens float64
	last   time.Time
	// lastRoom caches the room of the previous message: players send to
	// one room at a time, so the map lookup is mostly skipped.
	lastRoom *room.Room

	// tickets are this socket's open matchmaking tickets, stopped (and
	// cancelled if still waiting) when it closes.
	ticketsMu sync.Mutex
	tickets   map[string]func()

	// calls are this socket's open Calls, ended when it closes.
	calls connCalls
}

func newConn(s *Server, ws *websocket.Conn, batch *batchWriter, p room.Player, json bool, traceCtx context.Context) *conn {
	return &conn{
		s: s, ws: ws, batch: batch, player: p, json: json, trace: traceCtx,
		out:        make(chan *room.Frame, s.limits.SendQueue),
		kicked:     make(chan struct{}),
		writerDone: make(chan struct{}),
		buf:        make([]byte, s.limits.MaxFrameBytes+1),
		tokens:     float64(s.limits.Burst),
	}
}

// Send implements room.Conn.
func (c *conn) Send(f *room.Frame) bool {
	select {
	case <-c.kicked:
		return false
	default:
	}
	select {
	case c.out <- f:
		return true
	default:
		return false
	}
}

// Kick implements room.Conn: the error is written, then the socket closes.
// Code unspecified closes without an error (the peer left, or a write
// failed). A writer blocked on a peer that stopped reading cannot say
// goodbye: if it has not finished within WriteTimeout, the connection is
// closed under it.
func (c *conn) Kick(code rtv1.Error_Code, msg string) {
	c.kickOnce.Do(func() {
		if code != rtv1.Error_CODE_UNSPECIFIED {
			c.kickMsg = envelope.AppendError(nil, 0, code, msg)
		}
		close(c.kicked)
		if d := c.s.limits.WriteTimeout; d > 0 {
			force := time.AfterFunc(d, func() { _ = c.ws.CloseNow() })
			go func() { <-c.writerDone; force.Stop() }()
		}
	})
}

// push queues a control envelope (responses, joins on resume).
func (c *conn) push(env *rtv1.Envelope) {
	f := room.NewFrame()
	var err error
	if f.B, err = envelope.Marshal(f.B, env, false); err != nil || !c.Send(f) {
		f.Release()
		if err == nil {
			c.s.metrics.rejections.WithLabelValues("slow_consumer").Inc()
			c.Kick(rtv1.Error_CODE_RATE_LIMITED, "too slow: send queue full")
		}
	}
}

func (c *conn) wait() { <-c.writerDone }

// serve runs the connection until it ends.
func (c *conn) serve(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.writeLoop()
	go c.pingLoop(ctx)
	c.last = time.Now()
	for {
		n, typ, err := c.read()
		if err != nil {
			if errors.Is(err, errTooLarge) {
				c.s.metrics.rejections.WithLabelValues("too_large").Inc()
				c.Kick(rtv1.Error_CODE_TOO_LARGE, err.Error())
			}
			break
		}
		if !c.allow() {
			c.s.metrics.rejections.WithLabelValues("rate_limited").Inc()
			c.Kick(rtv1.Error_CODE_RATE_LIMITED, "too many messages per second")
			break
		}
		c.s.metrics.messagesIn.Inc()
		if err := c.handle(ctx, c.buf[:n], typ); err != nil {
			c.s.metrics.rejections.WithLabelValues("malformed").Inc()
			c.Kick(rtv1.Error_CODE_MALFORMED, err.Error())
			break
		}
	}
	// Make the writer say why (if a kick is pending) and close the socket.
	c.Kick(rtv1.Error_CODE_UNSPECIFIED, "")
	c.wait()
	c.endCalls()
	c.ticketsMu.Lock()
	stops := c.tickets
	c.tickets = nil
	c.ticketsMu.Unlock()
	for _, stop := range stops {
		stop()
	}
}

var errTooLarge = errors.New("frame over the size limit")

// noDeadline is the context of every socket read and write on the hot path:
// the library arms a timer for any context that can be cancelled, which
// costs allocations per message. Connections end by being closed instead
// (Kick, shutdown, a failed ping).
var noDeadline = context.Background()

// read reads one message into c.buf without allocating.
func (c *conn) read() (int, websocket.MessageType, error) {
	typ, r, err := c.ws.Reader(noDeadline)
	if err != nil {
		return 0, 0, err
	}
	n := 0
	for n < len(c.buf) {
		m, err := r.Read(c.buf[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			if n >= len(c.buf)-1 {
				return n, typ, errTooLarge // the library's limit tripped right after ours
			}
			return n, typ, err
		}
	}
	if n > c.s.limits.MaxFrameBytes {
		return n, typ, errTooLarge
	}
	return n, typ, nil
}

// allow is a token bucket: MsgsPerSec sustained, Burst at once.
func (c *conn) allow() bool {
	now := time.Now()
	c.tokens += now.Sub(c.last).Seconds() * float64(c.s.limits.MsgsPerSec)
	c.last = now
	if max := float64(c.s.limits.Burst); c.tokens > max {
		c.tokens = max
	}
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

// handle dispatches one envelope. Errors it returns end the connection;
// a failed request is answered with an Error instead.
func (c *conn) handle(ctx context.Context, b []byte, typ websocket.MessageType) error {
	if c.json || typ == websocket.MessageText {
		c.full.Reset()
		if err := envelope.Full(b, true, &c.full); err != nil {
			return err
		}
		return c.handleFull(&c.full)
	}
	if err := envelope.DecodeFast(b, &c.fast); err != nil {
		return err
	}
	switch c.fast.Kind {
	case envelope.KindSendData:
		return c.send(c.fast.CID, c.fast.RoomID, c.fast.Op, c.fast.Payload, c.fast.ToUsers)
	case envelope.KindAckState:
		if r := c.room(c.fast.RoomID); r != nil {
			r.Ack(c.player.UserID, c.fast.Tick)
		}
		return nil
	}
	c.full.Reset()
	if err := envelope.Full(b, false, &c.full); err != nil {
		return err
	}
	return c.handleFull(&c.full)
}

func (c *conn) room(id []byte) *room.Room {
	if r := c.lastRoom; r != nil && r.ID() == string(id) {
		return r
	}
	r := c.s.rooms.Get(id)
	if r != nil {
		c.lastRoom = r
	}
	return r
}

// send is the hot path: a player's data to a relayed room or input to an
// authoritative one.
func (c *conn) send(cid uint32, roomID []byte, op uint32, payload []byte, to [][]byte) error {
	r := c.room(roomID)
	if r == nil {
		c.replyError(cid, rtv1.Error_CODE_NOT_FOUND, "no such room")
		return nil
	}
	var err error
	if r.Authoritative() {
		err = r.Input(c.player.UserID, op, payload)
	} else {
		err = r.Relay(c.player.UserID, op, payload, to)
	}
	if err != nil {
		c.lastRoom = nil
		c.replyError(cid, rtv1.Error_CODE_NOT_IN_ROOM, err.Error())
	}
	return nil
}

// handleFull serves the requests outside the hot path.
func (c *conn) handleFull(env *rtv1.Envelope) error {
	ctx := c.trace
	cid := env.GetCid()
	reply := func(resp *rtv1.Envelope, err error) {
		if err != nil {
			var re *room.Error
			if errors.As(err, &re) {
				c.replyError(cid, re.Code, re.Msg)
			} else {
				c.replyError(cid, rtv1.Error_CODE_INTERNAL, err.Error())
			}
			return
		}
		resp.Cid = cid
		c.push(resp)
	}
	switch m := env.GetMessage().(type) {
	case *rtv1.Envelope_CreateRoom:
		j, err := c.s.rooms.Create(ctx, c.player, c, m.CreateRoom)
		reply(&rtv1.Envelope{Message: &rtv1.Envelope_RoomJoined{RoomJoined: j}}, err)
	case *rtv1.Envelope_JoinRoom:
		j, err := c.s.rooms.Join(ctx, c.player, c, m.JoinRoom)
		reply(&rtv1.Envelope{Message: &rtv1.Envelope_RoomJoined{RoomJoined: j}}, err)
	case *rtv1.Envelope_LeaveRoom:
		err := c.s.rooms.Leave(ctx, c.player, m.LeaveRoom.GetRoomId())
		c.lastRoom = nil
		reply(&rtv1.Envelope{Message: &rtv1.Envelope_RoomLeft{RoomLeft: &rtv1.RoomLeft{RoomId: m.LeaveRoom.GetRoomId()}}}, err)
	case *rtv1.Envelope_ListRooms:
		reply(&rtv1.Envelope{Message: &rtv1.Envelope_RoomList{RoomList: &rtv1.RoomList{Rooms: c.s.rooms.List(m.ListRooms)}}}, nil)
	case *rtv1.Envelope_Ping:
		reply(&rtv1.Envelope{Message: &rtv1.Envelope_Pong{Pong: &rtv1.Pong{
			ClientTimeUnixNano: m.Ping.GetClientTimeUnixNano(), ServerTimeUnixNano: time.Now().UnixNano()}}}, nil)
	case *rtv1.Envelope_SendData:
		sd := m.SendData
		to := make([][]byte, len(sd.GetToUsers()))
		for i, u := range sd.GetToUsers() {
			to[i] = []byte(u)
		}
		return c.send(cid, []byte(sd.GetRoomId()), sd.GetOp(), sd.GetPayload(), to)
	case *rtv1.Envelope_AckState:
		if r := c.room([]byte(m.AckState.GetRoomId())); r != nil {
			r.Ack(c.player.UserID, m.AckState.GetTick())
		}
	case *rtv1.Envelope_FindMatch:
		c.findMatch(cid, m.FindMatch.GetRequest())
	case *rtv1.Envelope_CancelMatch:
		if c.s.match == nil {
			c.replyError(cid, rtv1.Error_CODE_BAD_REQUEST, "matchmaking is not enabled")
			return nil
		}
		err := c.s.match.CancelFor(ctx, c.player.UserID, m.CancelMatch.GetTicketId())
		if err != nil {
			c.replyError(cid, rtv1.Error_CODE_NOT_FOUND, err.Error())
			return nil
		}
		reply(&rtv1.Envelope{Message: &rtv1.Envelope_MatchTicket{MatchTicket: &rtv1.MatchTicket{TicketId: m.CancelMatch.GetTicketId()}}}, nil)
	case *rtv1.Envelope_Call:
		c.call(cid, m.Call)
	case *rtv1.Envelope_CancelCall:
		c.cancelCall(cid)
	case nil:
		c.replyError(cid, rtv1.Error_CODE_BAD_REQUEST, "empty envelope")
	default:
		c.replyError(cid, rtv1.Error_CODE_BAD_REQUEST, "not a request a client can send")
	}
	return nil
}

// findMatch queues a ticket; its updates are pushed as MatchUpdate.
func (c *conn) findMatch(cid uint32, req *matchv1.TicketRequest) {
	if c.s.match == nil {
		c.replyError(cid, rtv1.Error_CODE_BAD_REQUEST, "matchmaking is not enabled")
		return
	}
	if req == nil {
		c.replyError(cid, rtv1.Error_CODE_BAD_REQUEST, "find_match needs a request")
		return
	}
	var id string
	id, stop, err := c.s.match.Find(c.trace, c.player.UserID, req, func(u *matchv1.TicketUpdate) {
		c.push(&rtv1.Envelope{Message: &rtv1.Envelope_MatchUpdate{MatchUpdate: &rtv1.MatchUpdate{Update: u}}})
		switch u.GetKind() {
		case matchv1.TicketUpdate_KIND_MATCHED, matchv1.TicketUpdate_KIND_CANCELLED, matchv1.TicketUpdate_KIND_EXPIRED:
			// The ticket is over: nothing to cancel when the socket closes.
			c.ticketsMu.Lock()
			delete(c.tickets, u.GetTicket().GetId())
			c.ticketsMu.Unlock()
		}
	})
	if err != nil {
		c.replyError(cid, rtv1.Error_CODE_BAD_REQUEST, err.Error())
		return
	}
	c.ticketsMu.Lock()
	if c.tickets == nil {
		c.tickets = map[string]func(){}
	}
	c.tickets[id] = stop
	c.ticketsMu.Unlock()
	// A ticket that ended before this line was recorded stays until the
	// socket closes; stopping an ended ticket is harmless.
	c.push(&rtv1.Envelope{Cid: cid, Message: &rtv1.Envelope_MatchTicket{MatchTicket: &rtv1.MatchTicket{TicketId: id}}})
}

func (c *conn) replyError(cid uint32, code rtv1.Error_Code, msg string) {
	f := room.NewFrame()
	f.B = envelope.AppendError(f.B, cid, code, msg)
	if !c.Send(f) {
		f.Release()
	}
}

// writeLoop writes queued frames until the connection is kicked or fails;
// then it writes the kick's error (if any) and closes the socket.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var jsonBuf []byte
	write := func(ctx context.Context, b []byte) error {
		var err error
		jsonBuf, err = c.writeEnvelope(ctx, jsonBuf, b)
		return err
	}
	fail := func() {
		c.Kick(rtv1.Error_CODE_UNSPECIFIED, "")
		c.drain()
		_ = c.ws.CloseNow()
	}
	for {
		select {
		case f := <-c.out:
			// Everything already queued behind f goes out in the same
			// system call (see batchWriter).
			c.batch.begin()
			n := 0
			for f != nil {
				err := write(noDeadline, f.B)
				f.Release()
				if err != nil {
					_ = c.batch.end()
					fail()
					return
				}
				n++
				select {
				case f = <-c.out:
				default:
					f = nil
				}
			}
			if err := c.batch.end(); err != nil {
				fail()
				return
			}
			c.s.metrics.framesOut.Add(float64(n))
		case <-c.kicked:
			c.drain()
			status := websocket.StatusNormalClosure
			if len(c.kickMsg) > 0 {
				wctx, cancel := context.WithTimeout(context.Background(), c.s.limits.WriteTimeout)
				_ = write(wctx, c.kickMsg)
				cancel()
				status = websocket.StatusPolicyViolation
			}
			_ = c.ws.Close(status, "")
			return
		}
	}
}

// writeEnvelope writes one binary envelope, re-encoded as protojson for
// JSON clients in the reused buffer jsonBuf, which it returns.
func (c *conn) writeEnvelope(ctx context.Context, jsonBuf, b []byte) ([]byte, error) {
	if c.json {
		var err error
		if jsonBuf, err = envelope.ToJSON(jsonBuf[:0], b); err != nil {
			return jsonBuf, err
		}
		return jsonBuf, c.ws.Write(ctx, websocket.MessageText, jsonBuf)
	}
	return jsonBuf, c.ws.Write(ctx, websocket.MessageBinary, b)
}

// drain releases frames that will never be written.
func (c *conn) drain() {
	for {
		select {
		case f := <-c.out:
			f.Release()
		default:
			return
		}
	}
}

// pingLoop keeps idle connections alive through proxies and detects dead
// peers: a pong missed within PongTimeout closes the socket at once. The
// ping waits behind a writer blocked on a peer that stopped reading, so
// the close is forced (CloseNow), which also frees that writer: a client
// that stops answering is gone within PingInterval+PongTimeout whatever
// its send queue holds.
func (c *conn) pingLoop(ctx context.Context) {
	if c.s.limits.PingInterval <= 0 {
		return
	}
	timeout := c.s.limits.PongTimeout
	if timeout <= 0 {
		timeout = c.s.limits.PingInterval
	}
	t := time.NewTicker(c.s.limits.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kicked:
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, timeout)
			err := c.ws.Ping(pctx)
			cancel()
			if err != nil {
				select {
				case <-ctx.Done(): // the connection is ending anyway
				default:
					c.s.metrics.rejections.WithLabelValues("pong_timeout").Inc()
				}
				c.Kick(rtv1.Error_CODE_UNSPECIFIED, "")
				_ = c.ws.CloseNow()
				return
			}
		}
	}
}
