package auth

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// whoami is a stand-in for a domain service: it answers with the user id the
// interceptors put into the context.
var whoamiDesc = grpc.ServiceDesc{
	ServiceName: "rally.test.Whoami",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Get",
		Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, _ any) (any, error) {
				sess, ok := FromContext(ctx)
				if !ok {
					return nil, status.Error(codes.Internal, "no session in context")
				}
				return wrapperspb.String(sess.UserID), nil
			}
			if icpt == nil {
				return h(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/rally.test.Whoami/Get"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Watch",
		ServerStreams: true,
		Handler: func(_ any, ss grpc.ServerStream) error {
			sess, ok := FromContext(ss.Context())
			if !ok {
				return status.Error(codes.Internal, "no session in stream context")
			}
			return ss.SendMsg(wrapperspb.String(sess.UserID))
		},
	}},
}

func startGRPC(t *testing.T, svc *Service) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(svc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(svc.StreamServerInterceptor()),
	)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	srv.RegisterService(&whoamiDesc, struct{}{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func whoami(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(ctx, "/rally.test.Whoami/Get", wrapperspb.String(""), out)
	return out.GetValue(), err
}

func watch(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	cs, err := conn.NewStream(ctx, &whoamiDesc.Streams[0], "/rally.test.Whoami/Watch")
	if err != nil {
		return "", err
	}
	if err := cs.SendMsg(wrapperspb.String("")); err != nil {
		return "", err
	}
	if err := cs.CloseSend(); err != nil {
		return "", err
	}
	out := new(wrapperspb.StringValue)
	err = cs.RecvMsg(out)
	return out.GetValue(), err
}

func TestGRPCInterceptors(t *testing.T) {
	f := newFixture(t)
	conn := startGRPC(t, f.svc)
	ctx := t.Context()
	g, err := f.svc.AuthenticateDevice(ctx, "device-0001", "", true)
	if err != nil {
		t.Fatal(err)
	}

	// Health is exempt: probes carry no token.
	hc := healthpb.NewHealthClient(conn)
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without token: %v, %v", resp, err)
	}

	for name, call := range map[string]func(context.Context, *grpc.ClientConn) (string, error){"unary": whoami, "stream": watch} {
		t.Run(name, func(t *testing.T) {
			for label, c := range map[string]context.Context{
				"no token":      ctx,
				"refresh token": withToken(ctx, g.RefreshToken),
				"garbage":       withToken(ctx, "abc"),
				"basic scheme":  metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+g.Token),
			} {
				if _, err := call(c, conn); status.Code(err) != codes.Unauthenticated {
					t.Errorf("%s: %v, want Unauthenticated", label, err)
				}
			}
			uid, err := call(withToken(ctx, g.Token), conn)
			if err != nil || uid != g.UserID {
				t.Fatalf("with token: %q, %v; want %q", uid, err, g.UserID)
			}
		})
	}

	f.clock.Advance(sessionTTL)
	_, err = whoami(withToken(ctx, g.Token), conn)
	if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated || st.Message() != "session token expired" {
		t.Fatalf("expired token: %v", err)
	}
}
