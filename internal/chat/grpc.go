package chat

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
)

// Caller returns the authenticated player of a request.
type Caller func(ctx context.Context) (userID, username string, ok bool)

// maxSubscribeFilter bounds SubscribeRequest.channel_ids.
const maxSubscribeFilter = 100

// grpcService serves rally.chat.v1.ChatService as the calling player.
type grpcService struct {
	chatv1.UnimplementedChatServiceServer
	svc    *Service
	caller Caller
}

// GRPC returns the gRPC service (also reachable over the realtime socket):
// every call acts as the player caller names.
func (s *Service) GRPC(caller Caller) chatv1.ChatServiceServer {
	return &grpcService{svc: s, caller: caller}
}

func (g *grpcService) actor(ctx context.Context) (Actor, error) {
	uid, name, ok := g.caller(ctx)
	if !ok || uid == "" {
		return Actor{}, status.Error(codes.Unauthenticated, "no session")
	}
	return Player(uid, name), nil
}

// channel parses a request's channel id.
func (g *grpcService) channel(id string) (Channel, error) {
	ch, err := ParseChannelID(id)
	if err != nil {
		g.svc.m.rejected.WithLabelValues(rejectInvalid).Inc()
		return Channel{}, status.Error(codes.InvalidArgument, err.Error())
	}
	return ch, nil
}

// Join implements ChatService.
func (g *grpcService) Join(ctx context.Context, req *chatv1.JoinRequest) (*chatv1.JoinResponse, error) {
	a, err := g.actor(ctx)
	if err != nil {
		return nil, err
	}
	var ch Channel
	switch t := req.GetTarget().(type) {
	case *chatv1.JoinRequest_RoomId:
		ch, err = RoomChannel(t.RoomId)
	case *chatv1.JoinRequest_Group:
		ch, err = GroupChannel(t.Group)
	case *chatv1.JoinRequest_UserId:
		ch, err = DirectChannel(a.UserID, t.UserId)
	default:
		g.svc.m.rejected.WithLabelValues(rejectInvalid).Inc()
		return nil, status.Error(codes.InvalidArgument, "join needs a room_id, a group or a user_id")
	}
	if err != nil {
		g.svc.m.rejected.WithLabelValues(rejectInvalid).Inc()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return g.svc.Join(ctx, a, ch)
}

// Leave implements ChatService.
func (g *grpcService) Leave(ctx context.Context, req *chatv1.LeaveRequest) (*chatv1.LeaveResponse, error) {
	a, err := g.actor(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := g.channel(req.GetChannelId())
	if err != nil {
		return nil, err
	}
	if err := g.svc.Leave(ctx, a, ch); err != nil {
		return nil, err
	}
	return &chatv1.LeaveResponse{}, nil
}

// Send implements ChatService.
func (g *grpcService) Send(ctx context.Context, req *chatv1.SendRequest) (*chatv1.Message, error) {
	a, err := g.actor(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := g.channel(req.GetChannelId())
	if err != nil {
		return nil, err
	}
	return g.svc.Send(ctx, a, ch, req.GetText())
}

// Edit implements ChatService.
func (g *grpcService) Edit(ctx context.Context, req *chatv1.EditRequest) (*chatv1.Message, error) {
	a, err := g.actor(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := g.channel(req.GetChannelId())
	if err != nil {
		return nil, err
	}
	return g.svc.Edit(ctx, a, ch, req.GetMessageId(), req.GetText())
}

// Delete implements ChatService.
func (g *grpcService) Delete(ctx context.Context, req *chatv1.DeleteRequest) (*chatv1.DeleteResponse, error) {
	a, err := g.actor(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := g.channel(req.GetChannelId())
	if err != nil {
		return nil, err
	}
	if err := g.svc.Delete(ctx, a, ch, req.GetMessageId()); err != nil {
		return nil, err
	}
	return &chatv1.DeleteResponse{}, nil
}

// History implements ChatService.
func (g *grpcService) History(ctx context.Context, req *chatv1.HistoryRequest) (*chatv1.HistoryResponse, error) {
	a, err := g.actor(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := g.channel(req.GetChannelId())
	if err != nil {
		return nil, err
	}
	limit := req.GetLimit()
	if limit > MaxPage {
		g.svc.m.rejected.WithLabelValues(rejectInvalid).Inc()
		return nil, status.Errorf(codes.InvalidArgument, "limit must be within 0-%d", MaxPage)
	}
	return g.svc.History(ctx, a, ch, req.GetCursor(), int(limit))
}

// Subscribe implements ChatService.
func (g *grpcService) Subscribe(req *chatv1.SubscribeRequest, stream chatv1.ChatService_SubscribeServer) error {
	ctx := stream.Context()
	a, err := g.actor(ctx)
	if err != nil {
		return err
	}
	if len(req.GetChannelIds()) > maxSubscribeFilter {
		g.svc.m.rejected.WithLabelValues(rejectInvalid).Inc()
		return status.Errorf(codes.InvalidArgument, "at most %d channel_ids; leave it empty for all your channels", maxSubscribeFilter)
	}
	var only []Channel
	for _, id := range req.GetChannelIds() {
		ch, err := g.channel(id)
		if err != nil {
			return err
		}
		only = append(only, ch)
	}
	ctx, span := g.svc.tracer.Start(ctx, "chat.subscribe")
	span.SetAttributes(playerAttr(a))
	defer span.End()
	return g.svc.Subscribe(ctx, a, only, stream.Send)
}
