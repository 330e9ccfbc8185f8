package allocation

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	"github.com/rallyhq/rally/internal/config"
	rallyserver "github.com/rallyhq/rally/internal/server"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// A Rally server configured with match.allocator gameservers plays its
// matches on dedicated servers: two players asking for a duel get the same
// allocated game server's address, and the server's pod says who plays.
func TestRallyServeAllocatesGameServersForMatches(t *testing.T) {
	k := newKube(t)
	names := k.create(t, 1, server{set: "arena", version: "1.0", ip: "10.0.0.7"})
	r := k.startReplica(t, Options{})
	r.waitReady(t, 1)

	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr, cfg.GRPC.Addr, cfg.NATS.Addr = "127.0.0.1:0", "127.0.0.1:0", "off"
	cfg.Match.Allocator = "gameservers"
	cfg.Match.GameServers.Address = r.grpcAddr
	cfg.Match.GameServers.Namespace = k.ns
	cfg.Match.GameServers.Set = "arena"
	cfg.Match.GameServers.Port = "game"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := rallyserver.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())

	conn, err := grpc.NewClient(s.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mc := matchv1.NewMatchServiceClient(conn)
	got := make(chan *matchv1.Assignment, 2)
	users := map[string]*rally.Session{}
	for _, name := range []string{"gsann", "gsbob"} {
		sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-"+name+"-0123456789", name, true)
		if err != nil {
			t.Fatal(err)
		}
		users[name] = sess
		stream, err := mc.FindOpponent(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+sess.Token), &matchv1.TicketRequest{Queue: "duel"})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				u, err := stream.Recv()
				if err != nil {
					return
				}
				if u.GetKind() == matchv1.TicketUpdate_KIND_MATCHED {
					got <- u.GetAssignment()
					return
				}
			}
		}()
	}
	want := names[0] + ".arena." + k.ns + ".svc:7777"
	var first *matchv1.Assignment
	for i := 0; i < 2; i++ {
		select {
		case a := <-got:
			if a.GetConnection() != want || a.GetReservation() != "" {
				t.Fatalf("assignment %v, want connection %s and no room reservation", a, want)
			}
			if first != nil && first.GetMatchId() != a.GetMatchId() {
				t.Fatalf("players in different matches: %v / %v", first, a)
			}
			first = a
		case <-ctx.Done():
			t.Fatal("no match on a game server")
		}
	}
	pod := k.pod(t, names[0])
	if pod.Labels[gamev1.LabelState] != string(gamev1.StateAllocated) {
		t.Fatalf("the game server was not allocated: %v", pod.Labels)
	}

	// The game server reports the result with the token its allocation
	// carries, without a player session; the result counts at once.
	var meta map[string]string
	if err := json.Unmarshal([]byte(pod.Annotations[gamev1.AnnotationAllocation]), &meta); err != nil || meta["match_id"] != first.GetMatchId() || meta["result_token"] == "" {
		t.Fatalf("allocation metadata %v: %v", meta, err)
	}
	report := &matchv1.ReportResultRequest{MatchId: first.GetMatchId(), Results: []*matchv1.TeamResult{
		{UserIds: []string{users["gsbob"].UserID}, Rank: 0}, {UserIds: []string{users["gsann"].UserID}, Rank: 1},
	}}
	report.ResultToken = meta["result_token"][1:] + "x"
	if _, err := mc.ReportResult(ctx, report); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a forged result token: %v", err)
	}
	report.ResultToken = meta["result_token"]
	resp, err := mc.ReportResult(ctx, report)
	if err != nil || resp.GetState() != matchv1.ResultState_RESULT_STATE_RATED || resp.GetRatings()[users["gsbob"].UserID].GetMu() <= 1500 {
		t.Fatalf("the game server's report: %v %v", resp, err)
	}
	report.ResultToken = ""
	playerCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+users["gsann"].Token)
	if _, err := mc.ReportResult(playerCtx, report); status.Code(err) != codes.NotFound {
		t.Fatalf("a player report after the host's: %v", err)
	}
}
