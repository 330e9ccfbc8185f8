package match

import "context"

// RoomCreator makes a room that admits only a match's players.
type RoomCreator interface {
	CreateReserved(ctx context.Context, handler string, labels map[string]string, users []string) (roomID string, reservations map[string]string, err error)
}

// RoomAllocator is the built-in Allocator: every match gets a new room on
// this Rally node, running the queue's handler, with a seat reserved for
// each player.
type RoomAllocator struct {
	Rooms RoomCreator
	// Connection is this node's address for players (http.advertise).
	Connection string
}

// Allocate implements Allocator.
func (a RoomAllocator) Allocate(ctx context.Context, m *Match) (*Assignment, error) {
	var users []string
	for _, team := range m.Teams {
		users = append(users, team...)
	}
	labels := map[string]string{"match_id": m.ID, "queue": m.Queue.Name}
	if m.Region != "" {
		labels["region"] = m.Region
	}
	roomID, tokens, err := a.Rooms.CreateReserved(ctx, m.Queue.Handler, labels, users)
	if err != nil {
		return nil, err
	}
	return &Assignment{MatchID: m.ID, RoomID: roomID, Connection: a.Connection, Reservations: tokens, Teams: m.Teams, Region: m.Region}, nil
}

// RecordingAllocator records each match another Allocator placed, so that
// ReportResult can rate it later, wherever it was played; the match's
// result token goes to the inner allocator, which hands it to the match's
// host.
type RecordingAllocator struct {
	Allocator Allocator
	Results   *Results
}

// Allocate implements Allocator.
func (a RecordingAllocator) Allocate(ctx context.Context, m *Match) (*Assignment, error) {
	m.ResultToken = a.Results.Tokens.For(m.ID)
	var rules ResultRules
	if m.Queue != nil {
		rules = m.Queue.Results
	}
	// Recorded first: a host may report as soon as it learns the match.
	if err := a.Results.RecordMatch(ctx, m.ID, m.Teams, rules); err != nil {
		return nil, err
	}
	asg, err := a.Allocator.Allocate(ctx, m)
	if err != nil {
		a.Results.Forget(m.ID)
		return nil, err
	}
	return asg, nil
}
