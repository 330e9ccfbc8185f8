package rally

import (
	"context"

	lbv1 "github.com/rallyhq/rally/api/proto/rally/leaderboard/v1"
)

// The methods of rally.leaderboard.v1.LeaderboardService, called over the
// socket as this client's player.
const leaderboardService = "/rally.leaderboard.v1.LeaderboardService/"

// SubmitScore writes the player's score to a board with the board's
// operator; the response holds the record after the write and its rank.
// An authoritative board refuses it with CODE_PERMISSION_DENIED: only the
// server writes there.
func (c *Client) SubmitScore(ctx context.Context, boardID string, score, subscore int64, metadata string) (*lbv1.SubmitResponse, error) {
	return c.Submit(ctx, &lbv1.SubmitRequest{BoardId: boardID, Score: score, Subscore: subscore, Metadata: metadata})
}

// Submit writes a score with every option (an operator override, say).
func (c *Client) Submit(ctx context.Context, req *lbv1.SubmitRequest) (*lbv1.SubmitResponse, error) {
	resp := &lbv1.SubmitResponse{}
	return resp, c.Call(ctx, leaderboardService+"Submit", req, resp)
}

// TopRecords reads a page of a board's current period from the first rank;
// pass the page's NextCursor as cursor for the next page ("" for the
// first). limit is 1-100 (0: 10).
func (c *Client) TopRecords(ctx context.Context, boardID, cursor string, limit uint32) (*lbv1.RecordPage, error) {
	return c.Top(ctx, &lbv1.TopRequest{BoardId: boardID, Cursor: cursor, Limit: limit})
}

// Top reads a page with every option (an archived period, say).
func (c *Client) Top(ctx context.Context, req *lbv1.TopRequest) (*lbv1.RecordPage, error) {
	resp := &lbv1.RecordPage{}
	return resp, c.Call(ctx, leaderboardService+"Top", req, resp)
}

// RecordsAround returns up to limit records with ownerID's in the middle
// ("" for the player's own).
func (c *Client) RecordsAround(ctx context.Context, boardID, ownerID string, limit uint32) (*lbv1.RecordList, error) {
	resp := &lbv1.RecordList{}
	return resp, c.Call(ctx, leaderboardService+"Around", &lbv1.AroundRequest{BoardId: boardID, OwnerId: ownerID, Limit: limit}, resp)
}

// LeaderboardRecords returns the records (with ranks) of the listed owners
// that have one: friends, a clan.
func (c *Client) LeaderboardRecords(ctx context.Context, boardID string, ownerIDs ...string) (*lbv1.RecordList, error) {
	resp := &lbv1.RecordList{}
	return resp, c.Call(ctx, leaderboardService+"Records", &lbv1.RecordsRequest{BoardId: boardID, OwnerIds: ownerIDs}, resp)
}

// Rank returns ownerID's record and rank ("" for the player's own); a
// player without a record gets a *ServerError (not found).
func (c *Client) Rank(ctx context.Context, boardID, ownerID string) (*lbv1.Record, error) {
	resp := &lbv1.Record{}
	return resp, c.Call(ctx, leaderboardService+"Rank", &lbv1.RankRequest{BoardId: boardID, OwnerId: ownerID}, resp)
}

// DeleteScore removes the player's own record from a board that is not
// authoritative, and reports whether there was one.
func (c *Client) DeleteScore(ctx context.Context, boardID string) (bool, error) {
	resp := &lbv1.DeleteResponse{}
	err := c.Call(ctx, leaderboardService+"Delete", &lbv1.DeleteRequest{BoardId: boardID}, resp)
	return resp.GetDeleted(), err
}

// LeaderboardPeriods lists a board's periods that hold records, newest
// first; pass an id as TopRequest.PeriodId to read a finished one.
func (c *Client) LeaderboardPeriods(ctx context.Context, boardID string) ([]*lbv1.Period, error) {
	resp := &lbv1.ListPeriodsResponse{}
	err := c.Call(ctx, leaderboardService+"ListPeriods", &lbv1.ListPeriodsRequest{BoardId: boardID}, resp)
	return resp.GetPeriods(), err
}

// Leaderboard returns a board's definition and current period (when it
// resets next).
func (c *Client) Leaderboard(ctx context.Context, boardID string) (*lbv1.Board, error) {
	resp := &lbv1.Board{}
	return resp, c.Call(ctx, leaderboardService+"GetBoard", &lbv1.GetBoardRequest{Id: boardID}, resp)
}

// Leaderboards lists every board.
func (c *Client) Leaderboards(ctx context.Context) ([]*lbv1.Board, error) {
	resp := &lbv1.ListBoardsResponse{}
	err := c.Call(ctx, leaderboardService+"ListBoards", &lbv1.ListBoardsRequest{}, resp)
	return resp.GetBoards(), err
}
