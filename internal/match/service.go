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
	Caller  Caller
	tracer  trace.Tracer
}

// NewService returns the gRPC service.
func NewService(e *Engine, hub *Hub, ratings *StoreRatings, caller Caller) *Service {
	return &Service{Engine: e, Hub: hub, Ratings: ratings, Caller: caller, tracer: otel.Tracer("rally/match")}
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

// CancelTicket implements MatchService.
func (s *Service) CancelTicket(ctx context.Context, req *matchv1.CancelTicketRequest) (*matchv1.Ticket, error) {
	if _, err := s.caller(ctx); err != nil {
		return nil, err
	}
	ok, err := s.Engine.Cancel(ctx, req.GetTicketId())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if !ok {
		return nil, status.Error(codes.FailedPrecondition, "ticket is not waiting (matched, cancelled, expired or unknown)")
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
	if !ok {
		return status.Error(codes.NotFound, "ticket is not waiting (matched, cancelled, expired or unknown)")
	}
	if !slices.ContainsFunc(t.Players, func(p Player) bool { return p.UserID == uid }) {
		return status.Error(codes.PermissionDenied, "only a player of the ticket may watch it")
	}
	// The current state first, so a watcher knows where the ticket stands.
	if err := stream.Send(ticketUpdate(t)); err != nil {
		return err
	}
	return s.follow(stream.Context(), req.GetTicketId(), uid, updates, stream.Send, false)
}

// ReportResult implements MatchService: the reporting player must have
// played; every listed player must have been in the match; a match is rated
// once.
func (s *Service) ReportResult(ctx context.Context, req *matchv1.ReportResultRequest) (*matchv1.ReportResultResponse, error) {
	uid, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	played, err := s.Ratings.MatchTeams(ctx, req.GetMatchId())
	if errors.Is(err, ErrMatchNotFound) {
		return nil, status.Error(codes.NotFound, err.Error())
	} else if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	inMatch := map[string]bool{}
	for _, team := range played {
		for _, u := range team {
			inMatch[u] = true
		}
	}
	if !inMatch[uid] {
		return nil, status.Error(codes.PermissionDenied, "only a player of the match may report its result")
	}
	var users []string
	seen := map[string]bool{}
	ranks := make([]int, 0, len(req.GetResults()))
	for _, r := range req.GetResults() {
		for _, u := range r.GetUserIds() {
			if !inMatch[u] || seen[u] {
				return nil, status.Errorf(codes.InvalidArgument, "user %s did not play this match or is listed twice", u)
			}
			seen[u] = true
			users = append(users, u)
		}
		ranks = append(ranks, int(r.GetRank()))
	}
	current, err := s.Ratings.Get(ctx, users)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	teams := make([][]rating.Rating, len(req.GetResults()))
	for i, r := range req.GetResults() {
		for _, u := range r.GetUserIds() {
			teams[i] = append(teams[i], current[u])
		}
	}
	rated, err := RatingModel().Rate(teams, ranks)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	updated := map[string]rating.Rating{}
	resp := &matchv1.ReportResultResponse{Ratings: map[string]*matchv1.Rating{}}
	for i, r := range req.GetResults() {
		for j, u := range r.GetUserIds() {
			updated[u] = rated[i][j]
			resp.Ratings[u] = &matchv1.Rating{Mu: rated[i][j].Mu, Sigma: rated[i][j].Sigma}
		}
	}
	if err := s.Ratings.Put(ctx, updated); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := s.Ratings.ForgetMatch(ctx, req.GetMatchId()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return resp, nil
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

// CancelFor withdraws a player's waiting ticket.
func (s *Service) CancelFor(ctx context.Context, _ string, ticketID string) error {
	ok, err := s.Engine.Cancel(ctx, ticketID)
	if err != nil {
		return err
	}
	if !ok {
		return status.Error(codes.FailedPrecondition, "ticket is not waiting")
	}
	return nil
}
