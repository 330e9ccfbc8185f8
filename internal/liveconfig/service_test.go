package liveconfig

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	configv1 "github.com/rallyhq/rally/api/proto/rally/config/v1"
	"github.com/rallyhq/rally/internal/bus"
)

type playerKey struct{}

// serve runs the service on a loopback gRPC server; the player is taken
// from "x-player" metadata, standing in for the session interceptor.
func serve(t *testing.T, l *Live) configv1.ConfigServiceClient {
	t.Helper()
	fromMD := func(ctx context.Context) context.Context {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get("x-player"); len(v) == 1 {
			return context.WithValue(ctx, playerKey{}, v[0])
		}
		return ctx
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(fromMD(ctx), req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &ctxStream{ss, fromMD(ss.Context())})
		}),
	)
	configv1.RegisterConfigServiceServer(srv, NewService(l, func(ctx context.Context) (string, bool) {
		id, ok := ctx.Value(playerKey{}).(string)
		return id, ok
	}, prometheus.NewRegistry()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return configv1.NewConfigServiceClient(cc)
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

func as(player string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "x-player", player)
}

func TestGetConfigOverGRPC(t *testing.T) {
	at := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	l := New(LiveOptions{Log: quiet, Clock: func() time.Time { return at }})
	if _, err := l.Offer(context.Background(), exampleFiles(t), Options{Source: "test"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	client := serve(t, l)
	ctx, cancel := context.WithTimeout(as("player-7"), 10*time.Second)
	defer cancel()

	cfg, err := client.GetConfig(ctx, &configv1.GetConfigRequest{Attributes: &configv1.PlayerAttributes{
		Region: "eu", Platform: "android", AppVersion: "1.6.0",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GetVersion() != l.Current().Version() || cfg.GetLoadedUnixMs() == 0 {
		t.Fatalf("version %q loaded %d", cfg.GetVersion(), cfg.GetLoadedUnixMs())
	}
	if len(cfg.GetValues()) != len(l.Current().Keys()) {
		t.Fatalf("%d values, want %d", len(cfg.GetValues()), len(l.Current().Keys()))
	}
	if !cfg.GetValues()["features.new_shop"].GetBoolValue() {
		t.Fatal("the release after its ramp is not applied to a targeted player")
	}
	if got := cfg.GetValues()["economy.shop"].GetStructValue().GetFields()["featured"].GetListValue().GetValues()[0].GetStringValue(); got != "sword" {
		t.Fatalf("economy.shop.featured[0] = %q", got)
	}
	kinds := map[string]configv1.Assignment_Kind{}
	for _, a := range cfg.GetAssignments() {
		kinds[a.GetId()] = a.GetKind()
	}
	if kinds["new_shop_rollout"] != configv1.Assignment_KIND_RELEASE || kinds["double_gold"] != configv1.Assignment_KIND_EXPERIMENT {
		t.Fatalf("assignments %v", cfg.GetAssignments())
	}
	// The variant decides the value the player sees.
	r := l.Current().Resolve(Player{ID: "player-7"}, at)
	v, _ := r.Variant("double_gold")
	want := map[string]float64{"double": 200, "control": 100}[v]
	if got := cfg.GetValues()["economy.gold_per_win"].GetNumberValue(); got != want {
		t.Fatalf("variant %s: gold_per_win %v, want %v", v, got, want)
	}

	// A key filter: a namespace and one key.
	cfg, err = client.GetConfig(ctx, &configv1.GetConfigRequest{Keys: []string{"matchmaking", "features.chat_filter"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.GetValues()) != 4 || cfg.GetValues()["features.chat_filter"].GetStringValue() != "strict" {
		t.Fatalf("filtered values %v", cfg.GetValues())
	}

	for name, req := range map[string]*configv1.GetConfigRequest{
		"long region":  {Attributes: &configv1.PlayerAttributes{Region: string(make([]byte, 200))}},
		"empty cohort": {Attributes: &configv1.PlayerAttributes{Cohorts: []string{""}}},
		"empty key":    {Keys: []string{""}},
	} {
		if _, err := client.GetConfig(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if _, err := client.GetConfig(context.Background(), &configv1.GetConfigRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a player: %v, want Unauthenticated", err)
	}
}

// Watch sends the configuration at once, again on a new version, and again
// when an experiment starts for the player, with no new version.
func TestConfigWatchPushesChanges(t *testing.T) {
	l := New(LiveOptions{Log: quiet})
	ctx := context.Background()
	if _, err := l.Offer(ctx, pairDoc(1), Options{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	client := serve(t, l)
	wctx, cancel := context.WithTimeout(as("watcher"), 20*time.Second)
	defer cancel()
	stream, err := client.Watch(wctx, &configv1.WatchRequest{Keys: []string{"pair"}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetValues()["pair.left"].GetNumberValue() != 1 {
		t.Fatalf("first push %v", first.GetValues())
	}
	start := time.Now()
	if _, err := l.Offer(ctx, pairDoc(2), Options{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if second.GetValues()["pair.left"].GetNumberValue() != 2 || second.GetVersion() == first.GetVersion() {
		t.Fatalf("second push %v", second)
	}
	t.Logf("push after swap: %s", time.Since(start))

	// An experiment that starts 300 ms from now, for everyone.
	startsAt := time.Now().Add(300 * time.Millisecond).UTC()
	files := pairDoc(3)
	files["pair.yaml"] = append(files["pair.yaml"], []byte("experiments:\n  - id: soon\n    start: "+startsAt.Format(time.RFC3339Nano)+
		"\n    variants: [{name: on, weight: 100, values: {pair.filler: started}}]\n")...)
	if _, err := l.Offer(ctx, files, Options{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	third, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(third.GetAssignments()) != 0 {
		t.Fatalf("the experiment applied before its start: %v", third.GetAssignments())
	}
	fourth, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().Before(startsAt) || len(fourth.GetAssignments()) != 1 || fourth.GetValues()["pair.filler"].GetStringValue() != "started" ||
		fourth.GetVersion() != third.GetVersion() {
		t.Fatalf("push at the experiment's start: %v (at %s, start %s)", fourth, time.Now(), startsAt)
	}
}

func TestExperimentExposuresReachJetStreamOncePerVariant(t *testing.T) {
	b, err := bus.Open(context.Background(), bus.Options{
		ListenAddr: "off", StoreDir: t.TempDir(), ConnectTimeout: 10 * time.Second, Name: t.Name(), Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	x, err := StartExposures(ctx, b.JetStream(), ExposureOptions{Stream: "TEST_EXPOSURES", MaxAge: time.Hour, Node: "node-a", Registerer: reg, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	l := New(LiveOptions{Log: quiet, Clock: func() time.Time { return at }, Exposures: x})
	if _, err := l.Offer(ctx, exampleFiles(t), Options{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	p := Player{ID: "player-9", Region: "eu", Platform: "android", AppVersion: "2.0.0", Cohorts: []string{"beta"}}
	want := map[string]string{}
	for range 5 { // asking again is not a new exposure
		r := l.Resolve(p)
		for _, a := range r.Assignments {
			want[a.ID] = a.Variant
		}
	}
	l.Resolve(Player{ID: "player-10"}) // in double_gold only (no targeting there)
	if err := x.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := b.JetStream().OrderedConsumer(ctx, "TEST_EXPOSURES", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Exposure{}
	n := 0
	for n < len(want)+1 {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("after %d exposures: %v", n, err)
		}
		if msg.Subject() != ExposureSubject {
			t.Fatalf("subject %s", msg.Subject())
		}
		var ev Exposure
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		n++
		if ev.PlayerID == p.ID {
			got[ev.ID] = ev
		}
	}
	if _, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond)); err == nil {
		t.Fatal("more exposures than assignments: duplicates were published")
	}
	for id, variant := range want {
		ev, ok := got[id]
		if !ok || ev.Variant != variant || ev.Node != "node-a" || ev.Region != "eu" || ev.Version != l.Current().Version() {
			t.Fatalf("exposure of %s: %+v, want variant %s", id, ev, variant)
		}
	}
	if ev := got["new_shop_rollout"]; ev.Kind != "release" || ev.AppVersion != "2.0.0" {
		t.Fatalf("release exposure %+v", ev)
	}
}
