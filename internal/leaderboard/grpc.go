package leaderboard

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	lbv1 "github.com/rallyhq/rally/api/proto/rally/leaderboard/v1"
)

// Caller identifies the player behind a request.
type Caller func(ctx context.Context) (userID, username string, ok bool)

// GRPC serves rally.leaderboard.v1.LeaderboardService over a Service with
// a player's permissions: players write only their own records, never to
// authoritative boards, and only listed admins create boards.
type GRPC struct {
	lbv1.UnimplementedLeaderboardServiceServer
	svc    *Service
	caller Caller
	admins map[string]bool
}

// NewGRPC returns the gRPC service; admins are the user ids allowed to
// call CreateBoard.
func NewGRPC(svc *Service, caller Caller, admins []string) *GRPC {
	g := &GRPC{svc: svc, caller: caller, admins: map[string]bool{}}
	for _, a := range admins {
		g.admins[a] = true
	}
	return g
}

func (g *GRPC) player(ctx context.Context) (string, string, error) {
	uid, name, ok := g.caller(ctx)
	if !ok {
		return "", "", g.svc.reject("no_session", status.Error(codes.Unauthenticated, "no session"))
	}
	return uid, name, nil
}

// toStatus maps the Service's errors to gRPC codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrPermission):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrPrecondition):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, errClosed):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func recordProto(board, period string, r *Record) *lbv1.Record {
	return &lbv1.Record{
		BoardId: board, PeriodId: period, OwnerId: r.Owner, Username: r.Username, Score: r.Score, Subscore: r.Subscore,
		Metadata: r.Metadata, Rank: r.Rank, Submits: r.Submits,
		CreateTimeUnixMs: ms(r.Created), UpdateTimeUnixMs: ms(r.Updated),
	}
}

func recordsProto(board, period string, rs []Record) []*lbv1.Record {
	out := make([]*lbv1.Record, len(rs))
	for i := range rs {
		out[i] = recordProto(board, period, &rs[i])
	}
	return out
}

func periodProto(p Period) *lbv1.Period {
	return &lbv1.Period{Id: p.ID, StartUnixMs: ms(p.Start), EndUnixMs: ms(p.End)}
}

// BoardProto renders a board and its current period.
func BoardProto(b Board, cur Period) *lbv1.Board {
	return &lbv1.Board{
		Id: b.ID, SortOrder: lbv1.SortOrder(b.Sort + 1), Operator: lbv1.Operator(b.Operator),
		ResetSchedule: b.Reset, TimeZone: b.TimeZone, Authoritative: b.Authoritative, Metadata: b.Metadata,
		CreateTimeUnixMs: ms(b.Created), CurrentPeriod: periodProto(cur),
	}
}

// BoardFromProto reads a board definition from the API.
func BoardFromProto(p *lbv1.Board) (Board, error) {
	b := Board{
		ID: p.GetId(), Reset: p.GetResetSchedule(), TimeZone: p.GetTimeZone(), Authoritative: p.GetAuthoritative(),
		Metadata: p.GetMetadata(),
	}
	switch p.GetSortOrder() {
	case lbv1.SortOrder_SORT_ORDER_UNSPECIFIED, lbv1.SortOrder_SORT_ORDER_DESC:
		b.Sort = Desc
	case lbv1.SortOrder_SORT_ORDER_ASC:
		b.Sort = Asc
	default:
		return Board{}, invalidf("unknown sort_order %d", p.GetSortOrder())
	}
	op, err := operatorFromProto(p.GetOperator())
	if err != nil {
		return Board{}, err
	}
	b.Operator = op
	return b, nil
}

func operatorFromProto(o lbv1.Operator) (Operator, error) {
	if o < 0 || o > lbv1.Operator_OPERATOR_DECR {
		return 0, invalidf("unknown operator %d", o)
	}
	return Operator(o), nil
}

func limitOf(n uint32) int {
	if n > MaxPageSize {
		return MaxPageSize + 1 // refused by the Service with the bounds
	}
	return int(n)
}

// Submit implements LeaderboardService: the caller's own score, never on
// an authoritative board.
func (g *GRPC) Submit(ctx context.Context, req *lbv1.SubmitRequest) (*lbv1.SubmitResponse, error) {
	uid, name, err := g.player(ctx)
	if err != nil {
		return nil, err
	}
	st, err := g.svc.board(ctx, req.GetBoardId())
	if err != nil {
		return nil, toStatus(err)
	}
	if st.definition().Authoritative {
		return nil, g.svc.reject("authoritative", status.Errorf(codes.PermissionDenied,
			"board %s is authoritative: only the server writes to it", req.GetBoardId()))
	}
	op, err := operatorFromProto(req.GetOperator())
	if err != nil {
		return nil, toStatus(g.svc.reject("bad_board", err))
	}
	res, err := g.svc.Submit(ctx, req.GetBoardId(), Write{
		Owner: uid, Username: name, Score: req.GetScore(), Subscore: req.GetSubscore(),
		Metadata: req.GetMetadata(), Operator: op,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &lbv1.SubmitResponse{Record: recordProto(req.GetBoardId(), res.Period, &res.Record), Changed: res.Changed}, nil
}

// Top implements LeaderboardService.
func (g *GRPC) Top(ctx context.Context, req *lbv1.TopRequest) (*lbv1.RecordPage, error) {
	if _, _, err := g.player(ctx); err != nil {
		return nil, err
	}
	page, err := g.svc.Top(ctx, req.GetBoardId(), req.GetPeriodId(), req.GetCursor(), limitOf(req.GetLimit()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &lbv1.RecordPage{
		Records: recordsProto(req.GetBoardId(), page.Period, page.Records), NextCursor: page.Next, PeriodId: page.Period,
	}, nil
}

// self returns owner, or the caller when owner is empty.
func (g *GRPC) self(ctx context.Context, owner string) (string, error) {
	uid, _, err := g.player(ctx)
	if err != nil {
		return "", err
	}
	if owner == "" {
		return uid, nil
	}
	return owner, nil
}

// Around implements LeaderboardService.
func (g *GRPC) Around(ctx context.Context, req *lbv1.AroundRequest) (*lbv1.RecordList, error) {
	owner, err := g.self(ctx, req.GetOwnerId())
	if err != nil {
		return nil, err
	}
	recs, period, err := g.svc.Around(ctx, req.GetBoardId(), req.GetPeriodId(), owner, limitOf(req.GetLimit()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &lbv1.RecordList{Records: recordsProto(req.GetBoardId(), period, recs), PeriodId: period}, nil
}

// Records implements LeaderboardService.
func (g *GRPC) Records(ctx context.Context, req *lbv1.RecordsRequest) (*lbv1.RecordList, error) {
	if _, _, err := g.player(ctx); err != nil {
		return nil, err
	}
	recs, period, err := g.svc.Records(ctx, req.GetBoardId(), req.GetPeriodId(), req.GetOwnerIds())
	if err != nil {
		return nil, toStatus(err)
	}
	return &lbv1.RecordList{Records: recordsProto(req.GetBoardId(), period, recs), PeriodId: period}, nil
}

// Rank implements LeaderboardService.
func (g *GRPC) Rank(ctx context.Context, req *lbv1.RankRequest) (*lbv1.Record, error) {
	owner, err := g.self(ctx, req.GetOwnerId())
	if err != nil {
		return nil, err
	}
	rec, period, err := g.svc.Rank(ctx, req.GetBoardId(), req.GetPeriodId(), owner)
	if err != nil {
		return nil, toStatus(err)
	}
	return recordProto(req.GetBoardId(), period, &rec), nil
}

// Delete implements LeaderboardService: a player removes their own record
// from a board that is not authoritative.
func (g *GRPC) Delete(ctx context.Context, req *lbv1.DeleteRequest) (*lbv1.DeleteResponse, error) {
	uid, _, err := g.player(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetOwnerId() != "" && req.GetOwnerId() != uid {
		return nil, g.svc.reject("not_owner", status.Error(codes.PermissionDenied, "players may delete only their own record"))
	}
	st, err := g.svc.board(ctx, req.GetBoardId())
	if err != nil {
		return nil, toStatus(err)
	}
	if st.definition().Authoritative {
		return nil, g.svc.reject("authoritative", status.Errorf(codes.PermissionDenied,
			"board %s is authoritative: only the server changes it", req.GetBoardId()))
	}
	ok, err := g.svc.Delete(ctx, req.GetBoardId(), req.GetPeriodId(), uid)
	if err != nil {
		return nil, toStatus(err)
	}
	return &lbv1.DeleteResponse{Deleted: ok}, nil
}

// ListPeriods implements LeaderboardService.
func (g *GRPC) ListPeriods(ctx context.Context, req *lbv1.ListPeriodsRequest) (*lbv1.ListPeriodsResponse, error) {
	if _, _, err := g.player(ctx); err != nil {
		return nil, err
	}
	ps, err := g.svc.Periods(ctx, req.GetBoardId())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &lbv1.ListPeriodsResponse{}
	for _, p := range ps {
		out.Periods = append(out.Periods, periodProto(p))
	}
	return out, nil
}

// CreateBoard implements LeaderboardService for the users listed in
// leaderboard.admins.
func (g *GRPC) CreateBoard(ctx context.Context, req *lbv1.Board) (*lbv1.Board, error) {
	uid, _, err := g.player(ctx)
	if err != nil {
		return nil, err
	}
	if !g.admins[uid] {
		return nil, g.svc.reject("not_admin", status.Error(codes.PermissionDenied,
			"creating boards is for server code, the boards file and the users in leaderboard.admins"))
	}
	b, err := BoardFromProto(req)
	if err != nil {
		return nil, toStatus(g.svc.reject("bad_board", err))
	}
	if b, err = g.svc.CreateBoard(ctx, b); err != nil {
		return nil, toStatus(err)
	}
	p, _ := g.svc.CurrentPeriod(ctx, b.ID)
	return BoardProto(b, p), nil
}

// GetBoard implements LeaderboardService.
func (g *GRPC) GetBoard(ctx context.Context, req *lbv1.GetBoardRequest) (*lbv1.Board, error) {
	if _, _, err := g.player(ctx); err != nil {
		return nil, err
	}
	b, p, err := g.svc.Board(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return BoardProto(b, p), nil
}

// ListBoards implements LeaderboardService.
func (g *GRPC) ListBoards(ctx context.Context, _ *lbv1.ListBoardsRequest) (*lbv1.ListBoardsResponse, error) {
	if _, _, err := g.player(ctx); err != nil {
		return nil, err
	}
	out := &lbv1.ListBoardsResponse{}
	for _, b := range g.svc.Boards() {
		p, _ := g.svc.CurrentPeriod(ctx, b.ID)
		out.Boards = append(out.Boards, BoardProto(b, p))
	}
	return out, nil
}
