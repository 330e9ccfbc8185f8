package auth

import (
	"context"
	"errors"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type sessionKey struct{}

// NewContext returns ctx carrying sess.
func NewContext(ctx context.Context, sess Session) context.Context {
	return context.WithValue(ctx, sessionKey{}, sess)
}

// FromContext returns the session NewContext stored in ctx, if any.
func FromContext(ctx context.Context) (Session, bool) {
	sess, ok := ctx.Value(sessionKey{}).(Session)
	return sess, ok
}

// exempt reports whether a gRPC method is open without a session: probes
// and tooling must work before any player logs in.
func exempt(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.") || strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// SessionOptional lets the gRPC methods named (full names, as
// "/pkg.Service/Method") be called without an authorization header: their
// handlers check another credential themselves (a game server's result
// token). A header that is present must still be a valid session. Call it
// before serving.
func (s *Service) SessionOptional(methods ...string) {
	if s.optional == nil {
		s.optional = map[string]bool{}
	}
	for _, m := range methods {
		s.optional[m] = true
	}
}

func hasAuthorization(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get("authorization")) > 0
}

// UnaryServerInterceptor requires "authorization: Bearer <session token>"
// metadata on every unary call except health and reflection, and puts the
// verified Session into the handler's context.
func (s *Service) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if exempt(info.FullMethod) {
			return handler(ctx, req)
		}
		if s.optional[info.FullMethod] && !hasAuthorization(ctx) {
			return handler(ctx, req)
		}
		ctx, err := s.authorize(ctx)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func (s *Service) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if exempt(info.FullMethod) {
			return handler(srv, ss)
		}
		if s.optional[info.FullMethod] && !hasAuthorization(ss.Context()) {
			return handler(srv, ss)
		}
		ctx, err := s.authorize(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &sessionStream{ServerStream: ss, ctx: ctx})
	}
}

// sessionStream overrides the stream's context with one carrying the session.
type sessionStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *sessionStream) Context() context.Context { return s.ctx }

func (s *Service) authorize(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get("authorization") {
		if tok, ok := bearer(v); ok {
			token = tok
			break
		}
	}
	if token == "" {
		return ctx, status.Error(codes.Unauthenticated, "missing authorization: Bearer <session token> metadata")
	}
	sess, err := s.Verify(token)
	if err != nil {
		msg := "invalid session token"
		var ce *clientError
		if errors.As(err, &ce) {
			msg = ce.msg
		}
		return ctx, status.Error(codes.Unauthenticated, msg)
	}
	trace.SpanFromContext(ctx).SetAttributes(
		attribute.String("player.id", sess.UserID),
		attribute.String("session.id", sess.SessionID),
	)
	return NewContext(ctx, sess), nil
}
