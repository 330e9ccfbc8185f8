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

// UnaryServerInterceptor requires "authorization: Bearer <session token>"
// metadata on every unary call except health and reflection, and puts the
// verified Session into the handler's context.
func (s *Service) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if exempt(info.FullMethod) {
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
