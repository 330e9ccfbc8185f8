package server

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/testsvc"
	"github.com/rallyhq/rally/sdk/go/rally"
)

func matchClient(t *testing.T, s *Server) matchv1.MatchServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(s.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return matchv1.NewMatchServiceClient(conn)
}

func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// Two players find each other over gRPC, land in one room with their own
// seat reservations, play, and report the result; ratings move and the
// result counts once.
func TestFindOpponentToRoomToResult(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mc := matchClient(t, s)
	base := "http://" + s.Addrs().HTTP

	type found struct {
		updates []*matchv1.TicketUpdate
		err     error
	}
	sessions := map[string]*rally.Session{}
	results := map[string]chan found{}
	for _, name := range []string{"alice", "bob"} {
		sess, err := rally.AuthenticateDevice(ctx, base, "device-mm-"+name+"-000", "mm"+name, true)
		if err != nil {
			t.Fatal(err)
		}
		sessions[name] = sess
		ch := make(chan found, 1)
		results[name] = ch
		stream, err := mc.FindOpponent(bearer(ctx, sess.Token), &matchv1.TicketRequest{
			Queue: "duel", RegionLatencyMs: map[string]uint32{"eu": 30},
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			var f found
			for {
				u, err := stream.Recv()
				if err != nil {
					f.err = err
					break
				}
				f.updates = append(f.updates, u)
				if u.GetKind() == matchv1.TicketUpdate_KIND_MATCHED {
					break
				}
			}
			ch <- f
		}()
	}
	assignments := map[string]*matchv1.Assignment{}
	for name, ch := range results {
		f := <-ch
		if f.err != nil {
			t.Fatalf("%s: %v", name, f.err)
		}
		first, last := f.updates[0], f.updates[len(f.updates)-1]
		if first.GetKind() != matchv1.TicketUpdate_KIND_QUEUED || last.GetKind() != matchv1.TicketUpdate_KIND_MATCHED {
			t.Fatalf("%s updates: %v", name, f.updates)
		}
		assignments[name] = last.GetAssignment()
	}
	a, b := assignments["alice"], assignments["bob"]
	if a.GetRoomId() == "" || a.GetRoomId() != b.GetRoomId() || a.GetMatchId() != b.GetMatchId() || a.GetRegion() != "eu" {
		t.Fatalf("assignments differ: %v / %v", a, b)
	}
	if a.GetReservation() == "" || a.GetReservation() == b.GetReservation() {
		t.Fatalf("reservations: %q %q", a.GetReservation(), b.GetReservation())
	}

	// The reserved room admits its players with their reservations only.
	for name, sess := range sessions {
		c, err := rally.Dial(ctx, sess, rally.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.JoinRoom(ctx, &rtv1.JoinRoom{RoomId: a.GetRoomId(), Reservation: "wrong"}); err == nil {
			t.Fatalf("%s joined with a wrong reservation", name)
		}
		if _, err := c.JoinRoom(ctx, &rtv1.JoinRoom{RoomId: a.GetRoomId(), Reservation: assignments[name].GetReservation()}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	intruder := player(t, s, "intruder", rally.Options{})
	if _, err := intruder.JoinRoom(ctx, &rtv1.JoinRoom{RoomId: a.GetRoomId(), Reservation: a.GetReservation()}); err == nil {
		t.Fatal("someone else's reservation admitted an intruder")
	}

	// Alice wins.
	report := &matchv1.ReportResultRequest{MatchId: a.GetMatchId(), Results: []*matchv1.TeamResult{
		{UserIds: []string{sessions["alice"].UserID}, Rank: 0},
		{UserIds: []string{sessions["bob"].UserID}, Rank: 1},
	}}
	if _, err := mc.ReportResult(bearer(ctx, intruder.UserID()), report); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("report without a session: %v", err)
	}
	// Bob's report alone rates nobody; Alice's agreeing report rates both.
	resp, err := mc.ReportResult(bearer(ctx, sessions["bob"].Token), report)
	if err != nil || resp.GetState() != matchv1.ResultState_RESULT_STATE_PENDING || len(resp.GetRatings()) != 0 {
		t.Fatalf("first report: %v %v", resp, err)
	}
	resp, err = mc.ReportResult(bearer(ctx, sessions["alice"].Token), report)
	if err != nil || resp.GetState() != matchv1.ResultState_RESULT_STATE_RATED {
		t.Fatalf("agreeing report: %v %v", resp, err)
	}
	ra, rb := resp.GetRatings()[sessions["alice"].UserID], resp.GetRatings()[sessions["bob"].UserID]
	if ra.GetMu() <= 1500 || rb.GetMu() >= 1500 || ra.GetSigma() >= 500 {
		t.Fatalf("ratings after the match: alice %v bob %v", ra, rb)
	}
	if _, err := mc.ReportResult(bearer(ctx, sessions["alice"].Token), report); status.Code(err) != codes.NotFound {
		t.Fatalf("a result counted twice: %v", err)
	}

	// The next ticket starts from the stored rating.
	tk, err := mc.CreateTicket(bearer(ctx, sessions["alice"].Token), &matchv1.TicketRequest{Queue: "duel"})
	if err != nil {
		t.Fatal(err)
	}
	if got := tk.GetPlayers()[0].GetRating().GetMu(); got != ra.GetMu() {
		t.Fatalf("ticket rating %v, stored %v", got, ra.GetMu())
	}
	if _, err := mc.CancelTicket(bearer(ctx, sessions["alice"].Token), &matchv1.CancelTicketRequest{TicketId: tk.GetId()}); err != nil {
		t.Fatal(err)
	}
}

func TestMatchServiceRejectsBadTickets(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mc := matchClient(t, s)
	sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-mm-bad-0000", "mmbad", true)
	if err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]*matchv1.TicketRequest{
		"unknown queue": {Queue: "nope"},
		"party too big": {Queue: "duel", Players: []*matchv1.TicketPlayer{{UserId: sess.UserID}, {UserId: "friend"}}},
		"not in party":  {Queue: "duel", Players: []*matchv1.TicketPlayer{{UserId: "someone-else"}}},
		"bad geo":       {Queue: "duel", Geo: &matchv1.GeoPoint{Lat: 120}},
	} {
		if _, err := mc.CreateTicket(bearer(ctx, sess.Token), req); err == nil {
			t.Errorf("%s: accepted", name)
		} else if c := status.Code(err); c != codes.InvalidArgument && c != codes.PermissionDenied {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := mc.CreateTicket(ctx, &matchv1.TicketRequest{Queue: "duel"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
}

// WatchTicket starts with where the ticket stands, follows it to its end,
// and serves only the ticket's players and only waiting tickets.
func TestWatchTicket(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mc := matchClient(t, s)
	owner, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-watch-owner-00", "watchowner", true)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-watch-other-00", "watchother", true)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := mc.CreateTicket(bearer(ctx, owner.Token), &matchv1.TicketRequest{Queue: "squad"})
	if err != nil {
		t.Fatal(err)
	}
	watch := func(token, id string) (matchv1.MatchService_WatchTicketClient, *matchv1.TicketUpdate, error) {
		st, err := mc.WatchTicket(bearer(ctx, token), &matchv1.WatchTicketRequest{TicketId: id})
		if err != nil {
			return nil, nil, err
		}
		u, err := st.Recv()
		return st, u, err
	}
	if _, _, err := watch(owner.Token, "no-such-ticket"); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown ticket: %v", err)
	}
	if _, _, err := watch(other.Token, tk.GetId()); status.Code(err) != codes.NotFound {
		t.Fatalf("another player's ticket: %v", err)
	}
	st, first, err := watch(owner.Token, tk.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if first.GetKind() != matchv1.TicketUpdate_KIND_QUEUED || first.GetTicket().GetId() != tk.GetId() || first.GetTicket().GetQueue() != "squad" {
		t.Fatalf("first update %v, want the queued ticket", first)
	}
	if _, err := mc.CancelTicket(bearer(ctx, owner.Token), &matchv1.CancelTicketRequest{TicketId: tk.GetId()}); err != nil {
		t.Fatal(err)
	}
	for {
		u, err := st.Recv()
		if err != nil {
			t.Fatalf("stream ended before the cancellation: %v", err)
		}
		if u.GetKind() == matchv1.TicketUpdate_KIND_CANCELLED {
			break
		}
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("stream did not end after the ticket did: %v", err)
	}
	if _, _, err := watch(owner.Token, tk.GetId()); status.Code(err) != codes.NotFound {
		t.Fatalf("cancelled ticket: %v", err)
	}
}

// Game clients queue over the socket too: FindMatch, MatchUpdate pushes,
// then the reserved room.
func TestFindMatchOverTheSocket(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	matched := make(chan *matchv1.Assignment, 2)
	opts := func() rally.Options {
		return rally.Options{OnMatch: func(u *matchv1.TicketUpdate) {
			if u.GetKind() == matchv1.TicketUpdate_KIND_MATCHED {
				matched <- u.GetAssignment()
			}
		}}
	}
	a := player(t, s, "sockalice", opts())
	b := player(t, s, "sockbob", opts())
	for _, c := range []*rally.Client{a, b} {
		if _, err := c.FindMatch(ctx, &matchv1.TicketRequest{Queue: "duel"}); err != nil {
			t.Fatal(err)
		}
	}
	var got []*matchv1.Assignment
	for len(got) < 2 {
		select {
		case asg := <-matched:
			got = append(got, asg)
		case <-ctx.Done():
			t.Fatal("no match over the socket")
		}
	}
	if got[0].GetRoomId() != got[1].GetRoomId() {
		t.Fatalf("different rooms: %v", got)
	}
	// A ticket cancelled over the socket ends with a cancelled update.
	id, err := a.FindMatch(ctx, &matchv1.TicketRequest{Queue: "squad"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CancelMatch(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// Two Rally replicas share one Redis pool and one NATS: a player streaming
// from each is matched with the other, and both hear it.
func TestTwoReplicasMatchAcrossRedis(t *testing.T) {
	rds := testsvc.StartRedis(t)
	cfgA := testConfig(t)
	cfgA.NATS.Addr = "127.0.0.1:0"
	cfgA.Match.Store, cfgA.Match.RedisURL = "redis", rds.URL()
	a := startServer(t, cfgA)
	defer shutdown(t, a)
	cfgB := testConfig(t)
	cfgB.NATS.URL = "nats://" + a.Addrs().NATS
	cfgB.Match.Store, cfgB.Match.RedisURL = "redis", rds.URL()
	b := startServer(t, cfgB)
	defer shutdown(t, b)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan *matchv1.Assignment, 2)
	for i, s := range []*Server{a, b} {
		sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, fmt.Sprintf("device-replica-%d-00", i), "", true)
		if err != nil {
			t.Fatal(err)
		}
		stream, err := matchClient(t, s).FindOpponent(bearer(ctx, sess.Token), &matchv1.TicketRequest{Queue: "duel"})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				u, err := stream.Recv()
				if err != nil {
					got <- nil
					return
				}
				if u.GetKind() == matchv1.TicketUpdate_KIND_MATCHED {
					got <- u.GetAssignment()
					return
				}
			}
		}()
	}
	first, second := <-got, <-got
	if first == nil || second == nil || first.GetMatchId() != second.GetMatchId() {
		t.Fatalf("assignments: %v / %v", first, second)
	}
}
