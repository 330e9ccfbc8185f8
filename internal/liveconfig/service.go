package liveconfig

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	configv1 "github.com/rallyhq/rally/api/proto/rally/config/v1"
)

// Caller returns the authenticated player of a request.
type Caller func(ctx context.Context) (userID string, ok bool)

// Limits on a request's attributes and key filter: targeting needs short
// strings, and a client must not make the server do unbounded work.
const (
	maxAttrLen   = 128
	maxCohorts   = 64
	maxKeyFilter = 512
)

// Service serves rally.config.v1.ConfigService from a Live.
type Service struct {
	configv1.UnimplementedConfigServiceServer
	live     *Live
	caller   Caller
	watchers prometheus.Gauge
}

// NewService returns the gRPC service; reg may be nil.
func NewService(live *Live, caller Caller, reg prometheus.Registerer) *Service {
	s := &Service{live: live, caller: caller, watchers: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rally_liveconfig_watchers", Help: "Open Watch streams.",
	})}
	if reg != nil {
		reg.MustRegister(s.watchers)
	}
	return s
}

func (s *Service) player(ctx context.Context, attrs *configv1.PlayerAttributes, keys []string) (Player, error) {
	uid, ok := s.caller(ctx)
	if !ok {
		return Player{}, status.Error(codes.Unauthenticated, "no session")
	}
	p := Player{
		ID: uid, Region: attrs.GetRegion(), Device: attrs.GetDevice(), Platform: attrs.GetPlatform(),
		AppVersion: attrs.GetAppVersion(), Cohorts: attrs.GetCohorts(),
	}
	for name, v := range map[string]string{"region": p.Region, "device": p.Device, "platform": p.Platform, "app_version": p.AppVersion} {
		if len(v) > maxAttrLen {
			return p, status.Errorf(codes.InvalidArgument, "attributes.%s: longer than %d bytes", name, maxAttrLen)
		}
	}
	if len(p.Cohorts) > maxCohorts {
		return p, status.Errorf(codes.InvalidArgument, "attributes.cohorts: more than %d tags", maxCohorts)
	}
	for i, c := range p.Cohorts {
		if c == "" || len(c) > maxAttrLen {
			return p, status.Errorf(codes.InvalidArgument, "attributes.cohorts[%d]: empty or longer than %d bytes", i, maxAttrLen)
		}
	}
	if len(keys) > maxKeyFilter {
		return p, status.Errorf(codes.InvalidArgument, "keys: more than %d", maxKeyFilter)
	}
	for i, k := range keys {
		if k == "" || len(k) > 256 {
			return p, status.Errorf(codes.InvalidArgument, "keys[%d]: empty or longer than 256 bytes", i)
		}
	}
	return p, nil
}

// GetConfig implements ConfigService.
func (s *Service) GetConfig(ctx context.Context, req *configv1.GetConfigRequest) (*configv1.Config, error) {
	p, err := s.player(ctx, req.GetAttributes(), req.GetKeys())
	if err != nil {
		return nil, err
	}
	_, span := s.live.tracer.Start(ctx, "liveconfig.get_config", trace.WithAttributes(attribute.String("player.id", p.ID)))
	defer span.End()
	r := s.live.Resolve(p)
	span.SetAttributes(attribute.String("config.version", r.Version()), attribute.Int("config.assignments", len(r.Assignments)))
	return ToProto(r, req.GetKeys()), nil
}

// Watch implements ConfigService: the resolved configuration now, then
// again whenever it changes for this player, until the client goes away.
func (s *Service) Watch(req *configv1.WatchRequest, stream configv1.ConfigService_WatchServer) error {
	ctx := stream.Context()
	p, err := s.player(ctx, req.GetAttributes(), req.GetKeys())
	if err != nil {
		return err
	}
	s.watchers.Inc()
	defer s.watchers.Dec()
	_, span := s.live.tracer.Start(ctx, "liveconfig.watch", trace.WithAttributes(attribute.String("player.id", p.ID)))
	defer span.End()
	// The first message is the config as it stands, even an empty one, so
	// a watcher never waits for a change to learn where it starts.
	var last string
	first := true
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		changed := s.live.Changed()
		r := s.live.Resolve(p)
		if fp := r.fingerprint(); fp != last || first {
			first = false
			if err := stream.Send(ToProto(r, req.GetKeys())); err != nil {
				return err
			}
			span.AddEvent("sent", trace.WithAttributes(attribute.String("config.version", r.Version())))
			last = fp
		}
		wait := time.Hour
		if next := r.Snapshot().NextChange(s.live.Now()); !next.IsZero() {
			wait = max(next.Sub(s.live.Now()), 10*time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// ToProto renders a resolution, limited to the keys or namespaces given
// (none: everything).
func ToProto(r *Resolved, keys []string) *configv1.Config {
	out := &configv1.Config{Version: r.Version(), Values: map[string]*structpb.Value{}}
	if !r.snap.loaded.IsZero() {
		out.LoadedUnixMs = r.snap.loaded.UnixMilli()
	}
	base := r.snap.baseProto()
	for _, k := range r.Select(keys) {
		if v, ok := r.overlay[k]; ok {
			pv, err := structpb.NewValue(v)
			if err != nil {
				pv = structpb.NewStringValue(fmt.Sprint(v))
			}
			out.Values[k] = pv
			continue
		}
		out.Values[k] = base[k]
	}
	for _, a := range r.Assignments {
		kind := configv1.Assignment_KIND_EXPERIMENT
		if a.Kind == KindRelease {
			kind = configv1.Assignment_KIND_RELEASE
		}
		out.Assignments = append(out.Assignments, &configv1.Assignment{Id: a.ID, Variant: a.Variant, Kind: kind, Layer: a.Layer})
	}
	return out
}
