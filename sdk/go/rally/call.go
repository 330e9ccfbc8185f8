package rally

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
)

// Call invokes a unary method of one of the server's services over the
// socket, as this client's player, and fills resp with the answer. method
// is the full gRPC name ("/rally.leaderboard.v1.LeaderboardService/Top");
// the messages are the method's own. A refusal is a *ServerError whose Code
// mirrors the gRPC status (CODE_BAD_REQUEST for InvalidArgument, ...).
func (c *Client) Call(ctx context.Context, method string, req, resp proto.Message) error {
	in, err := anypb.New(req)
	if err != nil {
		return err
	}
	env, err := c.request(ctx, &rtv1.Envelope{Message: &rtv1.Envelope_Call{Call: &rtv1.Call{Method: method, Request: in}}})
	if err != nil {
		return err
	}
	out := env.GetCallResult().GetResponse()
	if out == nil {
		return fmt.Errorf("rally: %s answered without a response", method)
	}
	return out.UnmarshalTo(resp)
}

// Stream invokes a server-streaming method over the socket and calls fn
// with each message, in order, on the client's reader goroutine (keep fn
// short). It blocks until the server ends the stream (nil), refuses or
// fails it (*ServerError), ctx ends (the call is cancelled on the server
// too) or the connection drops (ErrDisconnected: the stream does not
// survive a reconnect; call Stream again, and catch up with the service's
// history call where it has one).
func (c *Client) Stream(ctx context.Context, method string, req proto.Message, newResp func() proto.Message, fn func(proto.Message)) error {
	in, err := anypb.New(req)
	if err != nil {
		return err
	}
	cid := c.nextCID()
	st := &callStream{newResp: newResp, fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	st.gen = c.connGen
	c.streams[cid] = st
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.streams, cid)
		c.mu.Unlock()
	}
	if err := c.write(&rtv1.Envelope{Cid: cid, Message: &rtv1.Envelope_Call{Call: &rtv1.Call{Method: method, Request: in}}}); err != nil {
		forget()
		return err
	}
	select {
	case err := <-st.done:
		return err
	case <-ctx.Done():
		forget()
		_ = c.write(&rtv1.Envelope{Cid: cid, Message: &rtv1.Envelope_CancelCall{CancelCall: &rtv1.CancelCall{}}})
		return ctx.Err()
	}
}

// callStream is an open Stream: its events are delivered by the reader
// goroutine, and its end (once) through done.
type callStream struct {
	newResp func() proto.Message
	fn      func(proto.Message)
	done    chan error
	ended   bool
	// gen is the connection the call went out on: a stream opened while
	// that connection was dropping ends when the next one is up.
	gen int
}

func (s *callStream) finish(err error) {
	if !s.ended {
		s.ended = true
		s.done <- err
	}
}

// streamEvent delivers env to the stream of its cid, if there is one.
func (c *Client) streamEvent(cid uint32, env *rtv1.Envelope) bool {
	c.mu.Lock()
	st := c.streams[cid]
	if st == nil {
		c.mu.Unlock()
		return false
	}
	switch m := env.GetMessage().(type) {
	case *rtv1.Envelope_CallEvent:
		c.mu.Unlock()
		msg := st.newResp()
		if err := m.CallEvent.GetMessage().UnmarshalTo(msg); err != nil {
			c.mu.Lock()
			delete(c.streams, cid)
			st.finish(fmt.Errorf("rally: stream message: %w", err))
			c.mu.Unlock()
			return true
		}
		st.fn(msg)
	case *rtv1.Envelope_Error:
		delete(c.streams, cid)
		st.finish(&ServerError{E: m.Error})
		c.mu.Unlock()
	default: // CallResult: the server ended the stream
		delete(c.streams, cid)
		st.finish(nil)
		c.mu.Unlock()
	}
	return true
}

func (c *Client) nextCID() uint32 {
	cid := c.cid.Add(1)
	if cid == 0 {
		cid = c.cid.Add(1)
	}
	return cid
}
