package rally

import (
	"context"

	"google.golang.org/protobuf/proto"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
)

// The chat methods of rally.chat.v1.ChatService, called over the socket.
const chatService = "/rally.chat.v1.ChatService/"

// JoinGroupChat joins (creating, if new) the named group channel. The
// response's channel id ("group:<name>") names it in the other calls.
func (c *Client) JoinGroupChat(ctx context.Context, name string) (*chatv1.JoinResponse, error) {
	return c.JoinChat(ctx, &chatv1.JoinRequest{Target: &chatv1.JoinRequest_Group{Group: name}})
}

// JoinRoomChat joins the channel of a room the player is in.
func (c *Client) JoinRoomChat(ctx context.Context, roomID string) (*chatv1.JoinResponse, error) {
	return c.JoinChat(ctx, &chatv1.JoinRequest{Target: &chatv1.JoinRequest_RoomId{RoomId: roomID}})
}

// JoinDirectChat joins the direct channel with another player; both become
// members.
func (c *Client) JoinDirectChat(ctx context.Context, userID string) (*chatv1.JoinResponse, error) {
	return c.JoinChat(ctx, &chatv1.JoinRequest{Target: &chatv1.JoinRequest_UserId{UserId: userID}})
}

// JoinChat joins a channel.
func (c *Client) JoinChat(ctx context.Context, req *chatv1.JoinRequest) (*chatv1.JoinResponse, error) {
	resp := &chatv1.JoinResponse{}
	return resp, c.Call(ctx, chatService+"Join", req, resp)
}

// LeaveChat leaves a channel.
func (c *Client) LeaveChat(ctx context.Context, channelID string) error {
	return c.Call(ctx, chatService+"Leave", &chatv1.LeaveRequest{ChannelId: channelID}, &chatv1.LeaveResponse{})
}

// SendChat sends a message. Over the size limit the *ServerError has
// CODE_BAD_REQUEST; over the rate limit, CODE_RESOURCE_EXHAUSTED.
func (c *Client) SendChat(ctx context.Context, channelID, text string) (*chatv1.Message, error) {
	resp := &chatv1.Message{}
	return resp, c.Call(ctx, chatService+"Send", &chatv1.SendRequest{ChannelId: channelID, Text: text}, resp)
}

// EditChat replaces the text of one of the player's messages.
func (c *Client) EditChat(ctx context.Context, channelID string, messageID uint64, text string) (*chatv1.Message, error) {
	resp := &chatv1.Message{}
	return resp, c.Call(ctx, chatService+"Edit", &chatv1.EditRequest{ChannelId: channelID, MessageId: messageID, Text: text}, resp)
}

// DeleteChat deletes one of the player's messages.
func (c *Client) DeleteChat(ctx context.Context, channelID string, messageID uint64) error {
	return c.Call(ctx, chatService+"Delete", &chatv1.DeleteRequest{ChannelId: channelID, MessageId: messageID}, &chatv1.DeleteResponse{})
}

// ChatHistory reads a page of a channel's messages, oldest first within
// the page: the newest page with an empty cursor, older ones with the
// previous page's NextCursor (empty once the start is reached). limit 0
// means 50.
func (c *Client) ChatHistory(ctx context.Context, channelID, cursor string, limit uint32) (*chatv1.HistoryResponse, error) {
	resp := &chatv1.HistoryResponse{}
	return resp, c.Call(ctx, chatService+"History", &chatv1.HistoryRequest{ChannelId: channelID, Cursor: cursor, Limit: limit}, resp)
}

// SubscribeChat delivers the events of the player's channels (or only the
// listed ones) to fn, on the client's reader goroutine, until ctx ends or
// the stream does. The first event is a Subscribed: from then on nothing
// is missed. A stream does not survive a reconnect (ErrDisconnected):
// subscribe again and read ChatHistory for what passed meanwhile.
func (c *Client) SubscribeChat(ctx context.Context, fn func(*chatv1.Event), channelIDs ...string) error {
	return c.Stream(ctx, chatService+"Subscribe", &chatv1.SubscribeRequest{ChannelIds: channelIDs},
		func() proto.Message { return &chatv1.Event{} },
		func(m proto.Message) { fn(m.(*chatv1.Event)) })
}
