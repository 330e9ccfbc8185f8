package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	"github.com/rallyhq/rally/sdk/go/rally"
)

type fuzzMethod struct {
	name   string
	stream bool
	req    protoreflect.MessageType
}

// servedMethods lists every gRPC method the server serves, with its request
// type, from the services' own descriptors.
func servedMethods(t testing.TB, s *Server) []fuzzMethod {
	t.Helper()
	probe := grpc.NewServer()
	for _, register := range s.grpcServices {
		register(probe)
	}
	var out []fuzzMethod
	for name, info := range probe.GetServiceInfo() {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatal(err)
		}
		sd := d.(protoreflect.ServiceDescriptor)
		for _, m := range info.Methods {
			md := sd.Methods().ByName(protoreflect.Name(m.Name))
			mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fuzzMethod{name: "/" + name + "/" + m.Name, stream: m.IsServerStream, req: mt})
		}
	}
	return out
}

// Arbitrary request messages, decoded into each method's request type, go
// through the real handlers of a running server, as a signed-in player:
// no call panics (the process would die), hangs past its deadline
// unanswered, or answers Internal or Unknown.
func FuzzServiceRequests(f *testing.F) {
	s := startServer(f, testConfig(f))
	f.Cleanup(func() { shutdown(f, s) })
	methods := servedMethods(f, s)
	ctx := context.Background()
	sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-fuzzer-0123456789", "fuzzer", true)
	if err != nil {
		f.Fatal(err)
	}
	conn, err := grpc.NewClient(s.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })

	seeds := []proto.Message{
		&emptypb.Empty{},
		&matchv1.TicketRequest{Queue: "duel", StringAttributes: map[string]string{"mode": "x"}, RegionLatencyMs: map[string]uint32{"eu": 10}},
		&matchv1.ReportResultRequest{MatchId: "m", ResultToken: "t", Results: []*matchv1.TeamResult{{UserIds: []string{"a", "a"}, Rank: 4294967295}}},
	}
	for i := range methods {
		for _, seed := range seeds {
			b, _ := proto.Marshal(seed)
			f.Add(uint8(i), b)
		}
		f.Add(uint8(i), []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // a length far past the end
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		m := methods[int(which)%len(methods)]
		req := m.req.New().Interface()
		if err := proto.Unmarshal(data, req); err != nil {
			return // not a request the gRPC layer would decode either
		}
		cctx, cancel := context.WithTimeout(bearer(ctx, sess.Token), 2*time.Second)
		defer cancel()
		var err error
		if !m.stream {
			err = conn.Invoke(cctx, m.name, req, new(rawFrame), grpc.ForceCodec(rawCodec{}))
		} else {
			var st grpc.ClientStream
			if st, err = conn.NewStream(cctx, &grpc.StreamDesc{ServerStreams: true}, m.name, grpc.ForceCodec(rawCodec{})); err == nil {
				if err = st.SendMsg(req); err == nil {
					_ = st.CloseSend()
					err = st.RecvMsg(new(rawFrame))
				}
			}
		}
		switch status.Code(err) {
		case codes.Internal, codes.Unknown:
			t.Fatalf("%s(%v): %v", m.name, req, err)
		}
	})
}

// rawCodec sends requests as protobuf and takes answers as raw bytes, so
// one client reads any method's answer.
type rawCodec struct{}

type rawFrame []byte

func (rawCodec) Marshal(v any) ([]byte, error) {
	if f, ok := v.(*rawFrame); ok {
		return *f, nil
	}
	return proto.Marshal(v.(proto.Message))
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	if f, ok := v.(*rawFrame); ok {
		*f = append((*f)[:0], data...)
		return nil
	}
	return proto.Unmarshal(data, v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }
