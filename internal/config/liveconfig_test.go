package config

import (
	"strings"
	"testing"
	"time"
)

func TestLiveConfigDefaultsStartWithNothing(t *testing.T) {
	lc := Default().LiveConfig
	if lc.Source != "none" || lc.Git.Branch != "main" || lc.Git.PollInterval != 30*time.Second || lc.Debounce != 100*time.Millisecond {
		t.Fatalf("live config defaults %+v", lc)
	}
}

func TestLiveConfigKeys(t *testing.T) {
	dir := t.TempDir()
	res, err := Load(flags(t), []string{
		"RALLY_LIVECONFIG_SOURCE=dir", "RALLY_LIVECONFIG_DIR=" + dir, "RALLY_LIVECONFIG_GIT_POLL_INTERVAL=0s",
	})
	if err != nil {
		t.Fatal(err)
	}
	if lc := res.Config.LiveConfig; lc.Source != "dir" || lc.Dir != dir || lc.Git.PollInterval != 0 {
		t.Fatalf("loaded %+v", lc)
	}
	file := writeFile(t, "liveconfig:\n  source: git\n  git:\n    url: https://git.example.com/game/config.git\n    branch: live\n    path: config\n")
	res, err = Load(flags(t, "--config", file), nil)
	if err != nil {
		t.Fatal(err)
	}
	if g := res.Config.LiveConfig.Git; g.URL != "https://git.example.com/game/config.git" || g.Branch != "live" || g.Path != "config" {
		t.Fatalf("git %+v", g)
	}
}

func TestLiveConfigErrorsNameTheKey(t *testing.T) {
	file := writeFile(t, "x")
	cases := []struct {
		env  []string
		want string
	}{
		{[]string{"RALLY_LIVECONFIG_SOURCE=s3"}, `liveconfig.source: "s3" is not one of none, dir, git`},
		{[]string{"RALLY_LIVECONFIG_SOURCE=dir"}, "liveconfig.dir: want an existing directory"},
		{[]string{"RALLY_LIVECONFIG_SOURCE=dir", "RALLY_LIVECONFIG_DIR=" + file}, "liveconfig.dir: want an existing directory"},
		{[]string{"RALLY_LIVECONFIG_SOURCE=git"}, "liveconfig.git.url: want a repository path or URL"},
		{[]string{"RALLY_LIVECONFIG_SOURCE=git", "RALLY_LIVECONFIG_GIT_URL=x", "RALLY_LIVECONFIG_GIT_BRANCH="}, "liveconfig.git.branch"},
		{[]string{"RALLY_LIVECONFIG_GIT_POLL_INTERVAL=1ms"}, "liveconfig.git.poll_interval: must be 0 (webhook only) or at least 50ms"},
		{[]string{"RALLY_LIVECONFIG_DEBOUNCE=0s"}, "liveconfig.debounce"},
		{[]string{"RALLY_LIVECONFIG_HISTORY=0"}, "liveconfig.history"},
		{[]string{"RALLY_LIVECONFIG_BUCKET=a.b"}, "liveconfig.bucket"},
		{[]string{"RALLY_LIVECONFIG_EXPOSURE_STREAM=RALLY_ROOM_EVENTS"}, "liveconfig.exposure_stream"},
		{[]string{"RALLY_LIVECONFIG_GIT_SSH_KEY=/nonexistent/key"}, "liveconfig.git.ssh_key"},
	}
	for _, c := range cases {
		_, err := Load(flags(t), c.env)
		if err == nil {
			t.Errorf("%v: Load succeeded", c.env)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %q, want one line with %q", c.env, err, c.want)
		}
	}
}
