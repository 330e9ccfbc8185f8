package operator

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reconciles     *prometheus.CounterVec
	created        prometheus.Counter
	createFailures prometheus.Counter
	deleted        *prometheus.CounterVec
	deleteRefused  prometheus.Counter
	unhealthy      *prometheus.CounterVec
	limited        prometheus.Counter
	servers        *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_operator_reconciles_total", Help: "GameServerSet reconcile passes, by result (ok, error).",
		}, []string{"result"}),
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_operator_pods_created_total", Help: "Game-server pods created.",
		}),
		createFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_operator_pod_create_failures_total", Help: "Game-server pod creations the API server refused.",
		}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_operator_pods_deleted_total", Help: "Game-server pods deleted, by reason (Shutdown, Unhealthy, Update, ScaleDown, Terminating).",
		}, []string{"reason"}),
		deleteRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_operator_pod_delete_conflicts_total", Help: "Deletions refused because the pod changed since it was read (for example, it was just allocated).",
		}),
		unhealthy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_operator_unhealthy_total", Help: "Game servers marked Unhealthy, by cause (missed-pings, startup-timeout, pod-failed).",
		}, []string{"cause"}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_operator_parallelism_limited_total", Help: "Passes that stopped at the creation/deletion parallelism limit and left work for the next pass.",
		}),
		servers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rally_operator_gameservers", Help: "Game servers of a set by state, as last seen.",
		}, []string{"namespace", "set", "state"}),
	}
	if reg != nil {
		reg.MustRegister(m.reconciles, m.created, m.createFailures, m.deleted, m.deleteRefused, m.unhealthy, m.limited, m.servers)
	}
	return m
}
