package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func flags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rally.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	if c.HTTP.Addr != "127.0.0.1:7350" || c.GRPC.Addr != "127.0.0.1:7349" || c.NATS.Addr != "127.0.0.1:4222" {
		t.Fatalf("default addresses: %+v %+v %+v", c.HTTP, c.GRPC, c.NATS)
	}
	if c.NATS.URL != "" {
		t.Fatalf("default must embed NATS, got url %q", c.NATS.URL)
	}
	if c.Shutdown.Timeout != 15*time.Second || c.NATS.ConnectTimeout != 10*time.Second {
		t.Fatalf("durations: %+v %+v", c.Shutdown, c.NATS)
	}
}

// Each layer overrides the one below it, key by key.
func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, `
http:
  addr: 127.0.0.1:1001
grpc:
  addr: 127.0.0.1:1002
nats:
  addr: 127.0.0.1:1003
log:
  level: warn
`)
	env := []string{
		"RALLY_GRPC_ADDR=127.0.0.1:2002",
		"RALLY_NATS_ADDR=127.0.0.1:2003",
		"RALLY_DATA_DIR=" + dir,
		"PATH=/bin",
	}
	res, err := Load(flags(t, "--config", file, "--nats-addr", "off"), env)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Config
	checks := map[string][2]string{
		"http.addr (file)":     {c.HTTP.Addr, "127.0.0.1:1001"},
		"grpc.addr (env)":      {c.GRPC.Addr, "127.0.0.1:2002"},
		"nats.addr (flag)":     {c.NATS.Addr, "off"},
		"log.level (file)":     {c.Log.Level, "warn"},
		"log.format (default)": {c.Log.Format, "auto"},
		"data_dir (env)":       {c.DataDir, dir},
	}
	for name, got := range checks {
		if got[0] != got[1] {
			t.Errorf("%s = %q, want %q", name, got[0], got[1])
		}
	}
	if res.File != file {
		t.Errorf("File = %q", res.File)
	}
}

func TestConfigFileFromEnv(t *testing.T) {
	file := writeFile(t, "http:\n  addr: 127.0.0.1:1234\n")
	res, err := Load(flags(t), []string{EnvConfigFile + "=" + file})
	if err != nil {
		t.Fatal(err)
	}
	if res.Config.HTTP.Addr != "127.0.0.1:1234" {
		t.Fatalf("http.addr = %q", res.Config.HTTP.Addr)
	}
}

func TestTypedEnvValues(t *testing.T) {
	res, err := Load(flags(t), []string{
		"RALLY_SHUTDOWN_TIMEOUT=3s", "RALLY_DEV=true", "RALLY_TELEMETRY_SAMPLE_RATIO=0.25",
	})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Config
	if c.Shutdown.Timeout != 3*time.Second || !c.Dev || c.Telemetry.SampleRatio != 0.25 {
		t.Fatalf("got %+v dev=%v ratio=%v", c.Shutdown, c.Dev, c.Telemetry.SampleRatio)
	}
}

func TestUnknownEnvIsAWarningNotAnError(t *testing.T) {
	res, err := Load(flags(t), []string{"RALLY_HTTP_ADR=x", "RALLY_TEST_SERVICES=optional"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "RALLY_HTTP_ADR") {
		t.Fatalf("warnings = %q", res.Warnings)
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		fs   *pflag.FlagSet
		env  []string
		want string
	}{
		{"unknown key", flags(t, "--config", writeFile(t, "http:\n  adr: x\n")), nil, `unknown key "http.adr"`},
		{"unknown section", flags(t, "--config", writeFile(t, "matchmaker: 1\n")), nil, `unknown key "matchmaker"`},
		{"bad yaml", flags(t, "--config", writeFile(t, "http: [\n")), nil, "rally.yaml"},
		{"missing file", flags(t, "--config", "/nonexistent/rally.yaml"), nil, "/nonexistent/rally.yaml"},
		{"port out of range", flags(t, "--http-addr", "127.0.0.1:99999"), nil, "http.addr"},
		{"port not a number", flags(t, "--grpc-addr", "127.0.0.1:http"), nil, "grpc.addr"},
		{"no port", flags(t, "--nats-addr", "localhost"), nil, "nats.addr"},
		{"bad host", flags(t, "--http-addr", "example.com:80"), nil, "http.addr"},
		{"bad nats url", flags(t, "--nats-url", "http://x:4222"), nil, "nats.url"},
		{"bad duration", flags(t), []string{"RALLY_SHUTDOWN_TIMEOUT=soon"}, "shutdown.timeout"},
		{"negative timeout", flags(t), []string{"RALLY_SHUTDOWN_TIMEOUT=-1s"}, "shutdown.timeout"},
		{"bad bool", flags(t), []string{"RALLY_DEV=maybe"}, "dev"},
		{"bad log format", flags(t, "--log-format", "xml"), nil, "log.format"},
		{"bad ratio", flags(t), []string{"RALLY_TELEMETRY_SAMPLE_RATIO=2"}, "telemetry.sample_ratio"},
		{"data dir is a file", flags(t, "--data-dir", notADir), nil, "data_dir"},
		{"data dir under a file", flags(t, "--data-dir", filepath.Join(notADir, "sub")), nil, "data_dir"},
		{"unknown store", flags(t), []string{"RALLY_STORE_DRIVER=mysql"}, "store.driver"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.fs, tc.env)
			if err == nil {
				t.Fatal("Load succeeded, want error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q does not name %q", msg, tc.want)
			}
			if strings.Contains(msg, "\n") {
				t.Fatalf("error is not one line: %q", msg)
			}
		})
	}
}

func TestValidateCreatesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "data")
	if _, err := Load(flags(t, "--data-dir", dir), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(dir))); !os.IsNotExist(err) {
		t.Fatalf("Load created something: %v", err)
	}
}

func TestListenAllRewritesLoopbackOnly(t *testing.T) {
	res, err := Load(flags(t, "--listen-all", "--grpc-addr", "10.1.2.3:7349"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Config
	if c.HTTP.Addr != "0.0.0.0:7350" || c.NATS.Addr != "0.0.0.0:4222" {
		t.Fatalf("loopback not rewritten: %s %s", c.HTTP.Addr, c.NATS.Addr)
	}
	if c.GRPC.Addr != "10.1.2.3:7349" {
		t.Fatalf("explicit address rewritten: %s", c.GRPC.Addr)
	}
	out, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "0.0.0.0:7350") {
		t.Fatalf("printed config is not the effective one:\n%s", out)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	res, err := Load(flags(t, "--config", "../../deploy/rally.example.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	def := Default()
	def.DataDir = res.Config.DataDir
	if res.Config != def {
		t.Fatalf("the example should document the defaults:\n got %+v\nwant %+v", res.Config, def)
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("nats.connect_timeout"); got != "RALLY_NATS_CONNECT_TIMEOUT" {
		t.Fatal(got)
	}
}
