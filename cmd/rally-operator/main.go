// Command rally-operator runs the GameServerSet controller: it turns each
// game.rally.dev/v1alpha1 GameServerSet into game-server pods and a headless
// Service. It runs in a cluster (in-cluster config) or beside one
// (--kubeconfig or KUBECONFIG), with leader election, Prometheus metrics and
// health probes as operators do, and serves the allocation API (gRPC and
// REST) that hands Ready game servers to matchmakers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	"github.com/rallyhq/rally/internal/allocation"
	"github.com/rallyhq/rally/internal/buildinfo"
	"github.com/rallyhq/rally/internal/operator"
	"github.com/rallyhq/rally/internal/telemetry"
)

type options struct {
	metricsAddr   string
	probeAddr     string
	leaderElect   bool
	leaderID      string
	leaderNS      string
	namespace     string
	maxParallel   int
	workers       int
	logFormat     string
	logLevel      string
	otlpEndpoint  string
	otlpInsecure  bool
	traceRatio    float64
	printVersion  bool
	shutdownGrace time.Duration
	allocGRPC     string
	allocHTTP     string
	clusterDomain string
}

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "rally-operator: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("rally-operator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config.RegisterFlags(fs) // --kubeconfig
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint (0 turns it off)")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz probes")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader, so only one of several replicas acts")
	fs.StringVar(&o.leaderID, "leader-election-id", "rally-operator.game.rally.dev", "name of the leader-election Lease")
	fs.StringVar(&o.leaderNS, "leader-election-namespace", "", "namespace of the Lease (default: the operator's own, in a cluster)")
	fs.StringVar(&o.namespace, "namespace", "", "watch GameServerSets in this namespace only (default: all)")
	fs.IntVar(&o.maxParallel, "max-parallel", 16, "pod creations (and, separately, deletions) one set runs at once")
	fs.IntVar(&o.workers, "workers", 4, "GameServerSets reconciled at once")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log format: auto, json or text")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "OTLP/gRPC collector host:port for traces (empty: tracing off)")
	fs.BoolVar(&o.otlpInsecure, "otlp-insecure", false, "talk to the OTLP collector without TLS")
	fs.Float64Var(&o.traceRatio, "trace-sample-ratio", 1, "share of reconciles traced")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace", 30*time.Second, "how long running reconciles may take to finish on shutdown")
	fs.StringVar(&o.allocGRPC, "allocation-grpc-address", ":7070", "address of the allocation gRPC API")
	fs.StringVar(&o.allocHTTP, "allocation-http-address", ":7071", "address of the allocation REST API")
	fs.StringVar(&o.clusterDomain, "cluster-domain", "", "cluster DNS domain (e.g. cluster.local) to fully qualify allocated addresses")
	fs.BoolVar(&o.printVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if o.maxParallel < 1 || o.workers < 1 {
		return o, errors.New("--max-parallel and --workers must be at least 1")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	info := buildinfo.Get()
	if o.printVersion {
		fmt.Fprintf(stderr, "rally-operator %s %s\n", info.Version, info.Commit)
		return nil
	}
	slogger := telemetry.NewLogger(stderr, o.logFormat, o.logLevel)
	logger := logr.FromSlogHandler(slogger.Handler())
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)

	tracing, err := telemetry.NewTracerProvider(telemetry.TraceOptions{
		ServiceName: "rally-operator", OTLPEndpoint: o.otlpEndpoint, OTLPInsecure: o.otlpInsecure,
		SampleRatio: o.traceRatio, InstanceID: os.Getenv("HOSTNAME"),
	}, info)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tracing.Shutdown(sctx)
	}()

	cfg, err := config.GetConfig()
	if err != nil {
		return fmt.Errorf("kubernetes config (in-cluster, --kubeconfig or KUBECONFIG): %w", err)
	}
	cfg.UserAgent = "rally-operator/" + info.Version

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := gamev1.AddToScheme(scheme); err != nil {
		return err
	}
	cacheOpts := operator.CacheOptions()
	if o.namespace != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{o.namespace: {}}
	}
	grace := o.shutdownGrace
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         cacheOpts,
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              o.leaderID,
		LeaderElectionNamespace:       o.leaderNS,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &grace,
		Logger:                        logger,
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}

	rec := operator.New(mgr, operator.Options{
		MaxParallel:    o.maxParallel,
		Workers:        o.workers,
		Registerer:     ctrlmetrics.Registry,
		TracerProvider: tracing.Provider,
	})
	if err := rec.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	// The allocation API serves on every replica, leader or not.
	if err := allocation.AddToManager(mgr, allocation.Options{
		GRPCAddr:      o.allocGRPC,
		HTTPAddr:      o.allocHTTP,
		Token:         os.Getenv("RALLY_ALLOCATION_TOKEN"),
		ClusterDomain: o.clusterDomain,
		// A request without a namespace goes to the one watched, if only
		// one is.
		DefaultNamespace: o.namespace,
		Registerer:       ctrlmetrics.Registry,
		TracerProvider:   tracing.Provider,
		Log:              slogger,
	}); err != nil {
		return fmt.Errorf("allocation: %w", err)
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("informers", func(r *http.Request) error {
		sctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(sctx) {
			return errors.New("informer caches not synced")
		}
		return nil
	}); err != nil {
		return err
	}

	logger.Info("rally-operator starting", "version", info.Version, "leaderElection", o.leaderElect, "namespace", o.namespace)
	return mgr.Start(ctx)
}
