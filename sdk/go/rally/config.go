package rally

import (
	"context"

	"google.golang.org/protobuf/proto"

	configv1 "github.com/rallyhq/rally/api/proto/rally/config/v1"
)

// The live config methods of rally.config.v1.ConfigService, called over the
// socket.
const configService = "/rally.config.v1.ConfigService/"

// GetConfig returns the live configuration resolved for this player: the
// values (with the player's gray releases and experiment variants applied),
// the assignments and the version. attrs are what targeting matches on
// (nil: none); keys limits the answer to keys or whole namespaces
// ("economy"), none meaning everything.
func (c *Client) GetConfig(ctx context.Context, attrs *configv1.PlayerAttributes, keys ...string) (*configv1.Config, error) {
	resp := &configv1.Config{}
	return resp, c.Call(ctx, configService+"GetConfig", &configv1.GetConfigRequest{Attributes: attrs, Keys: keys}, resp)
}

// WatchConfig delivers the player's configuration to fn at once and again
// whenever it changes for the player (a new version, or an experiment or
// release starting, ending or ramping over them), on the client's reader
// goroutine, until ctx ends or the stream does. A stream does not survive
// a reconnect (ErrDisconnected): watch again; the first message is the
// current configuration, so nothing is missed.
func (c *Client) WatchConfig(ctx context.Context, attrs *configv1.PlayerAttributes, fn func(*configv1.Config), keys ...string) error {
	return c.Stream(ctx, configService+"Watch", &configv1.WatchRequest{Attributes: attrs, Keys: keys},
		func() proto.Message { return &configv1.Config{} },
		func(m proto.Message) { fn(m.(*configv1.Config)) })
}
