package server

import (
	"context"
	"net/http"

	"google.golang.org/grpc"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
	"github.com/rallyhq/rally/internal/chat"
)

// Chat returns the chat service. It may be called before Start, so game
// code can install its moderation hook before any player can talk:
//
//	s := server.New(cfg, log)
//	s.Chat().SetModerator(func(ctx context.Context, d chat.Draft) (string, error) { ... })
//	err := s.Start(ctx)
//
// After Start, server code also posts, edits and deletes as chat.System.
// Call it from the goroutine that starts the server.
func (s *Server) Chat() *chat.Service {
	if s.chat == nil {
		c := s.cfg.Chat
		s.chat = chat.New(chat.Options{
			Stream: c.Stream, MembersBucket: c.MembersBucket, MaxMessageBytes: c.MaxMessageBytes,
			MessagesPerSecond: c.MessagesPerSecond, MessageBurst: c.MessageBurst,
			HistoryMaxAge: c.HistoryMaxAge, SubscriberQueue: c.SubscriberQueue,
			Registerer: s.Registry, Log: s.log,
		})
	}
	return s.chat
}

// startChat wires chat: who sits in which room (from the room-event
// stream), the chat stream and members bucket, this node's live delivery,
// and rally.chat.v1.ChatService on gRPC and the socket.
func (s *Server) startChat(ctx context.Context, _ *http.ServeMux) error {
	seats, err := chat.FollowRooms(ctx, s.bus.JetStream(), s.cfg.Events.Stream, s.cfg.Chat.RoomReplay, s.log)
	if err != nil {
		return err
	}
	s.onStop("chat-rooms", func(context.Context) error { seats.Stop(); return nil })
	svc := s.Chat()
	if err := svc.Start(ctx, chat.Deps{JetStream: s.bus.JetStream(), Rooms: seats, TracerProvider: s.tracing.Provider}); err != nil {
		return err
	}
	// Closing ends the Subscribe streams before gRPC drains, which would
	// otherwise wait for them.
	s.onStop("chat", svc.Close)
	impl := svc.GRPC(caller)
	s.grpcServices = append(s.grpcServices, func(g grpc.ServiceRegistrar) { chatv1.RegisterChatServiceServer(g, impl) })
	return nil
}
