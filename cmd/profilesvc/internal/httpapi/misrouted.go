package httpapi

import "github.com/prometheus/client_golang/prometheus"

// watchMisrouted exports the store's count of records whose key sat on a
// partition other than its partitioner's choice (kvstore.Stats.Misrouted) as
// profilesvc_misrouted_records_total, read at each scrape.
func (m *metrics) watchMisrouted(s Store) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "profilesvc_misrouted_records_total",
		Help: "Records read from the topic (restore and follower) whose key sat on a partition other than " +
			"the store's partitioner picks: the topic's writers use different partitioners " +
			"(e.g. confluent-kafka's default consistent_random vs murmur2). Each key is also logged once.",
	}, func() float64 { return float64(s.Stats().Misrouted) }))
}
