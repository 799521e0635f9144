package httpapi

import (
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/compactkv/compactkv/kvstore"
)

// metrics are the API's Prometheus metrics, in a registry of their own.
type metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec   // route, code
	httpDuration *prometheus.HistogramVec // route
	storeOps     *prometheus.HistogramVec // op
	storeErrors  *prometheus.CounterVec   // op
	storeBusy    *prometheus.GaugeVec     // op
	readWaits    *prometheus.HistogramVec // kind, outcome
	forwards     *prometheus.CounterVec   // outcome

	restoreRecords  prometheus.Gauge
	restoreBytes    prometheus.Gauge
	restoreDuration prometheus.Gauge
	restoreInfo     *prometheus.GaugeVec // mode, reason
}

var storeOps = []string{"put", "get", "delete", "scan"}

// forwardOutcomes are the outcome labels of forwards (routing.go).
var forwardOutcomes = []string{"ok", "unreachable", "timeout", "cancelled", "refused", "failed"}

// waitOutcomes are the outcome labels of readWaits (waitOutcome).
var waitOutcomes = []string{"ok", "timeout", "foreign", "cancelled", "failed"}

func newMetrics(cachePath string) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		httpRequests: counterVec("profilesvc_http_requests_total",
			"HTTP requests served, by route (the pattern matched) and status code.", "route", "code"),
		httpDuration: histogramVec("profilesvc_http_request_duration_seconds",
			"Time to serve an HTTP request, by route.", prometheus.DefBuckets, "route"),
		storeOps: histogramVec("profilesvc_store_operation_duration_seconds",
			"Latency of store calls, by operation (put, get, delete, scan); its _count counts them.",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}, "op"),
		storeErrors: counterVec("profilesvc_store_errors_total",
			"Store calls that returned an error, by operation.", "op"),
		storeBusy: gaugeVec("profilesvc_store_operations_in_flight",
			"Store calls under way, by operation: a write that waits on a broker that does not answer shows here.", "op"),
		readWaits: histogramVec("profilesvc_read_wait_duration_seconds",
			"Time requests waited for this instance to catch up before reading, by kind "+
				"(token: a Kvstore-Position header; barrier: ?consistent=true or DELETE's check) and outcome "+
				"(ok, timeout: past --read-wait, foreign: a token of another topic, cancelled, failed); its _count counts them.",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "kind", "outcome"),
		forwards: counterVec("profilesvc_forwarded_requests_total",
			"Requests this instance sent on to another (partitioned mode: a read of a key another instance owns, "+
				"or an owner's part of GET /profiles), by outcome (ok: the owner answered, whatever its status; "+
				"unreachable; timeout; cancelled: the client went away; refused: a forwarded request for a key "+
				"not served here, answered 503 rather than forwarded again; failed).", "outcome"),
		restoreRecords: gauge("profilesvc_restore_records",
			"Records (tombstones included) the startup restore read from the topic."),
		restoreBytes: gauge("profilesvc_restore_bytes",
			"Key and value bytes the startup restore read from the topic."),
		restoreDuration: gauge("profilesvc_restore_duration_seconds",
			"Wall-clock time of the startup restore."),
		restoreInfo: gaugeVec("profilesvc_restore_info",
			"1, labelled with the startup restore's mode (full or delta) and the reason for a full one.", "mode", "reason"),
	}
	for _, op := range storeOps {
		m.storeOps.WithLabelValues(op)
		m.storeErrors.WithLabelValues(op)
		m.storeBusy.WithLabelValues(op)
	}
	for _, kind := range []waitKind{waitToken, waitBarrier} {
		for _, outcome := range waitOutcomes {
			if outcome != "foreign" || kind == waitToken {
				m.readWaits.WithLabelValues(string(kind), outcome)
			}
		}
	}
	for _, outcome := range forwardOutcomes {
		m.forwards.WithLabelValues(outcome)
	}
	m.reg.MustRegister(m.httpRequests, m.httpDuration, m.storeOps, m.storeErrors, m.storeBusy, m.readWaits, m.forwards,
		m.restoreRecords, m.restoreBytes, m.restoreDuration, m.restoreInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cachePath != "" {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "profilesvc_cache_size_bytes",
			Help: "Size of the store's cache file (0 while it does not exist).",
		}, func() float64 {
			fi, err := os.Stat(cachePath)
			if err != nil {
				return 0
			}
			return float64(fi.Size())
		}))
	}
	return m
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

func histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func (m *metrics) restored(s kvstore.RestoreStats) {
	m.restoreRecords.Set(float64(s.Records))
	m.restoreBytes.Set(float64(s.Bytes))
	m.restoreDuration.Set(s.Duration.Seconds())
	m.restoreInfo.WithLabelValues(s.Mode, s.Reason).Set(1)
}

// storeOp starts timing a store call; done ends it with the call's error.
func (m *metrics) storeOp(op string) (done func(error)) {
	start := time.Now()
	busy := m.storeBusy.WithLabelValues(op)
	busy.Inc()
	return func(err error) {
		busy.Dec()
		m.storeOps.WithLabelValues(op).Observe(time.Since(start).Seconds())
		if err != nil {
			m.storeErrors.WithLabelValues(op).Inc()
		}
	}
}

// forwarded counts a forward with its outcome (forwardOutcomes).
func (m *metrics) forwarded(outcome string) { m.forwards.WithLabelValues(outcome).Inc() }

// watchGroup exports the store's group state (partitioned mode), read at
// each scrape.
func (m *metrics) watchGroup(s Store) {
	group := func() kvstore.GroupStats {
		if g := s.Stats().Group; g != nil {
			return *g
		}
		return kvstore.GroupStats{}
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "profilesvc_group_rebalances_total",
			Help: "Views of the consumer group this instance got since it started (partitioned mode): one per " +
				"rebalance it took part in, plus those that lost its partitions (kvstore GroupStats.Views).",
		}, func() float64 { return float64(group().Views) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "profilesvc_group_generation",
			Help: "The consumer group generation of the last view this instance got (partitioned mode).",
		}, func() float64 { return float64(group().Generation) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "profilesvc_group_lost",
			Help: "1 while this instance may no longer be in the consumer group (its session expired, or the " +
				"coordinator does not answer): it serves no partition until it rejoins; else 0 (partitioned mode).",
		}, func() float64 {
			if group().Lost {
				return 1
			}
			return 0
		}),
	)
}

// readWait starts timing a wait of kind before a read; done ends it with
// its outcome (waitOutcome).
func (m *metrics) readWait(kind waitKind) (done func(outcome string)) {
	start := time.Now()
	return func(outcome string) {
		m.readWaits.WithLabelValues(string(kind), outcome).Observe(time.Since(start).Seconds())
	}
}

// instrument counts and times the requests next serves, by the route
// pattern the ServeMux matched (it sets r.Pattern on the request it was
// given) and the status code.
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := routeLabel(r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		m.httpRequests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		m.httpDuration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
