package reqlimit

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
	configv1 "github.com/rallyhq/rally/api/proto/rally/config/v1"
	lbv1 "github.com/rallyhq/rally/api/proto/rally/leaderboard/v1"
	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
)

func TestLimits(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	many := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "id"
		}
		return out
	}
	attrs := func(n int) map[string]string {
		out := map[string]string{}
		for i := range n {
			out[long(i%200+1)+strings.Repeat("k", i/200)] = "v"
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		msg   proto.Message
		field string // "" when the request is within every limit
	}{
		{"plain ids", &matchv1.CancelTicketRequest{TicketId: long(MaxString)}, ""},
		{"id over the string limit", &matchv1.CancelTicketRequest{TicketId: long(MaxString + 1)}, "ticket_id"},
		{"chat text may be long", &chatv1.SendRequest{ChannelId: "g:x", Text: long(200 << 10)}, ""},
		{"chat text over its bound", &chatv1.SendRequest{Text: long(256<<10 + 1)}, "text"},
		{"board metadata values may be long", &lbv1.Board{Id: "b", Metadata: map[string]string{"title": long(60 << 10)}}, ""},
		{"board metadata keys keep the default", &lbv1.Board{Id: "b", Metadata: map[string]string{long(MaxString + 1): "v"}}, "metadata: key"},
		{"ticket attributes values", &matchv1.TicketRequest{StringAttributes: map[string]string{"mode": long(MaxString + 1)}}, "string_attributes: value"},
		{"too many map entries", &matchv1.TicketRequest{StringAttributes: attrs(MaxItems + 1)}, "string_attributes"},
		{"too many list entries", &lbv1.RecordsRequest{OwnerIds: many(MaxItems + 1)}, "owner_ids"},
		{"nested message string", &matchv1.TicketRequest{Players: []*matchv1.TicketPlayer{{UserId: long(MaxString + 1)}}}, "players.user_id"},
		{"nested list", &matchv1.ReportResultRequest{Results: []*matchv1.TeamResult{{UserIds: many(MaxItems + 1)}}}, "results.user_ids"},
		{"cohorts", &configv1.GetConfigRequest{Attributes: &configv1.PlayerAttributes{Cohorts: many(MaxItems + 1)}}, "attributes.cohorts"},
	} {
		err := Check(tc.msg)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v, want InvalidArgument naming %q", tc.name, err, tc.field)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	req := &matchv1.TicketRequest{Queue: "duel", StringAttributes: map[string]string{"mode": "ranked"},
		Players: []*matchv1.TicketPlayer{{UserId: "a"}, {UserId: "b"}}}
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(req); err != nil {
			b.Fatal(err)
		}
	}
}
