package allocclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	allocationv1 "github.com/rallyhq/rally/api/proto/rally/allocation/v1"
	"github.com/rallyhq/rally/internal/match"
)

// MatchAllocator places the matchmaker's matches on dedicated game servers:
// it implements match.Allocator by allocating a Ready server and handing
// its address to the match's tickets. The server learns the match from the
// allocation metadata (SDK Watch): match_id, queue, region, teams (a JSON
// array of arrays of user ids) and result_token, with which the server
// reports the match's result (MatchService.ReportResult).
//
// A failed allocation (no Ready server) fails the match; the matchmaker
// puts its tickets back at the front of the queue.
type MatchAllocator struct {
	Allocator Interface
	Namespace string
	// Set is the GameServerSet of every queue not in SetForQueue; empty
	// means any set of the namespace.
	Set         string
	SetForQueue map[string]string
	// Selectors are tried in order (e.g. the newest game version first);
	// none means any Ready server.
	Selectors []*allocationv1.Selector
	// RegionLabel, when set, restricts every selector to servers whose
	// label RegionLabel is the match's region (matches with a region only).
	RegionLabel string
	// Port names the port put in the assignment's connection; default: the
	// server's first port.
	Port string
	// Timeout bounds one allocation; zero leaves it to ctx.
	Timeout time.Duration
}

// Allocate implements match.Allocator.
func (a *MatchAllocator) Allocate(ctx context.Context, m *match.Match) (*match.Assignment, error) {
	teams, err := json.Marshal(m.Teams)
	if err != nil {
		return nil, err
	}
	req := &allocationv1.AllocateRequest{
		Namespace: a.Namespace,
		Set:       a.Set,
		Metadata:  map[string]string{"match_id": m.ID, "teams": string(teams)},
	}
	if m.ResultToken != "" {
		req.Metadata["result_token"] = m.ResultToken
	}
	if m.Queue != nil {
		req.Metadata["queue"] = m.Queue.Name
		if s, ok := a.SetForQueue[m.Queue.Name]; ok {
			req.Set = s
		}
	}
	if m.Region != "" {
		req.Metadata["region"] = m.Region
	}
	sels := a.Selectors
	if len(sels) == 0 {
		sels = []*allocationv1.Selector{{}}
	}
	for _, s := range sels {
		s = proto.Clone(s).(*allocationv1.Selector)
		if a.RegionLabel != "" && m.Region != "" {
			if s.MatchLabels == nil {
				s.MatchLabels = map[string]string{}
			}
			s.MatchLabels[a.RegionLabel] = m.Region
		}
		req.Selectors = append(req.Selectors, s)
	}
	if a.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.Timeout)
		defer cancel()
	}
	resp, err := a.Allocator.Allocate(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("allocate a game server for match %s: %w", m.ID, err)
	}
	conn := resp.GetAddress()
	if p := a.port(resp); p != 0 {
		conn = net.JoinHostPort(conn, strconv.Itoa(int(p)))
	}
	return &match.Assignment{
		MatchID:    m.ID,
		RoomID:     resp.GetNamespace() + "/" + resp.GetName(),
		Connection: conn,
		Teams:      m.Teams,
		Region:     m.Region,
	}, nil
}

func (a *MatchAllocator) port(resp *allocationv1.AllocateResponse) int32 {
	for _, p := range resp.GetPorts() {
		if a.Port == "" || p.GetName() == a.Port {
			return p.GetPort()
		}
	}
	return 0
}

var _ match.Allocator = (*MatchAllocator)(nil)
