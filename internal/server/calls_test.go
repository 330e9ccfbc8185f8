package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// gauge reads a gauge or counter without labels from the server's registry.
func gauge(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// The gRPC services answer Call envelopes on the socket, unary and
// server-streaming alike, as the socket's player, in binary and JSON.
func TestServicesAnswerCallsOnTheSocket(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, json := range []bool{false, true} {
		name := map[bool]string{false: "callbin", true: "calljson"}[json]
		c := player(t, s, name, rally.Options{JSON: json})

		var ticket matchv1.Ticket
		if err := c.Call(ctx, "/rally.match.v1.MatchService/CreateTicket", &matchv1.TicketRequest{Queue: "squad"}, &ticket); err != nil {
			t.Fatalf("%s: CreateTicket: %v", name, err)
		}
		if ticket.GetId() == "" || len(ticket.GetPlayers()) != 1 || ticket.GetPlayers()[0].GetUserId() != c.UserID() {
			t.Fatalf("%s: ticket not the caller's: %v (caller %s)", name, &ticket, c.UserID())
		}

		var cancelled matchv1.Ticket
		if err := c.Call(ctx, "/rally.match.v1.MatchService/CancelTicket", &matchv1.CancelTicketRequest{TicketId: ticket.GetId()}, &cancelled); err != nil {
			t.Fatalf("%s: CancelTicket: %v", name, err)
		}

		// Stream FindOpponent, then cancel its ticket with a unary call:
		// the stream sees the cancellation and the server ends it.
		updates := make(chan *matchv1.TicketUpdate, 8)
		streamErr := make(chan error, 1)
		go func() {
			streamErr <- c.Stream(ctx, "/rally.match.v1.MatchService/FindOpponent", &matchv1.TicketRequest{Queue: "squad"},
				func() proto.Message { return new(matchv1.TicketUpdate) },
				func(m proto.Message) { updates <- m.(*matchv1.TicketUpdate) })
		}()
		var first *matchv1.TicketUpdate
		select {
		case first = <-updates:
			if first.GetKind() != matchv1.TicketUpdate_KIND_QUEUED || first.GetTicket().GetId() == "" {
				t.Fatalf("%s: first update %v, want queued with a ticket", name, first)
			}
		case err := <-streamErr:
			t.Fatalf("%s: stream ended before its first update: %v", name, err)
		case <-ctx.Done():
			t.Fatalf("%s: no update on the stream", name)
		}
		if err := c.Call(ctx, "/rally.match.v1.MatchService/CancelTicket", &matchv1.CancelTicketRequest{TicketId: first.GetTicket().GetId()}, &cancelled); err != nil {
			t.Fatalf("%s: CancelTicket: %v", name, err)
		}
		sawCancel := false
		for !sawCancel {
			select {
			case u := <-updates:
				sawCancel = u.GetKind() == matchv1.TicketUpdate_KIND_CANCELLED
			case err := <-streamErr:
				// The end may be seen before the update the reader
				// goroutine delivered just ahead of it.
				select {
				case u := <-updates:
					sawCancel = u.GetKind() == matchv1.TicketUpdate_KIND_CANCELLED
				default:
				}
				if !sawCancel {
					t.Fatalf("%s: stream ended (%v) before the cancellation was delivered", name, err)
				}
				streamErr <- err
			case <-ctx.Done():
				t.Fatalf("%s: no cancelled update", name)
			}
		}
		select {
		case err := <-streamErr:
			if err != nil {
				t.Fatalf("%s: stream ended with %v, want a clean end", name, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s: the stream did not end after the ticket did", name)
		}
	}
}

// Bad calls get a clear error with the matching code and leave the socket
// usable; a cancelled stream ends on the server too.
func TestBadCallsAndCancelledStreams(t *testing.T) {
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := player(t, s, "callbad", rally.Options{})

	code := func(err error) rtv1.Error_Code {
		var se *rally.ServerError
		if !errors.As(err, &se) {
			t.Fatalf("want a server error, got %v", err)
		}
		return se.Code()
	}
	var ticket matchv1.Ticket
	err := c.Call(ctx, "/rally.match.v1.MatchService/Nope", &matchv1.TicketRequest{}, &ticket)
	if got := code(err); got != rtv1.Error_CODE_NOT_FOUND || !strings.Contains(err.Error(), "Nope") {
		t.Fatalf("unknown method: %v (%v)", got, err)
	}
	// The wrong request type for the method.
	err = c.Call(ctx, "/rally.match.v1.MatchService/CreateTicket", &matchv1.CancelTicketRequest{TicketId: "x"}, &ticket)
	if got := code(err); got != rtv1.Error_CODE_BAD_REQUEST || !strings.Contains(err.Error(), "TicketRequest") {
		t.Fatalf("wrong request type: %v (%v)", got, err)
	}
	// The service's own InvalidArgument.
	err = c.Call(ctx, "/rally.match.v1.MatchService/CreateTicket", &matchv1.TicketRequest{Queue: "no-such-queue"}, &ticket)
	if got := code(err); got != rtv1.Error_CODE_BAD_REQUEST {
		t.Fatalf("unknown queue: %v (%v)", got, err)
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf("socket unusable after bad calls: %v", err)
	}

	// A stream the client walks away from is cancelled on the server.
	sctx, scancel := context.WithCancel(ctx)
	first := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.Stream(sctx, "/rally.match.v1.MatchService/FindOpponent", &matchv1.TicketRequest{Queue: "squad"},
			func() proto.Message { return new(matchv1.TicketUpdate) },
			func(proto.Message) {
				select {
				case first <- struct{}{}:
				default:
				}
			})
	}()
	select {
	case <-first:
	case <-ctx.Done():
		t.Fatal("no first update")
	}
	if n := gauge(t, s, "rally_realtime_calls_in_flight"); n != 1 {
		t.Fatalf("calls in flight with one open stream = %v", n)
	}
	scancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled stream returned %v", err)
	}
	eventually(t, 5*time.Second, "server ends the cancelled stream", func() (bool, string) {
		n := gauge(t, s, "rally_realtime_calls_in_flight")
		return n == 0, "in flight: " + strings.TrimSpace(strings.Repeat("|", int(n)))
	})
}
