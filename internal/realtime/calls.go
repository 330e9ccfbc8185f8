package realtime

import (
	"context"
	"fmt"
	"io"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/reqlimit"
	"github.com/rallyhq/rally/internal/room"
)

// Per connection, at most this many unary calls run at once and this many
// streams stay open: a client that wants more is refused, not queued, so one
// socket cannot hold a service's goroutines hostage.
const (
	maxUnaryInFlight = 32
	maxOpenStreams   = 16
)

// CallerContext returns ctx carrying the player, the way the gRPC server's
// interceptors carry a verified session, so one service implementation
// serves both transports.
type CallerContext func(ctx context.Context, p room.Player) context.Context

type unaryMethod struct {
	impl    any
	handler grpc.MethodHandler
}

type streamMethod struct {
	impl    any
	handler grpc.StreamHandler
}

// callRegistry holds the services reachable through Call envelopes.
type callRegistry struct {
	mu      sync.RWMutex
	unary   map[string]unaryMethod
	streams map[string]streamMethod
	caller  CallerContext
}

// RegisterService implements grpc.ServiceRegistrar: every unary and
// server-streaming method of the service becomes callable over the socket
// with the same messages as on gRPC. Client-streaming methods stay gRPC-only.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.calls.mu.Lock()
	defer s.calls.mu.Unlock()
	if s.calls.unary == nil {
		s.calls.unary = map[string]unaryMethod{}
		s.calls.streams = map[string]streamMethod{}
	}
	for _, m := range desc.Methods {
		s.calls.unary["/"+desc.ServiceName+"/"+m.MethodName] = unaryMethod{impl, m.Handler}
	}
	for _, st := range desc.Streams {
		if st.ServerStreams && !st.ClientStreams {
			s.calls.streams["/"+desc.ServiceName+"/"+st.StreamName] = streamMethod{impl, st.Handler}
		}
	}
}

// SetCallerContext sets how calls learn who is calling; call it before
// serving.
func (s *Server) SetCallerContext(f CallerContext) { s.calls.caller = f }

func (r *callRegistry) lookup(method string) (unaryMethod, streamMethod, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if u, ok := r.unary[method]; ok {
		return u, streamMethod{}, true
	}
	st, ok := r.streams[method]
	return unaryMethod{}, st, ok
}

// connCalls tracks one connection's calls so a CancelCall or the socket
// closing ends them.
type connCalls struct {
	mu      sync.Mutex
	cancels map[uint32]context.CancelFunc
	unary   int
	streams int
	wg      sync.WaitGroup
}

// call starts a Call on its own goroutine: services may block (a JetStream
// publish, a Redis round trip) and the read loop must not.
func (c *conn) call(cid uint32, m *rtv1.Call) {
	method := m.GetMethod()
	if cid == 0 {
		c.s.metrics.calls.WithLabelValues(method, "bad_request").Inc()
		c.replyError(0, rtv1.Error_CODE_BAD_REQUEST, "a call needs a cid to answer to")
		return
	}
	unary, stream, ok := c.s.calls.lookup(method)
	if !ok {
		c.s.metrics.calls.WithLabelValues("unknown", "not_found").Inc()
		c.replyError(cid, rtv1.Error_CODE_NOT_FOUND, fmt.Sprintf("no method %q on the socket", method))
		return
	}
	if m.GetRequest() == nil {
		c.s.metrics.calls.WithLabelValues(method, "bad_request").Inc()
		c.replyError(cid, rtv1.Error_CODE_BAD_REQUEST, "a call needs a request")
		return
	}
	isStream := stream.handler != nil
	cc := &c.calls
	cc.mu.Lock()
	if _, dup := cc.cancels[cid]; dup {
		cc.mu.Unlock()
		c.s.metrics.calls.WithLabelValues(method, "bad_request").Inc()
		c.replyError(cid, rtv1.Error_CODE_BAD_REQUEST, "a call with this cid is still open")
		return
	}
	if (isStream && cc.streams >= maxOpenStreams) || (!isStream && cc.unary >= maxUnaryInFlight) {
		cc.mu.Unlock()
		c.s.metrics.calls.WithLabelValues(method, "resource_exhausted").Inc()
		c.s.metrics.rejections.WithLabelValues("too_many_calls").Inc()
		c.replyError(cid, rtv1.Error_CODE_RESOURCE_EXHAUSTED, "too many calls in flight on this socket")
		return
	}
	ctx, cancel := context.WithCancel(c.trace)
	if cc.cancels == nil {
		cc.cancels = map[uint32]context.CancelFunc{}
	}
	cc.cancels[cid] = cancel
	if isStream {
		cc.streams++
	} else {
		cc.unary++
	}
	cc.wg.Add(1)
	cc.mu.Unlock()
	c.s.metrics.callsInFlight.Inc()

	go func() {
		defer func() {
			cc.mu.Lock()
			delete(cc.cancels, cid)
			if isStream {
				cc.streams--
			} else {
				cc.unary--
			}
			cc.mu.Unlock()
			cancel()
			c.s.metrics.callsInFlight.Dec()
			cc.wg.Done()
		}()
		ctx, span := c.s.tracer.Start(ctx, "realtime.call "+method, trace.WithAttributes(
			attribute.String("rpc.method", method), attribute.String("rpc.system", "rally.socket"),
			attribute.String("player.id", c.player.UserID), attribute.String("session.id", c.player.SessionID)))
		defer span.End()
		if c.s.calls.caller != nil {
			ctx = c.s.calls.caller(ctx, c.player)
		}
		var err error
		if isStream {
			err = c.runStream(ctx, cid, stream, m.GetRequest())
		} else {
			err = c.runUnary(ctx, cid, unary, m.GetRequest())
		}
		code := status.Code(err)
		if err != nil && ctx.Err() != nil && code == codes.Unknown {
			code = codes.Canceled
		}
		c.s.metrics.calls.WithLabelValues(method, codeLabel(code)).Inc()
		if err != nil {
			span.SetStatus(otelcodes.Error, err.Error())
			c.replyError(cid, errorCode(code), status.Convert(err).Message())
		}
	}()
}

func (c *conn) runUnary(ctx context.Context, cid uint32, u unaryMethod, req *anypb.Any) error {
	dec := func(v any) error { return unpack(req, v) }
	resp, err := u.handler(u.impl, ctx, dec, nil)
	if err != nil {
		return err
	}
	msg, ok := resp.(proto.Message)
	if !ok {
		return status.Error(codes.Internal, "the method returned no protobuf message")
	}
	out, err := anypb.New(msg)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	c.pushCall(&rtv1.Envelope{Cid: cid, Message: &rtv1.Envelope_CallResult{CallResult: &rtv1.CallResult{Response: out}}})
	return nil
}

func (c *conn) runStream(ctx context.Context, cid uint32, st streamMethod, req *anypb.Any) error {
	ss := &socketStream{ctx: ctx, c: c, cid: cid, req: req}
	if err := st.handler(st.impl, ss); err != nil {
		return err
	}
	c.pushCall(&rtv1.Envelope{Cid: cid, Message: &rtv1.Envelope_CallResult{CallResult: &rtv1.CallResult{}}})
	return nil
}

// cancelCall ends an open call; its goroutine answers CODE_CANCELLED.
func (c *conn) cancelCall(cid uint32) {
	c.calls.mu.Lock()
	cancel := c.calls.cancels[cid]
	c.calls.mu.Unlock()
	if cancel == nil {
		c.replyError(cid, rtv1.Error_CODE_NOT_FOUND, "no open call with this cid")
		return
	}
	cancel()
}

// endCalls cancels every open call and waits for their goroutines, so no
// service outlives the socket it answers.
func (c *conn) endCalls() {
	c.calls.mu.Lock()
	for _, cancel := range c.calls.cancels {
		cancel()
	}
	c.calls.mu.Unlock()
	c.calls.wg.Wait()
}

// pushCall queues a call's answer; a socket already closing drops it.
func (c *conn) pushCall(env *rtv1.Envelope) {
	select {
	case <-c.kicked:
		return
	default:
		c.push(env)
	}
}

func unpack(req *anypb.Any, v any) error {
	msg, ok := v.(proto.Message)
	if !ok {
		return status.Error(codes.Internal, "the method takes no protobuf message")
	}
	if err := req.UnmarshalTo(msg); err != nil {
		return status.Errorf(codes.InvalidArgument, "request is not a %s: %v", msg.ProtoReflect().Descriptor().FullName(), err)
	}
	return reqlimit.Check(msg) // the same limits as on gRPC
}

// socketStream is the grpc.ServerStream of a server-streaming Call: the one
// request comes from the Call, each sent message goes out as a CallEvent.
type socketStream struct {
	ctx  context.Context
	c    *conn
	cid  uint32
	req  *anypb.Any
	read bool
}

func (s *socketStream) Context() context.Context     { return s.ctx }
func (s *socketStream) SetHeader(metadata.MD) error  { return nil }
func (s *socketStream) SendHeader(metadata.MD) error { return nil }
func (s *socketStream) SetTrailer(metadata.MD)       {}

func (s *socketStream) RecvMsg(m any) error {
	if s.read {
		return io.EOF
	}
	s.read = true
	return unpack(s.req, m)
}

func (s *socketStream) SendMsg(m any) error {
	if err := s.ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Error(codes.Internal, "the stream sent no protobuf message")
	}
	out, err := anypb.New(msg)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	select {
	case <-s.c.kicked:
		return status.Error(codes.Canceled, "socket closed")
	default:
	}
	s.c.push(&rtv1.Envelope{Cid: s.cid, Message: &rtv1.Envelope_CallEvent{CallEvent: &rtv1.CallEvent{Message: out}}})
	return nil
}

var errorCodes = map[codes.Code]rtv1.Error_Code{
	codes.InvalidArgument:    rtv1.Error_CODE_BAD_REQUEST,
	codes.OutOfRange:         rtv1.Error_CODE_BAD_REQUEST,
	codes.NotFound:           rtv1.Error_CODE_NOT_FOUND,
	codes.Unauthenticated:    rtv1.Error_CODE_UNAUTHENTICATED,
	codes.PermissionDenied:   rtv1.Error_CODE_PERMISSION_DENIED,
	codes.ResourceExhausted:  rtv1.Error_CODE_RESOURCE_EXHAUSTED,
	codes.FailedPrecondition: rtv1.Error_CODE_FAILED_PRECONDITION,
	codes.Aborted:            rtv1.Error_CODE_FAILED_PRECONDITION,
	codes.AlreadyExists:      rtv1.Error_CODE_ALREADY_EXISTS,
	codes.DeadlineExceeded:   rtv1.Error_CODE_DEADLINE_EXCEEDED,
	codes.Unavailable:        rtv1.Error_CODE_UNAVAILABLE,
	codes.Canceled:           rtv1.Error_CODE_CANCELLED,
}

func errorCode(c codes.Code) rtv1.Error_Code {
	if e, ok := errorCodes[c]; ok {
		return e
	}
	return rtv1.Error_CODE_INTERNAL
}

// codeLabel keeps the metric's label set small and fixed.
func codeLabel(c codes.Code) string {
	switch c {
	case codes.OK:
		return "ok"
	case codes.InvalidArgument, codes.OutOfRange:
		return "bad_request"
	case codes.NotFound:
		return "not_found"
	case codes.PermissionDenied, codes.Unauthenticated:
		return "denied"
	case codes.ResourceExhausted:
		return "resource_exhausted"
	case codes.Canceled, codes.DeadlineExceeded:
		return "cancelled"
	default:
		return "error"
	}
}

var _ grpc.ServiceRegistrar = (*Server)(nil)
