package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	lbv1 "github.com/rallyhq/rally/api/proto/rally/leaderboard/v1"
	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/leaderboard"
	"github.com/rallyhq/rally/internal/testsvc"
	"github.com/rallyhq/rally/sdk/go/rally"
)

func leaderboardClient(t *testing.T, s *Server) lbv1.LeaderboardServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(s.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return lbv1.NewLeaderboardServiceClient(conn)
}

func wantCode(t *testing.T, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

const testBoards = `
boards:
  - id: arena
  - id: season
    operator: incr
    authoritative: true
    metadata: {title: Season points}
`

func owners(recs []*lbv1.Record) string {
	var out []string
	for _, r := range recs {
		out = append(out, r.GetUsername())
	}
	return strings.Join(out, ",")
}

// Players use leaderboards over gRPC with their session tokens; the server
// writes to an authoritative board through its Go API; permissions and bad
// input get the right codes; records and admin rights survive a restart.
func TestLeaderboardsOverGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(t)
	cfg.Leaderboard.Boards = filepath.Join(t.TempDir(), "boards.yaml")
	if err := os.WriteFile(cfg.Leaderboard.Boards, []byte(testBoards), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, cfg)
	lc := leaderboardClient(t, s)
	base := "http://" + s.Addrs().HTTP
	login := func(name string) *rally.Session {
		sess, err := rally.AuthenticateDevice(ctx, base, "device-lb-"+name+"-0001", name, true)
		if err != nil {
			t.Fatal(err)
		}
		return sess
	}
	alice, bob := login("alice"), login("bob")
	as, bs := bearer(ctx, alice.Token), bearer(ctx, bob.Token)

	if r, err := lc.Submit(as, &lbv1.SubmitRequest{BoardId: "arena", Score: 100, Metadata: `{"map":"dunes"}`}); err != nil || r.GetRecord().GetRank() != 1 || !r.GetChanged() {
		t.Fatalf("alice submit: %v %v", r, err)
	}
	if r, err := lc.Submit(bs, &lbv1.SubmitRequest{BoardId: "arena", Score: 150}); err != nil || r.GetRecord().GetRank() != 1 {
		t.Fatalf("bob submit: %v %v", r, err)
	}
	r, err := lc.Submit(as, &lbv1.SubmitRequest{BoardId: "arena", Score: 90})
	if err != nil || r.GetChanged() || r.GetRecord().GetScore() != 100 || r.GetRecord().GetRank() != 2 || r.GetRecord().GetSubmits() != 2 {
		t.Fatalf("a worse best: %v %v", r, err)
	}
	top, err := lc.Top(bs, &lbv1.TopRequest{BoardId: "arena"})
	if err != nil || owners(top.GetRecords()) != "bob,alice" || top.GetPeriodId() != leaderboard.AllPeriod {
		t.Fatalf("top: %v %v", top, err)
	}
	if rec := top.GetRecords()[1]; rec.GetOwnerId() != alice.UserID || rec.GetMetadata() != `{"map":"dunes"}` || rec.GetBoardId() != "arena" {
		t.Fatalf("alice's record: %v", rec)
	}
	if rk, err := lc.Rank(as, &lbv1.RankRequest{BoardId: "arena"}); err != nil || rk.GetRank() != 2 || rk.GetOwnerId() != alice.UserID {
		t.Fatalf("own rank: %v %v", rk, err)
	}
	around, err := lc.Around(as, &lbv1.AroundRequest{BoardId: "arena", Limit: 3})
	if err != nil || owners(around.GetRecords()) != "bob,alice" {
		t.Fatalf("around: %v %v", around, err)
	}
	recs, err := lc.Records(as, &lbv1.RecordsRequest{BoardId: "arena", OwnerIds: []string{bob.UserID, "nobody"}})
	if err != nil || owners(recs.GetRecords()) != "bob" {
		t.Fatalf("records: %v %v", recs, err)
	}

	// Authoritative: players are refused, the server's Go API writes.
	_, err = lc.Submit(as, &lbv1.SubmitRequest{BoardId: "season", Score: 1000})
	wantCode(t, err, codes.PermissionDenied, "player write to an authoritative board")
	if _, err := s.Leaderboards().Submit(ctx, "season", leaderboard.Write{Owner: alice.UserID, Username: "alice", Score: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Leaderboards().Submit(ctx, "season", leaderboard.Write{Owner: alice.UserID, Score: 4}); err != nil {
		t.Fatal(err)
	}
	if rk, err := lc.Rank(bs, &lbv1.RankRequest{BoardId: "season", OwnerId: alice.UserID}); err != nil || rk.GetScore() != 7 {
		t.Fatalf("season rank: %v %v", rk, err)
	}
	_, err = lc.Delete(as, &lbv1.DeleteRequest{BoardId: "season"})
	wantCode(t, err, codes.PermissionDenied, "player delete on an authoritative board")
	_, err = lc.Delete(as, &lbv1.DeleteRequest{BoardId: "arena", OwnerId: bob.UserID})
	wantCode(t, err, codes.PermissionDenied, "deleting another player's record")
	_, err = lc.CreateBoard(as, &lbv1.Board{Id: "mine"})
	wantCode(t, err, codes.PermissionDenied, "CreateBoard by a player who is not an admin")

	// Sessions and bad input.
	_, err = lc.Top(ctx, &lbv1.TopRequest{BoardId: "arena"})
	wantCode(t, err, codes.Unauthenticated, "no token")
	_, err = lc.Top(as, &lbv1.TopRequest{BoardId: "arena", Cursor: "%%%"})
	wantCode(t, err, codes.InvalidArgument, "bad cursor")
	_, err = lc.Top(as, &lbv1.TopRequest{BoardId: "arena", Limit: 1000})
	wantCode(t, err, codes.InvalidArgument, "limit over 100")
	_, err = lc.Submit(as, &lbv1.SubmitRequest{BoardId: "arena", Metadata: strings.Repeat("m", 5000)})
	wantCode(t, err, codes.InvalidArgument, "huge metadata")
	_, err = lc.Submit(as, &lbv1.SubmitRequest{BoardId: "arena", Score: 1 << 60})
	wantCode(t, err, codes.InvalidArgument, "score out of range")
	_, err = lc.Submit(as, &lbv1.SubmitRequest{BoardId: "arena", Operator: 42})
	wantCode(t, err, codes.InvalidArgument, "unknown operator")
	_, err = lc.Top(as, &lbv1.TopRequest{BoardId: "nope"})
	wantCode(t, err, codes.NotFound, "unknown board")
	_, err = lc.Rank(bs, &lbv1.RankRequest{BoardId: "season"})
	wantCode(t, err, codes.NotFound, "rank without a record")

	// Paging with a cursor over gRPC.
	page, err := lc.Top(as, &lbv1.TopRequest{BoardId: "arena", Limit: 1})
	if err != nil || owners(page.GetRecords()) != "bob" || page.GetNextCursor() == "" {
		t.Fatalf("page 1: %v %v", page, err)
	}
	page, err = lc.Top(as, &lbv1.TopRequest{BoardId: "arena", Limit: 1, Cursor: page.GetNextCursor()})
	if err != nil || owners(page.GetRecords()) != "alice" {
		t.Fatalf("page 2: %v %v", page, err)
	}

	boards, err := lc.ListBoards(as, &lbv1.ListBoardsRequest{})
	if err != nil || len(boards.GetBoards()) != 2 || boards.GetBoards()[1].GetMetadata()["title"] != "Season points" ||
		!boards.GetBoards()[1].GetAuthoritative() || boards.GetBoards()[0].GetCurrentPeriod().GetId() != leaderboard.AllPeriod {
		t.Fatalf("boards: %v %v", boards, err)
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`rally_leaderboard_requests_total{op="submit",outcome="ok"}`,
		`rally_leaderboard_rejections_total{reason="authoritative"} 2`,
		`rally_leaderboard_rejections_total{reason="not_admin"} 1`,
		"rally_leaderboard_commit_batch_size_count",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// A restart keeps every record; listing alice as an admin lets her
	// create a board over the API.
	shutdown(t, s)
	cfg.Leaderboard.Admins = "someone-else, " + alice.UserID
	s = startServer(t, cfg)
	defer shutdown(t, s)
	lc = leaderboardClient(t, s)
	base = "http://" + s.Addrs().HTTP
	alice = login("alice")
	as = bearer(ctx, alice.Token)
	top, err = lc.Top(as, &lbv1.TopRequest{BoardId: "arena"})
	if err != nil || owners(top.GetRecords()) != "bob,alice" || top.GetRecords()[1].GetSubmits() != 2 {
		t.Fatalf("after restart: %v %v", top, err)
	}
	b, err := lc.CreateBoard(as, &lbv1.Board{Id: "daily_laps", SortOrder: lbv1.SortOrder_SORT_ORDER_ASC, ResetSchedule: "@daily", TimeZone: "Asia/Tokyo"})
	if err != nil || b.GetCurrentPeriod().GetEndUnixMs() == 0 || b.GetOperator() != lbv1.Operator_OPERATOR_BEST {
		t.Fatalf("admin CreateBoard: %v %v", b, err)
	}
	if got, err := lc.GetBoard(as, &lbv1.GetBoardRequest{Id: "daily_laps"}); err != nil || got.GetSortOrder() != lbv1.SortOrder_SORT_ORDER_ASC {
		t.Fatalf("GetBoard: %v %v", got, err)
	}
	_, err = lc.CreateBoard(as, &lbv1.Board{Id: "daily_laps", SortOrder: lbv1.SortOrder_SORT_ORDER_DESC})
	wantCode(t, err, codes.FailedPrecondition, "changing a board's sort order")
	ps, err := lc.ListPeriods(as, &lbv1.ListPeriodsRequest{BoardId: "arena"})
	if err != nil || len(ps.GetPeriods()) != 1 || ps.GetPeriods()[0].GetId() != leaderboard.AllPeriod {
		t.Fatalf("periods: %v %v", ps, err)
	}
}

// Two replicas on one Redis serve one leaderboard: a score submitted to
// either ranks on both.
func TestLeaderboardsShareRedis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rds := testsvc.StartRedis(t)
	boards := filepath.Join(t.TempDir(), "boards.yaml")
	if err := os.WriteFile(boards, []byte(testBoards), 0o600); err != nil {
		t.Fatal(err)
	}
	var servers []*Server
	var clients []lbv1.LeaderboardServiceClient
	var ctxs []context.Context
	for i, name := range []string{"ann", "ben"} {
		cfg := testConfig(t)
		cfg.Leaderboard.Store, cfg.Leaderboard.RedisURL, cfg.Leaderboard.Boards = "redis", rds.URL(), boards
		s := startServer(t, cfg)
		defer shutdown(t, s)
		servers = append(servers, s)
		clients = append(clients, leaderboardClient(t, s))
		sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-lbr-"+name+"-0001", name, true)
		if err != nil {
			t.Fatal(err)
		}
		ctxs = append(ctxs, bearer(ctx, sess.Token))
		if _, err := clients[i].Submit(ctxs[i], &lbv1.SubmitRequest{BoardId: "arena", Score: int64(10 * (i + 1))}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range clients {
		top, err := c.Top(ctxs[i], &lbv1.TopRequest{BoardId: "arena"})
		if err != nil || owners(top.GetRecords()) != "ben,ann" {
			t.Fatalf("replica %d sees %v %v", i, top, err)
		}
	}
	// A board created through one replica's Go API is found by the other.
	if _, err := servers[0].Leaderboards().CreateBoard(ctx, leaderboard.Board{ID: "late"}); err != nil {
		t.Fatal(err)
	}
	if _, err := clients[1].Submit(ctxs[1], &lbv1.SubmitRequest{BoardId: "late", Score: 1}); err != nil {
		t.Fatalf("other replica's new board: %v", err)
	}
}

// The same service answers on the WebSocket through the SDK's typed calls.
func TestLeaderboardsOverTheSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(t)
	cfg.Leaderboard.Boards = filepath.Join(t.TempDir(), "boards.yaml")
	if err := os.WriteFile(cfg.Leaderboard.Boards, []byte(testBoards), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, cfg)
	defer shutdown(t, s)
	cara, dan := player(t, s, "cara", rally.Options{}), player(t, s, "dan", rally.Options{})
	if r, err := cara.SubmitScore(ctx, "arena", 42, 1, `{"kills":3}`); err != nil || r.GetRecord().GetRank() != 1 {
		t.Fatalf("cara: %v %v", r, err)
	}
	if _, err := dan.SubmitScore(ctx, "arena", 50, 0, ""); err != nil {
		t.Fatal(err)
	}
	page, err := cara.TopRecords(ctx, "arena", "", 10)
	if err != nil || owners(page.GetRecords()) != "dan,cara" || page.GetRecords()[1].GetMetadata() != `{"kills":3}` {
		t.Fatalf("top: %v %v", page, err)
	}
	if rk, err := cara.Rank(ctx, "arena", ""); err != nil || rk.GetRank() != 2 || rk.GetOwnerId() != cara.UserID() {
		t.Fatalf("rank: %v %v", rk, err)
	}
	around, err := dan.RecordsAround(ctx, "arena", cara.UserID(), 1)
	if err != nil || owners(around.GetRecords()) != "cara" {
		t.Fatalf("around: %v %v", around, err)
	}
	_, err = cara.SubmitScore(ctx, "season", 1, 0, "")
	var se *rally.ServerError
	if !errors.As(err, &se) || se.Code() != rtv1.Error_CODE_PERMISSION_DENIED {
		t.Fatalf("authoritative board over the socket: %v", err)
	}
	_, err = cara.TopRecords(ctx, "arena", "not-a-cursor", 10)
	if !errors.As(err, &se) || se.Code() != rtv1.Error_CODE_BAD_REQUEST {
		t.Fatalf("bad cursor over the socket: %v", err)
	}
	if ok, err := dan.DeleteScore(ctx, "arena"); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if boards, err := dan.Leaderboards(ctx); err != nil || len(boards) != 2 {
		t.Fatalf("boards: %v %v", boards, err)
	}
}
