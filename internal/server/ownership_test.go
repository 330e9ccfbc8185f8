package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
	configv1 "github.com/rallyhq/rally/api/proto/rally/config/v1"
	lbv1 "github.com/rallyhq/rally/api/proto/rally/leaderboard/v1"
	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// strangerCase is what a player who owns nothing calls on one method, aimed
// at another player's objects, and the codes that may answer. public marks
// a method that acts on the caller's own state or reads what is public by
// design (leaderboards); it must then succeed, and check verifies that the
// victim's objects are untouched.
type strangerCase struct {
	req     proto.Message
	newResp func() proto.Message
	stream  bool
	want    []codes.Code
	public  string
}

// callAs is one way to reach the services: gRPC with a bearer token, or a
// Call envelope on the socket.
type callAs interface {
	call(ctx context.Context, method string, c strangerCase) error
}

type grpcCaller struct {
	conn  *grpc.ClientConn
	token string
}

func (g grpcCaller) call(ctx context.Context, method string, c strangerCase) error {
	ctx = bearer(ctx, g.token)
	if !c.stream {
		return g.conn.Invoke(ctx, method, c.req, c.newResp())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := g.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
	if err != nil {
		return err
	}
	if err := st.SendMsg(c.req); err != nil {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	return st.RecvMsg(c.newResp()) // the first message, or the refusal
}

type socketCaller struct{ c *rally.Client }

// socketCodes mirror the gRPC codes a Call answers with.
var socketCodes = map[rtv1.Error_Code]codes.Code{
	rtv1.Error_CODE_NOT_FOUND: codes.NotFound, rtv1.Error_CODE_PERMISSION_DENIED: codes.PermissionDenied,
	rtv1.Error_CODE_BAD_REQUEST: codes.InvalidArgument, rtv1.Error_CODE_FAILED_PRECONDITION: codes.FailedPrecondition,
	rtv1.Error_CODE_UNAUTHENTICATED: codes.Unauthenticated, rtv1.Error_CODE_INTERNAL: codes.Internal,
}

func (s socketCaller) call(ctx context.Context, method string, c strangerCase) error {
	var err error
	if !c.stream {
		err = s.c.Call(ctx, method, c.req, c.newResp())
	} else {
		sctx, cancel := context.WithCancel(ctx)
		err = s.c.Stream(sctx, method, c.req, c.newResp, func(proto.Message) { cancel() })
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			err = nil // the first message arrived
		}
		cancel()
	}
	var se *rally.ServerError
	if errors.As(err, &se) {
		code, ok := socketCodes[se.Code()]
		if !ok {
			code = codes.Unknown
		}
		return status.Error(code, se.E.GetMessage())
	}
	return err
}

// A player who owns nothing calls every method of every service, over gRPC
// and over the socket, aimed at another player's ticket, match, chat
// channels and messages, room and leaderboard record: each is refused with
// PermissionDenied or NotFound (NotFound where even existence must not
// leak), and the victim's objects are untouched afterwards. A method added
// to a service without a case here fails the test.
func TestStrangersTouchNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig(t)
	cfg.Leaderboard.Boards = filepath.Join(t.TempDir(), "boards.yaml")
	if err := os.WriteFile(cfg.Leaderboard.Boards, []byte(testBoards), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, cfg)
	defer shutdown(t, s)
	base := "http://" + s.Addrs().HTTP
	login := func(name string) *rally.Session {
		sess, err := rally.AuthenticateDevice(ctx, base, "device-own-"+name+"-0001", name, true)
		if err != nil {
			t.Fatal(err)
		}
		return sess
	}
	alice, bob, mallory := login("alice"), login("bob"), login("mallory")
	dial := func(sess *rally.Session) *rally.Client {
		c, err := rally.Dial(ctx, sess, rally.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ac, mc := dial(alice), dial(mallory)
	match := matchClient(t, s)

	// Alice's objects: a waiting ticket, a match with Bob, a direct channel
	// with Bob and a group channel with a message each, a room, a record.
	ticket, err := match.CreateTicket(bearer(ctx, alice.Token), &matchv1.TicketRequest{Queue: "squad"})
	if err != nil {
		t.Fatal(err)
	}
	matchID := duel(ctx, t, match, alice, bob)
	direct, err := ac.JoinDirectChat(ctx, bob.UserID)
	if err != nil {
		t.Fatal(err)
	}
	dm, err := ac.SendChat(ctx, direct.GetChannel().GetId(), "for bob only")
	if err != nil {
		t.Fatal(err)
	}
	group, err := ac.JoinGroupChat(ctx, "guild-ownership")
	if err != nil {
		t.Fatal(err)
	}
	gm, err := ac.SendChat(ctx, group.GetChannel().GetId(), "alice's words")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mc.JoinGroupChat(ctx, "guild-ownership"); err != nil {
		t.Fatal(err) // a group is open to join; its messages stay their senders'
	}
	joined, err := ac.CreateRoom(ctx, &rtv1.CreateRoom{Handler: "arena"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := joined.GetRoom().GetId()
	if _, err := ac.SubmitScore(ctx, "arena", 100, 0, ""); err != nil {
		t.Fatal(err)
	}
	directID, groupID := direct.GetChannel().GetId(), group.GetChannel().GetId()

	denied := []codes.Code{codes.PermissionDenied}
	hidden := []codes.Code{codes.NotFound}
	ok := []codes.Code{codes.OK}
	newT := func() proto.Message { return new(matchv1.Ticket) }
	newU := func() proto.Message { return new(matchv1.TicketUpdate) }
	cases := map[string]strangerCase{
		matchv1.MatchService_FindOpponent_FullMethodName: {stream: true, newResp: newU, want: denied,
			req: &matchv1.TicketRequest{Queue: "duel", Players: []*matchv1.TicketPlayer{{UserId: alice.UserID}}}},
		matchv1.MatchService_CreateTicket_FullMethodName: {newResp: newT, want: denied,
			req: &matchv1.TicketRequest{Queue: "duel", Players: []*matchv1.TicketPlayer{{UserId: alice.UserID}}}},
		matchv1.MatchService_CancelTicket_FullMethodName: {newResp: newT, want: hidden,
			req: &matchv1.CancelTicketRequest{TicketId: ticket.GetId()}},
		matchv1.MatchService_WatchTicket_FullMethodName: {stream: true, newResp: newU, want: hidden,
			req: &matchv1.WatchTicketRequest{TicketId: ticket.GetId()}},
		matchv1.MatchService_ReportResult_FullMethodName: {newResp: func() proto.Message { return new(matchv1.ReportResultResponse) }, want: hidden,
			req: &matchv1.ReportResultRequest{MatchId: matchID, Results: []*matchv1.TeamResult{
				{UserIds: []string{alice.UserID}, Rank: 1}, {UserIds: []string{bob.UserID}, Rank: 0}}}},

		chatv1.ChatService_Join_FullMethodName: {newResp: func() proto.Message { return new(chatv1.JoinResponse) }, want: denied,
			req: &chatv1.JoinRequest{Target: &chatv1.JoinRequest_RoomId{RoomId: roomID}}},
		chatv1.ChatService_Leave_FullMethodName: {newResp: func() proto.Message { return new(chatv1.LeaveResponse) }, want: ok,
			public: "leaves the caller's own membership only", req: &chatv1.LeaveRequest{ChannelId: directID}},
		chatv1.ChatService_Send_FullMethodName: {newResp: func() proto.Message { return new(chatv1.Message) }, want: denied,
			req: &chatv1.SendRequest{ChannelId: directID, Text: "hello from mallory"}},
		chatv1.ChatService_Edit_FullMethodName: {newResp: func() proto.Message { return new(chatv1.Message) }, want: denied,
			req: &chatv1.EditRequest{ChannelId: groupID, MessageId: gm.GetId(), Text: "mallory's words"}},
		chatv1.ChatService_Delete_FullMethodName: {newResp: func() proto.Message { return new(chatv1.DeleteResponse) }, want: denied,
			req: &chatv1.DeleteRequest{ChannelId: groupID, MessageId: gm.GetId()}},
		chatv1.ChatService_History_FullMethodName: {newResp: func() proto.Message { return new(chatv1.HistoryResponse) }, want: denied,
			req: &chatv1.HistoryRequest{ChannelId: directID}},
		chatv1.ChatService_Subscribe_FullMethodName: {stream: true, newResp: func() proto.Message { return new(chatv1.Event) }, want: denied,
			req: &chatv1.SubscribeRequest{ChannelIds: []string{directID}}},

		lbv1.LeaderboardService_Submit_FullMethodName: {newResp: func() proto.Message { return new(lbv1.SubmitResponse) }, want: denied,
			req: &lbv1.SubmitRequest{BoardId: "season", Score: 1_000_000}},
		lbv1.LeaderboardService_Delete_FullMethodName: {newResp: func() proto.Message { return new(lbv1.DeleteResponse) }, want: denied,
			req: &lbv1.DeleteRequest{BoardId: "arena", OwnerId: alice.UserID}},
		lbv1.LeaderboardService_CreateBoard_FullMethodName: {newResp: func() proto.Message { return new(lbv1.Board) }, want: denied,
			req: &lbv1.Board{Id: "mallorys-board"}},
		lbv1.LeaderboardService_Top_FullMethodName: {newResp: func() proto.Message { return new(lbv1.RecordPage) }, want: ok,
			public: "leaderboards are public", req: &lbv1.TopRequest{BoardId: "arena"}},
		lbv1.LeaderboardService_Around_FullMethodName: {newResp: func() proto.Message { return new(lbv1.RecordList) }, want: ok,
			public: "leaderboards are public", req: &lbv1.AroundRequest{BoardId: "arena", OwnerId: alice.UserID}},
		lbv1.LeaderboardService_Records_FullMethodName: {newResp: func() proto.Message { return new(lbv1.RecordList) }, want: ok,
			public: "leaderboards are public", req: &lbv1.RecordsRequest{BoardId: "arena", OwnerIds: []string{alice.UserID}}},
		lbv1.LeaderboardService_Rank_FullMethodName: {newResp: func() proto.Message { return new(lbv1.Record) }, want: ok,
			public: "leaderboards are public", req: &lbv1.RankRequest{BoardId: "arena", OwnerId: alice.UserID}},
		lbv1.LeaderboardService_ListPeriods_FullMethodName: {newResp: func() proto.Message { return new(lbv1.ListPeriodsResponse) }, want: ok,
			public: "leaderboards are public", req: &lbv1.ListPeriodsRequest{BoardId: "arena"}},
		lbv1.LeaderboardService_GetBoard_FullMethodName: {newResp: func() proto.Message { return new(lbv1.Board) }, want: ok,
			public: "leaderboards are public", req: &lbv1.GetBoardRequest{Id: "arena"}},
		lbv1.LeaderboardService_ListBoards_FullMethodName: {newResp: func() proto.Message { return new(lbv1.ListBoardsResponse) }, want: ok,
			public: "leaderboards are public", req: &lbv1.ListBoardsRequest{}},

		configv1.ConfigService_GetConfig_FullMethodName: {newResp: func() proto.Message { return new(configv1.Config) }, want: ok,
			public: "resolves for the session's player only (the request names no player)", req: &configv1.GetConfigRequest{}},
		configv1.ConfigService_Watch_FullMethodName: {stream: true, newResp: func() proto.Message { return new(configv1.Config) }, want: ok,
			public: "resolves for the session's player only (the request names no player)", req: &configv1.WatchRequest{}},
	}

	// Every method the server serves has a case.
	probe := grpc.NewServer()
	for _, register := range s.grpcServices {
		register(probe)
	}
	served := 0
	for name, info := range probe.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + name + "/" + m.Name
			served++
			if _, ok := cases[full]; !ok {
				t.Errorf("%s has no stranger case", full)
			}
		}
	}
	if served != len(cases) {
		t.Errorf("%d cases for %d served methods", len(cases), served)
	}

	conn, err := grpc.NewClient(s.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for transport, c := range map[string]callAs{"grpc": grpcCaller{conn, mallory.Token}, "socket": socketCaller{mc}} {
		for method, tc := range cases {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := c.call(cctx, method, tc)
			cancel()
			if code := status.Code(err); !slices.Contains(tc.want, code) {
				t.Errorf("%s %s as a stranger: %v, want %v", transport, method, err, tc.want)
			}
		}
	}

	// Socket requests that name another player's objects.
	if err := mc.CancelMatch(ctx, ticket.GetId()); !isCode(err, rtv1.Error_CODE_NOT_FOUND) {
		t.Errorf("socket CancelMatch of alice's ticket: %v", err)
	}
	if err := mc.LeaveRoom(ctx, roomID); !isCode(err, rtv1.Error_CODE_NOT_IN_ROOM) {
		t.Errorf("socket LeaveRoom of alice's room: %v", err)
	}

	// Alice's objects are as she left them.
	watch, err := match.WatchTicket(bearer(ctx, alice.Token), &matchv1.WatchTicketRequest{TicketId: ticket.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := watch.Recv(); err != nil || u.GetKind() != matchv1.TicketUpdate_KIND_QUEUED {
		t.Errorf("alice's ticket after the strangers: %v %v", u, err)
	}
	hist, err := ac.ChatHistory(ctx, directID, "", 10)
	if err != nil || len(hist.GetMessages()) != 1 || hist.GetMessages()[0].GetText() != dm.GetText() {
		t.Errorf("alice's direct channel: %v %v", hist, err)
	}
	hist, err = ac.ChatHistory(ctx, groupID, "", 10)
	if err != nil || len(hist.GetMessages()) != 1 || hist.GetMessages()[0].GetText() != "alice's words" || hist.GetMessages()[0].GetEditedUnixMs() != 0 {
		t.Errorf("alice's group message: %v %v", hist, err)
	}
	var rank lbv1.Record
	if err := ac.Call(ctx, lbv1.LeaderboardService_Rank_FullMethodName, &lbv1.RankRequest{BoardId: "arena"}, &rank); err != nil || rank.GetScore() != 100 {
		t.Errorf("alice's record: %v %v", &rank, err)
	}
	var season lbv1.RecordPage
	if err := ac.Call(ctx, lbv1.LeaderboardService_Top_FullMethodName, &lbv1.TopRequest{BoardId: "season"}, &season); err != nil || len(season.GetRecords()) != 0 {
		t.Errorf("the authoritative board took a player's write: %v %v", &season, err)
	}
	resp, err := match.ReportResult(bearer(ctx, alice.Token), &matchv1.ReportResultRequest{MatchId: matchID, Results: []*matchv1.TeamResult{
		{UserIds: []string{alice.UserID}, Rank: 0}, {UserIds: []string{bob.UserID}, Rank: 1}}})
	if err != nil || resp.GetState() != matchv1.ResultState_RESULT_STATE_PENDING {
		t.Errorf("alice's report after the strangers: %v %v", resp, err)
	}
}

func isCode(err error, code rtv1.Error_Code) bool {
	var se *rally.ServerError
	return errors.As(err, &se) && se.Code() == code
}

// duel matches two players in the duel queue over gRPC and returns the
// match id.
func duel(ctx context.Context, t *testing.T, mc matchv1.MatchServiceClient, a, b *rally.Session) string {
	t.Helper()
	got := make(chan string, 2)
	for _, sess := range []*rally.Session{a, b} {
		stream, err := mc.FindOpponent(bearer(ctx, sess.Token), &matchv1.TicketRequest{Queue: "duel"})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				u, err := stream.Recv()
				if err != nil {
					got <- ""
					return
				}
				if u.GetKind() == matchv1.TicketUpdate_KIND_MATCHED {
					got <- u.GetAssignment().GetMatchId()
					return
				}
			}
		}()
	}
	first, second := <-got, <-got
	if first == "" || first != second {
		t.Fatalf("duel: match ids %q and %q", first, second)
	}
	return first
}

// Two players who each report their own win move no rating: the match is
// disputed, and a third report cannot tip it.
func TestForgedResultRatesNobody(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	mc := matchClient(t, s)
	base := "http://" + s.Addrs().HTTP
	var sess [2]*rally.Session
	for i, name := range []string{"forger", "honest"} {
		var err error
		if sess[i], err = rally.AuthenticateDevice(ctx, base, "device-forge-"+name+"-01", name, true); err != nil {
			t.Fatal(err)
		}
	}
	matchID := duel(ctx, t, mc, sess[0], sess[1])
	win := func(winner, loser *rally.Session) *matchv1.ReportResultRequest {
		return &matchv1.ReportResultRequest{MatchId: matchID, Results: []*matchv1.TeamResult{
			{UserIds: []string{winner.UserID}, Rank: 0}, {UserIds: []string{loser.UserID}, Rank: 1}}}
	}
	resp, err := mc.ReportResult(bearer(ctx, sess[0].Token), win(sess[0], sess[1]))
	if err != nil || resp.GetState() != matchv1.ResultState_RESULT_STATE_PENDING || len(resp.GetRatings()) != 0 {
		t.Fatalf("the forger's report: %v %v", resp, err)
	}
	resp, err = mc.ReportResult(bearer(ctx, sess[1].Token), win(sess[1], sess[0]))
	if err != nil || resp.GetState() != matchv1.ResultState_RESULT_STATE_DISPUTED || len(resp.GetRatings()) != 0 {
		t.Fatalf("the honest report: %v %v", resp, err)
	}
	if _, err := mc.ReportResult(bearer(ctx, sess[1].Token), win(sess[0], sess[1])); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a report after the dispute: %v", err)
	}
	// Nobody's rating moved: new tickets start from 1500.
	for _, p := range sess {
		tk, err := mc.CreateTicket(bearer(ctx, p.Token), &matchv1.TicketRequest{Queue: "squad"})
		if err != nil {
			t.Fatal(err)
		}
		if mu := tk.GetPlayers()[0].GetRating().GetMu(); mu != 1500 {
			t.Fatalf("%s rated %v after a disputed match", p.Username, mu)
		}
	}
	if got := metricValue(t, s, "rally_match_results_total", "outcome", "disputed"); got != 1 {
		t.Fatalf("disputes counted: %v", got)
	}
}

// metricValue reads a counter or gauge from the server's registry: the
// series whose label has the value given (or the only one).
func metricValue(t *testing.T, s *Server, name, label, value string) float64 {
	t.Helper()
	families, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || (l.GetName() == label && l.GetValue() == value)
			}
			if match {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}
