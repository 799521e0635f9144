package httpapi

import "github.com/prometheus/client_golang/prometheus"

// misroutedCounter is what *kvstore.Store offers about keys found on a
// partition other than its partitioner's choice (kvstore.Store.Misrouted).
type misroutedCounter interface{ Misrouted() int64 }

// watchMisrouted exports the store's misrouted-record count as
// profilesvc_misrouted_records_total, if the store keeps one.
func (m *metrics) watchMisrouted(s Store) {
	mc, ok := s.(misroutedCounter)
	if !ok {
		return
	}
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "profilesvc_misrouted_records_total",
		Help: "Records read from the topic (restore and follower) whose key sat on a partition other than " +
			"the store's partitioner picks: the topic's writers use different partitioners " +
			"(e.g. confluent-kafka's default consistent_random vs murmur2). Each key is also logged once.",
	}, func() float64 { return float64(mc.Misrouted()) }))
}
