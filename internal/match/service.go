package match

import (
	"context"
	"errors"
	"slices"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	"github.com/rallyhq/rally/internal/rating"
)

// Caller returns the authenticated user of a request.
type Caller func(ctx context.Context) (userID string, ok bool)

// Service serves rally.match.v1.MatchService over an Engine.
type Service struct {
	matchv1.UnimplementedMatchServiceServer
	Engine  *Engine
	Hub     *Hub
	Ratings *StoreRatings
	Results *Results
	Caller  Caller
	tracer  trace.Tracer
}

// NewService returns the gRPC service.
func NewService(e *Engine, hub *Hub, results *Results, caller Caller) *Service {
	return &Service{Engine: e, Hub: hub, Ratings: results.Ratings, Results: results, Caller: caller, tracer: otel.Tracer("rally/match")}
}

func (s *Service) caller(ctx context.Context) (string, error) {
	uid, ok := s.Caller(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no session")
	}
	return uid, nil
}

// ticket builds an engine ticket from a request: the caller must be in the
// party; ratings not given are the players' stored ratings.
func (s *Service) ticket(ctx context.Context, uid string, req *matchv1.TicketRequest) (*Ticket, error) {
	t := &Ticket{Queue: req.GetQueue(), Strings: req.GetStringAttributes(), Numbers: req.GetNumberAttributes()}
	players := req.GetPlayers()
	if len(players) == 0 {
		players = []*matchv1.TicketPlayer{{UserId: uid}}
	}
	var missing []string
	self := false
	seen := map[string]bool{}
	for _, p := range players {
		if p.GetUserId() == "" || seen[p.GetUserId()] {
			return nil, status.Error(codes.InvalidArgument, "every player needs a distinct user_id")
		}
		seen[p.GetUserId()] = true
		self = self || p.GetUserId() == uid
		pl := Player{UserID: p.GetUserId()}
		if r := p.GetRating(); r != nil && r.GetSigma() > 0 {
			pl.Mu, pl.Sigma = r.GetMu(), r.GetSigma()
		} else {
			missing = append(missing, pl.UserID)
		}
		t.Players = append(t.Players, pl)
	}
	if !self {
		return nil, status.Error(codes.PermissionDenied, "the caller must be one of the ticket's players")
	}
	if len(missing) > 0 {
		stored, err := s.Ratings.Get(ctx, missing)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		for i := range t.Players {
			if r, ok := stored[t.Players[i].UserID]; ok && t.Players[i].Sigma == 0 {
				t.Players[i].Mu, t.Players[i].Sigma = r.Mu, r.Sigma
			}
		}
	}
	if len(req.GetRegionLatencyMs()) > 0 {
		t.Regions = req.GetRegionLatencyMs()
	}
	if g := req.GetGeo(); g != nil {
		if g.GetLat() < -90 || g.GetLat() > 90 || g.GetLon() < -180 || g.GetLon() > 180 {
			return nil, status.Error(codes.InvalidArgument, "geo: latitude or longitude out of range")
		}
		t.Geo = &GeoPoint{Lat: g.GetLat(), Lon: g.GetLon()}
	}
	t.ID = s.Engine.NewID()
	return t, nil
}

func (s *Service) submit(ctx context.Context, req *matchv1.TicketRequest) (*Ticket, <-chan Update, func(), error) {
	uid, err := s.caller(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	return s.submitAs(ctx, uid, req)
}

func (s *Service) submitAs(ctx context.Context, uid string, req *matchv1.TicketRequest) (*Ticket, <-chan Update, func(), error) {
	t, err := s.ticket(ctx, uid, req)
	if err != nil {
		return nil, nil, nil, err
	}
	// Subscribe before submitting: a fast match must not be missed.
	updates, cancel := s.Hub.Subscribe(t.ID)
	if err := s.Engine.Submit(ctx, t); err != nil {
		cancel()
		if errors.Is(err, ErrInvalidTicket) {
			return nil, nil, nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return nil, nil, nil, status.Error(codes.Internal, err.Error())
	}
	return t, updates, cancel, nil
}

// FindOpponent implements MatchService: queue a ticket and stream its
// updates; a client that goes away cancels its ticket.
func (s *Service) FindOpponent(req *matchv1.TicketRequest, stream matchv1.MatchService_FindOpponentServer) error {
	ctx := stream.Context()
	t, updates, cancel, err := s.submit(ctx, req)
	if err != nil {
		return err
	}
	defer cancel()
	_, span := s.tracer.Start(ctx, "match.find_opponent", trace.WithAttributes(
		attribute.String("player.id", t.Players[0].UserID), attribute.String("match.ticket", t.ID),
		attribute.String("match.queue", t.Queue)))
	defer span.End()
	uid, _ := s.Caller(ctx)
	return s.follow(ctx, t.ID, uid, updates, stream.Send, true)
}

// follow streams updates until the terminal one; if the stream ends first
// and cancelOnExit is set, the ticket is cancelled.
func (s *Service) follow(ctx context.Context, id, viewer string, updates <-chan Update, send func(*matchv1.TicketUpdate) error, cancelOnExit bool) error {
	for {
		select {
		case u, ok := <-updates:
			if !ok {
				return nil
			}
			if err := send(toProto(u, viewer)); err != nil {
				if cancelOnExit {
					_, _ = s.Engine.Cancel(context.WithoutCancel(ctx), id)
				}
				return err
			}
			if u.Kind.Terminal() {
				return nil
			}
		case <-ctx.Done():
			if cancelOnExit {
				_, _ = s.Engine.Cancel(context.WithoutCancel(ctx), id)
			}
			return ctx.Err()
		}
	}
}

// CreateTicket implements MatchService.
func (s *Service) CreateTicket(ctx context.Context, req *matchv1.TicketRequest) (*matchv1.Ticket, error) {
	t, _, cancel, err := s.submit(ctx, req)
	if err != nil {
		return nil, err
	}
	cancel()
	return ticketProto(t, matchv1.TicketState_TICKET_STATE_QUEUED), nil
}

// CancelTicket implements MatchService: only a player of the ticket may
// withdraw it; for anyone else it does not exist.
func (s *Service) CancelTicket(ctx context.Context, req *matchv1.CancelTicketRequest) (*matchv1.Ticket, error) {
	uid, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.CancelFor(ctx, uid, req.GetTicketId()); err != nil {
		return nil, err
	}
	return &matchv1.Ticket{Id: req.GetTicketId(), State: matchv1.TicketState_TICKET_STATE_CANCELLED}, nil
}

// WatchTicket implements MatchService.
func (s *Service) WatchTicket(req *matchv1.WatchTicketRequest, stream matchv1.MatchService_WatchTicketServer) error {
	uid, err := s.caller(stream.Context())
	if err != nil {
		return err
	}
	// Subscribe first, then read the ticket: an update between the two is
	// queued, not lost.
	updates, cancel := s.Hub.Subscribe(req.GetTicketId())
	defer cancel()
	t, ok, err := s.Engine.Waiting(stream.Context(), req.GetTicketId())
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if !ok || !slices.ContainsFunc(t.Players, func(p Player) bool { return p.UserID == uid }) {
		return errNoTicket
	}
	// The current state first, so a watcher knows where the ticket stands.
	if err := stream.Send(ticketUpdate(t)); err != nil {
		return err
	}
	return s.follow(stream.Context(), req.GetTicketId(), uid, updates, stream.Send, false)
}

// ReportResult implements MatchService. A report with the match's result
// token (its game server) counts at once and needs no session; a player
// reports for their team, and the match is rated when every team's report
// agrees. A caller who did not play the match learns nothing of it.
func (s *Service) ReportResult(ctx context.Context, req *matchv1.ReportResultRequest) (*matchv1.ReportResultResponse, error) {
	if len(req.GetMatchId()) == 0 || len(req.GetMatchId()) > maxIDBytes {
		return nil, status.Errorf(codes.InvalidArgument, "match_id: 1 to %d bytes", maxIDBytes)
	}
	if len(req.GetResults()) > maxResultLines {
		return nil, status.Errorf(codes.InvalidArgument, "results: at most %d lines", maxResultLines)
	}
	result := make([]Placement, 0, len(req.GetResults()))
	for _, r := range req.GetResults() {
		if len(r.GetUserIds()) > maxResultLines {
			return nil, status.Errorf(codes.InvalidArgument, "results.user_ids: at most %d per line", maxResultLines)
		}
		result = append(result, Placement{UserIDs: r.GetUserIds(), Rank: int(r.GetRank())})
	}
	if tok := req.GetResultToken(); tok != "" {
		if !s.Results.Tokens.Valid(req.GetMatchId(), tok) {
			return nil, status.Error(codes.PermissionDenied, "result_token is not this match's")
		}
		rated, err := s.Results.Settle(ctx, req.GetMatchId(), result)
		if err != nil {
			return nil, resultStatus(err)
		}
		return resultResponse(Rated, rated), nil
	}
	uid, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	outcome, rated, err := s.Results.Report(ctx, req.GetMatchId(), uid, result)
	if err != nil {
		return nil, resultStatus(err)
	}
	return resultResponse(outcome, rated), nil
}

// Limits on result reports.
const (
	maxIDBytes     = 128
	maxResultLines = 100
)

func resultResponse(o Outcome, rated map[string]rating.Rating) *matchv1.ReportResultResponse {
	resp := &matchv1.ReportResultResponse{State: matchv1.ResultState(o)}
	if len(rated) > 0 {
		resp.Ratings = make(map[string]*matchv1.Rating, len(rated))
		for u, r := range rated {
			resp.Ratings[u] = &matchv1.Rating{Mu: r.Mu, Sigma: r.Sigma}
		}
	}
	return resp
}

func resultStatus(err error) error {
	switch {
	case errors.Is(err, ErrMatchNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrServerReports):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrBadResult):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrAlreadyReported), errors.Is(err, ErrDisputed):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func ticketProto(t *Ticket, st matchv1.TicketState) *matchv1.Ticket {
	out := &matchv1.Ticket{Id: t.ID, Queue: t.Queue, State: st, CreatedUnixMs: t.Created.UnixMilli()}
	for _, p := range t.Players {
		out.Players = append(out.Players, &matchv1.TicketPlayer{UserId: p.UserID, Rating: &matchv1.Rating{Mu: p.Mu, Sigma: p.Sigma}})
	}
	return out
}

var stateOf = map[UpdateKind]matchv1.TicketState{
	Queued: matchv1.TicketState_TICKET_STATE_QUEUED, Widened: matchv1.TicketState_TICKET_STATE_QUEUED,
	Matched: matchv1.TicketState_TICKET_STATE_MATCHED, Cancelled: matchv1.TicketState_TICKET_STATE_CANCELLED,
	Expired: matchv1.TicketState_TICKET_STATE_EXPIRED,
}

// toProto renders an update for viewer, who sees only their own seat
// reservation.
// ticketUpdate reports a waiting ticket as it stands.
func ticketUpdate(t *Ticket) *matchv1.TicketUpdate {
	return &matchv1.TicketUpdate{Kind: matchv1.TicketUpdate_KIND_QUEUED, Ticket: ticketProto(t, matchv1.TicketState_TICKET_STATE_QUEUED)}
}

func toProto(u Update, viewer string) *matchv1.TicketUpdate {
	out := &matchv1.TicketUpdate{
		Kind:         matchv1.TicketUpdate_Kind(u.Kind),
		RatingWindow: u.RatingWindow, MaxLatencyMs: uint32(u.MaxLatencyMS), GeoRadiusKm: u.GeoKM,
		Reason: u.Reason,
	}
	if u.Ticket != nil {
		out.Ticket = ticketProto(u.Ticket, stateOf[u.Kind])
	} else {
		out.Ticket = &matchv1.Ticket{Id: u.TicketID, State: stateOf[u.Kind]}
	}
	if a := u.Assignment; a != nil {
		out.Assignment = &matchv1.Assignment{MatchId: a.MatchID, RoomId: a.RoomID, Connection: a.Connection, Region: a.Region}
		for _, team := range a.Teams {
			out.Assignment.Teams = append(out.Assignment.Teams, &matchv1.Team{UserIds: team})
		}
		out.Assignment.Reservation = a.Reservations[viewer]
	}
	return out
}

// Find queues a ticket for a player on a realtime socket and forwards its
// updates to send until the ticket ends or stop is called (which cancels a
// still-waiting ticket). It implements the realtime package's Matchmaker.
func (s *Service) Find(ctx context.Context, uid string, req *matchv1.TicketRequest, send func(*matchv1.TicketUpdate)) (ticketID string, stop func(), err error) {
	t, updates, cancel, err := s.submitAs(ctx, uid, req)
	if err != nil {
		return "", nil, err
	}
	ctx, end := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		_ = s.follow(ctx, t.ID, uid, updates, func(u *matchv1.TicketUpdate) error { send(u); return nil }, true)
	}()
	return t.ID, func() { end(); <-done }, nil
}

// errNoTicket is the answer for a ticket that is not waiting or is not
// the caller's: the two are not told apart.
var errNoTicket = status.Error(codes.NotFound, "no waiting ticket of yours with that id (matched, cancelled, expired, unknown or another player's)")

// CancelFor withdraws a waiting ticket that userID is a player of.
func (s *Service) CancelFor(ctx context.Context, userID, ticketID string) error {
	if ticketID == "" || len(ticketID) > maxIDBytes {
		return errNoTicket
	}
	t, ok, err := s.Engine.Waiting(ctx, ticketID)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if !ok || !slices.ContainsFunc(t.Players, func(p Player) bool { return p.UserID == userID }) {
		return errNoTicket
	}
	ok, err = s.Engine.Cancel(ctx, ticketID)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if !ok {
		return errNoTicket // matched or expired in the meantime
	}
	return nil
}
