package match

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/rallyhq/rally/internal/testsvc"
)

type redisServer = testsvc.Redis

func startRedis(tb testing.TB) *redisServer { return testsvc.StartRedis(tb) }

// newRedisClient returns a client of s closed when tb ends; each call
// gives a separate connection pool, as a separate replica would have.
func newRedisClient(tb testing.TB, s *redisServer) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true})
	tb.Cleanup(func() { c.Close() })
	return c
}
