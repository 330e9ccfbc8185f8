package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"

	configv1 "github.com/rallyhq/rally/api/proto/rally/config/v1"
	"github.com/rallyhq/rally/internal/liveconfig"
	"github.com/rallyhq/rally/internal/liveconfig/dirsource"
	"github.com/rallyhq/rally/internal/liveconfig/gitops"
	"github.com/rallyhq/rally/internal/liveconfig/gitsource"
)

// liveConfigState is what the server keeps of the live config domain.
type liveConfigState struct {
	live    *liveconfig.Live
	channel *gitops.Channel // git source only
	syncer  *gitops.Syncer  // git source only
}

// LiveConfig returns the live configuration; valid after Start. Server
// code resolves a player's view with LiveConfig().Resolve(player).
func (s *Server) LiveConfig() *liveconfig.Live {
	if s.liveConfig == nil {
		return nil
	}
	return s.liveConfig.live
}

// startLiveConfig wires live config: the source (a watched directory, or a
// Git branch converged through NATS), exposures on JetStream, the gRPC
// ConfigService and the admin endpoints.
func (s *Server) startLiveConfig(ctx context.Context, mux *http.ServeMux) error {
	lc := s.cfg.LiveConfig
	log := s.log.With("component", "liveconfig")
	st := &liveConfigState{live: liveconfig.New(liveconfig.LiveOptions{
		History: lc.History, Registerer: s.Registry, Tracer: s.tracing.Provider, Log: log,
	})}
	s.liveConfig = st

	if lc.Source != "none" {
		exp, err := liveconfig.StartExposures(ctx, s.bus.JetStream(), liveconfig.ExposureOptions{
			Stream: lc.ExposureStream, MaxAge: lc.ExposureMaxAge, Node: s.nodeID, Registerer: s.Registry, Log: log,
		})
		if err != nil {
			return err
		}
		s.onStop("liveconfig-exposures", exp.Close)
		st.live.SetExposures(exp)
	}

	switch lc.Source {
	case "dir":
		w, err := dirsource.Start(ctx, st.live, dirsource.Options{Dir: lc.Dir, Debounce: lc.Debounce, Log: log})
		if err != nil {
			return err
		}
		s.onStop("liveconfig-dir", func(context.Context) error { return w.Close() })
	case "git":
		if err := s.startLiveConfigGit(ctx, st, mux); err != nil {
			return err
		}
	}

	svc := liveconfig.NewService(st.live, callerID, s.Registry)
	s.grpcServices = append(s.grpcServices, func(g grpc.ServiceRegistrar) { configv1.RegisterConfigServiceServer(g, svc) })
	mux.Handle("GET /admin/liveconfig", s.admin(http.HandlerFunc(st.handleCurrent)))
	mux.Handle("GET /admin/liveconfig/history", s.admin(http.HandlerFunc(st.handleHistory)))
	return nil
}

// startLiveConfigGit follows the versions published on NATS, then fetches
// the branch once before the node turns ready, so that it starts on the
// cluster's newest sound commit.
func (s *Server) startLiveConfigGit(ctx context.Context, st *liveConfigState, mux *http.ServeMux) error {
	lc := s.cfg.LiveConfig
	log := s.log.With("component", "liveconfig")
	ch, err := gitops.OpenChannel(ctx, s.bus.JetStream(), lc.Bucket)
	if err != nil {
		return err
	}
	st.channel = ch
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopFollow, err := ch.Follow(runCtx, st.live)
	if err != nil {
		cancel()
		return err
	}
	st.syncer = gitops.NewSyncer(ch, st.live, gitops.SyncOptions{
		Git: gitsource.Options{
			URL: lc.Git.URL, Branch: lc.Git.Branch, Path: lc.Git.Path,
			Username: lc.Git.Username, Password: lc.Git.Password, SSHKeyFile: lc.Git.SSHKey,
		},
		Node: s.nodeID, Registerer: s.Registry, Tracer: s.tracing.Provider, Log: log,
	})
	version, syncErr := st.syncer.Sync(ctx)
	if version != "" {
		// Wait for our own follower to apply what the bucket holds.
		if err := waitLiveVersion(ctx, st.live, version, 10*time.Second); err != nil {
			log.Warn("live config: published version not applied yet", "version", version, "err", err)
		}
	}
	if syncErr != nil {
		if cur := st.live.Current().Version(); cur != "" {
			log.Warn("live config: starting on the cluster's published version; the branch tip was not taken",
				"version", cur, "err", syncErr)
		} else {
			stopFollow()
			cancel()
			return fmt.Errorf("liveconfig: nothing published yet and the branch gives no configuration: %w", syncErr)
		}
	}
	done := make(chan struct{})
	go func() { defer close(done); st.syncer.Run(runCtx, lc.Git.PollInterval) }()
	s.onStop("liveconfig-git", func(context.Context) error { cancel(); <-done; stopFollow(); return nil })
	mux.Handle("POST /hooks/liveconfig/git", gitWebhook(lc.Git.WebhookSecret, st.syncer.Trigger))
	return nil
}

// waitLiveVersion waits until live holds version.
func waitLiveVersion(ctx context.Context, live *liveconfig.Live, version string, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		changed := live.Changed()
		if live.Current().Version() == version {
			return nil
		}
		select {
		case <-changed:
		case <-t.C:
			return errors.New("timed out")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// webhook triggers a fetch when a Git host reports a push. With a secret
// it accepts GitHub's X-Hub-Signature-256, GitLab's X-Gitlab-Token or
// Authorization: Bearer <secret>.
func gitWebhook(secret string, trigger func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		if secret != "" && !gitWebhookAuthorized(secret, r, body) {
			http.Error(w, "bad or missing webhook signature", http.StatusUnauthorized)
			return
		}
		trigger()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"status":"fetch scheduled"}` + "\n"))
	})
}

func gitWebhookAuthorized(secret string, r *http.Request, body []byte) bool {
	eq := func(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	if sig := r.Header.Get("X-Hub-Signature-256"); sig != "" {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		return eq(sig, "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	if tok := r.Header.Get("X-Gitlab-Token"); tok != "" {
		return eq(tok, secret)
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return eq(tok, secret)
	}
	return false
}

type liveExperimentView struct {
	ID             string            `json:"id"`
	Kind           string            `json:"kind"`
	Layer          string            `json:"layer,omitempty"`
	LayerSlice     [2]float64        `json:"layer_slice,omitzero"`
	File           string            `json:"file"`
	Start          *time.Time        `json:"start,omitempty"`
	End            *time.Time        `json:"end,omitempty"`
	RolloutPercent float64           `json:"rollout_percent_now"`
	Variants       []liveVariantView `json:"variants"`
}

type liveVariantView struct {
	Name    string  `json:"name"`
	Percent float64 `json:"percent"`
}

func (st *liveConfigState) handleCurrent(w http.ResponseWriter, r *http.Request) {
	snap := st.live.Current()
	now := st.live.Now()
	out := map[string]any{
		"version": snap.Version(), "source": snap.Source(), "keys": snap.Keys(), "namespaces": snap.Namespaces(),
	}
	if !snap.Loaded().IsZero() {
		out["loaded_at"] = snap.Loaded().UTC()
	}
	exps := []liveExperimentView{}
	for _, e := range snap.Experiments() {
		v := liveExperimentView{ID: e.ID, Kind: e.Kind.String(), Layer: e.Layer, File: e.File,
			RolloutPercent: float64(e.RolloutAt(now)) * 100 / liveconfig.Buckets}
		if e.Layer != "" {
			from, to := e.LayerSlice()
			v.LayerSlice = [2]float64{float64(from) * 100 / liveconfig.Buckets, float64(to) * 100 / liveconfig.Buckets}
		}
		if start, end := e.Window(); !start.IsZero() || !end.IsZero() {
			if !start.IsZero() {
				v.Start = &start
			}
			if !end.IsZero() {
				v.End = &end
			}
		}
		for _, vr := range e.Variants() {
			v.Variants = append(v.Variants, liveVariantView{Name: vr.Name, Percent: float64(vr.Hi-vr.Lo) * 100 / liveconfig.Buckets})
		}
		exps = append(exps, v)
	}
	out["experiments"] = exps
	if st.channel != nil {
		if p, _, err := st.channel.Current(r.Context()); err == nil && p != nil {
			out["published"] = map[string]any{"version": p.Version, "published_at": p.PublishedAt, "node": p.Node, "message": p.Message}
		}
	}
	writeLiveConfigJSON(w, out)
}

func (st *liveConfigState) handleHistory(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"node": st.live.History()}
	if st.channel != nil {
		if h, err := st.channel.History(r.Context()); err == nil {
			out["published"] = h
		}
	}
	writeLiveConfigJSON(w, out)
}

func writeLiveConfigJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
