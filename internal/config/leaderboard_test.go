package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigLeaderboard(t *testing.T) {
	boards := writeFile(t, "boards: []\n")
	res, err := Load(flags(t), []string{
		"RALLY_LEADERBOARD_STORE=redis", "RALLY_LEADERBOARD_REDIS_URL=redis://127.0.0.1:6379/2",
		"RALLY_LEADERBOARD_BOARDS=" + boards, "RALLY_LEADERBOARD_ADMINS=u1,u2",
	})
	if err != nil {
		t.Fatal(err)
	}
	lb := res.Config.Leaderboard
	if lb.Store != "redis" || lb.RedisURL != "redis://127.0.0.1:6379/2" || lb.Boards != boards || lb.Admins != "u1,u2" || lb.MaxMetadataBytes != 2048 {
		t.Fatalf("leaderboard config %+v", lb)
	}
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"RALLY_LEADERBOARD_STORE=postgres"}, "leaderboard.store"},
		{[]string{"RALLY_LEADERBOARD_STORE=redis"}, "leaderboard.redis_url"},
		{[]string{"RALLY_LEADERBOARD_STORE=redis", "RALLY_LEADERBOARD_REDIS_URL=http://x"}, "leaderboard.redis_url"},
		{[]string{"RALLY_LEADERBOARD_BOARDS=" + filepath.Join(t.TempDir(), "none.yaml")}, "leaderboard.boards"},
		{[]string{"RALLY_LEADERBOARD_MAX_METADATA_BYTES=0"}, "leaderboard.max_metadata_bytes"},
		{[]string{"RALLY_LEADERBOARD_MAX_METADATA_BYTES=lots"}, "leaderboard.max_metadata_bytes"},
	} {
		_, err := Load(flags(t), c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line naming %s", c.env, err, c.want)
		}
	}
}
