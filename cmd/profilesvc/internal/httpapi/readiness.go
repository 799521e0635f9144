package httpapi

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/compactkv/compactkv/kvstore"
)

// readiness is the body of /healthz and /readyz.
type readiness struct {
	Ready bool `json:"ready"`
	// Mode and Reason are the startup restore's (kvstore.RestoreStats):
	// full (and why) or delta. Left out in partitioned mode once the store
	// is open: there each partition is restored on its own as it is
	// assigned, by a delta from its checkpoint (read by the follower) or a
	// rebuild from the start of the topic, so no one mode is true of them.
	Mode   string `json:"mode,omitempty"`
	Reason string `json:"reason,omitempty"`
	// RestoredRecords, RestoredBytes and DurationMS are what the startup
	// restore read, and its time. In partitioned mode they sum the
	// partition rebuilds from the start of the topic this instance has run
	// since it started; a partition caught up through a delta from its
	// checkpoint is read by the follower and does not count (so a member
	// whose partitions all came back through deltas shows 0).
	RestoredRecords int64 `json:"restored_records"`
	RestoredBytes   int64 `json:"restored_bytes"`
	DurationMS      int64 `json:"duration_ms"`
	Partitions      int32 `json:"partitions,omitempty"`
	// Percent is how much of the restore is done, while it runs.
	Percent *float64 `json:"percent,omitempty"`

	// The rest is there once the store is open.

	Topic string `json:"topic,omitempty"`
	// StalenessMS is how long ago the stalest partition was last caught up
	// with the topic: how stale a read can be at worst. Null while some
	// partition has never been caught up.
	StalenessMS *int64 `json:"staleness_ms,omitempty"`
	// MaxStalenessMS is the MaxStaleness bound; absent when off.
	MaxStalenessMS int64 `json:"max_staleness_ms,omitempty"`
	// Unready says why Ready is false: one entry per partition at fault.
	Unready []unready `json:"unready,omitempty"`
	// PartitionStats has one entry per partition of the topic.
	PartitionStats []partitionStatus `json:"partition_stats,omitempty"`

	// Partitioned mode only: the partitions this instance owns (serves),
	// keeps warm as a standby, and leaves to their owners (Idle: role
	// none, not followed here, so partition_stats gives them no lag or
	// age), and whether it may have dropped out of the group (it then
	// serves nothing until it rejoins).
	Owned   []int32 `json:"owned,omitzero"`
	Standby []int32 `json:"standby,omitzero"`
	Idle    []int32 `json:"idle,omitzero"`
	Lost    bool    `json:"lost,omitempty"`
}

// unready is one partition that makes /readyz answer 503, and why.
type unready struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Offset is the partition's applied offset: the next record the cache
	// would apply (with a poison record, that record's offset).
	Offset int64  `json:"offset"`
	State  string `json:"state"`
	Cause  string `json:"cause"`
}

// partitionStatus is one partition's kvstore.PartitionStats as JSON.
type partitionStatus struct {
	Partition int32  `json:"partition"`
	State     string `json:"state"`
	Applied   int64  `json:"applied"`
	End       int64  `json:"end"`
	// Lag and CaughtUpAgeMS are left out for a partition this instance does
	// not follow (partitioned mode, role none, state idle): its cache of it
	// stands still while the topic moves on, so both would only grow. Its
	// owner reports them.
	Lag *int64 `json:"lag,omitempty"`
	// CaughtUpAgeMS is how long ago the cache last held every record of the
	// partition; null if it never has.
	CaughtUpAgeMS *caughtUpAge `json:"caught_up_age_ms,omitempty"`
	Error         string       `json:"error,omitempty"`
	// Role (owner, standby, none) and Owner (the owner's address; "" while
	// none) are there in partitioned mode.
	Role  string `json:"role,omitempty"`
	Owner string `json:"owner,omitempty"`
}

// caughtUpAge is a partition's caught_up_age_ms: milliseconds, or null
// (ms nil) for a partition never caught up.
type caughtUpAge struct{ ms *int64 }

func (c caughtUpAge) MarshalJSON() ([]byte, error) {
	if c.ms == nil {
		return []byte("null"), nil
	}
	return strconv.AppendInt(nil, *c.ms, 10), nil
}

// followed says whether this instance follows ps (global mode: every
// partition; partitioned mode: those it owns or keeps warm). The lag and
// caught-up age of the others say nothing about this instance.
func followed(ps kvstore.PartitionStats) bool { return ps.Role != kvstore.RoleNone }

// status returns what /readyz says at now, and the store's stats it judged
// (zero before SetReady).
func (a *API) status(now time.Time) (readiness, kvstore.Stats) {
	st := a.state.Load()
	if st == nil {
		var rd readiness
		a.progress.fill(&rd)
		return rd, kvstore.Stats{}
	}
	stats := st.store.Stats()
	rd := readiness{
		Mode:            st.stats.Mode,
		Reason:          st.stats.Reason,
		RestoredRecords: st.stats.Records,
		RestoredBytes:   st.stats.Bytes,
		DurationMS:      st.stats.Duration.Milliseconds(),
		Partitions:      st.stats.Partitions,
		Topic:           stats.Topic,
		MaxStalenessMS:  a.maxStaleness.Milliseconds(),
	}
	// judged says whether a partition counts for readiness and staleness:
	// every one in global mode, the owned ones in partitioned mode.
	judged := func(kvstore.PartitionStats) bool { return true }
	if st.partitioned {
		judged = func(ps kvstore.PartitionStats) bool { return ps.Role == kvstore.RoleOwner }
		// No one restore mode is true of partitions restored one by one
		// (the store's says "partition" whatever they did), and the
		// counts are what this instance's partition rebuilds read.
		rd.Mode, rd.Reason = "", ""
		var d time.Duration
		rd.RestoredRecords, rd.RestoredBytes, d = a.progress.sums()
		rd.DurationMS = d.Milliseconds()
		rd.Owned, rd.Standby, rd.Idle = []int32{}, []int32{}, []int32{}
		if stats.Group != nil {
			rd.Lost = stats.Group.Lost
		}
	}
	var stalest *kvstore.PartitionStats
	for _, ps := range stats.Partitions {
		if judged(ps) && (stalest == nil || ps.CaughtUpAt.Before(stalest.CaughtUpAt)) {
			stalest = &ps
		}
	}
	if stalest != nil {
		rd.StalenessMS = caughtUpAgeMS(*stalest, now)
	}
	for _, ps := range stats.Partitions {
		status := partitionStatus{
			Partition: ps.Partition, State: ps.State.String(),
			Applied: ps.Applied, End: ps.End, Error: errText(ps.Err),
		}
		if followed(ps) {
			status.Lag, status.CaughtUpAgeMS = &ps.Lag, &caughtUpAge{caughtUpAgeMS(ps, now)}
		}
		if st.partitioned {
			status.Role, status.Owner = ps.Role.String(), ps.Owner
			switch ps.Role {
			case kvstore.RoleOwner:
				rd.Owned = append(rd.Owned, ps.Partition)
			case kvstore.RoleStandby:
				rd.Standby = append(rd.Standby, ps.Partition)
			case kvstore.RoleNone:
				rd.Idle = append(rd.Idle, ps.Partition)
			}
		}
		rd.PartitionStats = append(rd.PartitionStats, status)
		if !judged(ps) {
			continue
		}
		var cause string
		switch age := now.Sub(ps.CaughtUpAt); {
		case ps.State == kvstore.PartitionStopped:
			cause = "the follower stopped"
			if ps.Err != nil {
				cause = ps.Err.Error()
			}
		case st.partitioned && ps.State == kvstore.PartitionRestoring:
			cause = "assigned to this instance and still restoring; its keys answer 503 until it is done"
		case a.maxStaleness > 0 && ps.CaughtUpAt.IsZero():
			cause = "never caught up with the topic; max staleness " + a.maxStaleness.String()
		case a.maxStaleness > 0 && age > a.maxStaleness:
			cause = fmt.Sprintf("not caught up with the topic for %v, longer than the max staleness %v",
				age.Round(time.Millisecond), a.maxStaleness)
		default:
			continue
		}
		if ps.State != kvstore.PartitionStopped && ps.Err != nil {
			cause += " (" + ps.State.String() + ": " + ps.Err.Error() + ")"
		}
		u := unready{Topic: stats.Topic, Partition: ps.Partition, Offset: ps.Applied, State: ps.State.String(), Cause: cause}
		// A poison record says where it is: that partition and offset, not
		// the whole poll's (which stopped every partition's follower).
		var pe *kvstore.PoisonError
		if errors.As(ps.Err, &pe) {
			if pe.Partition != ps.Partition {
				u.Cause = fmt.Sprintf("the follower stopped at a poison record in partition %d", pe.Partition)
			} else {
				u.Offset = pe.Offset
			}
		}
		rd.Unready = append(rd.Unready, u)
	}
	rd.Ready = len(rd.Unready) == 0
	return rd, stats
}

func caughtUpAgeMS(ps kvstore.PartitionStats, now time.Time) *int64 {
	if ps.CaughtUpAt.IsZero() {
		return nil
	}
	ms := now.Sub(ps.CaughtUpAt).Milliseconds()
	return &ms
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// healthz answers 200 while the process runs, with what /readyz would say.
func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	rd, _ := a.status(time.Now())
	writeJSON(w, http.StatusOK, rd)
}

// readyz answers 200 while the store serves fresh enough data, else 503
// with the causes: until the store has restored, while the follower of some
// partition has stopped, and while some partition is staler than
// MaxStaleness. The profile routes keep serving meanwhile.
func (a *API) readyz(w http.ResponseWriter, _ *http.Request) {
	rd, _ := a.status(time.Now())
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, code, rd)
}

var (
	readyDesc = prometheus.NewDesc("profilesvc_ready",
		"1 while /readyz answers 200 (the store has restored, no partition's follower has stopped "+
			"and, with --max-staleness, every partition is fresh enough), else 0.", nil, nil)
	partitionStateDesc = prometheus.NewDesc("profilesvc_partition_state",
		"1 for the state each partition of the topic is in (restoring, following, stalled, stopped; idle: "+
			"another instance owns it, partitioned mode), "+
			"0 for the others.", []string{"partition", "state"}, nil)
	partitionLagDesc = prometheus.NewDesc("profilesvc_partition_lag_records",
		"Records of each partition the cache has yet to apply: the end offset as last seen (at most "+
			"about a second ago while the broker answers) minus the applied offset. Partitioned mode: only "+
			"the partitions this instance follows (role owner or standby); an idle one's owner reports it.", []string{"partition"}, nil)
	partitionRoleDesc = prometheus.NewDesc("profilesvc_partition_role",
		"1 for what this instance is to each partition (owner: it serves it, every partition in global mode; "+
			"standby: it keeps it warm; none: another instance owns it), 0 for the others.", []string{"partition", "role"}, nil)
	partitionAgeDesc = prometheus.NewDesc("profilesvc_partition_caught_up_age_seconds",
		"Seconds since the cache last held every record of each partition: how stale a read of it "+
			"can be. +Inf if it never has. Partitioned mode: only the partitions this instance follows "+
			"(role owner or standby); an idle one's owner reports it.", []string{"partition"}, nil)
)

var partitionStates = []kvstore.PartitionState{kvstore.PartitionRestoring, kvstore.PartitionFollowing,
	kvstore.PartitionStalled, kvstore.PartitionStopped, kvstore.PartitionIdle}

var partitionRoles = []kvstore.PartitionRole{kvstore.RoleOwner, kvstore.RoleStandby, kvstore.RoleNone}

// storeCollector exports readiness and the store's per-partition Stats,
// read at each scrape.
type storeCollector struct{ a *API }

func (storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- readyDesc
	ch <- partitionStateDesc
	ch <- partitionLagDesc
	ch <- partitionRoleDesc
	ch <- partitionAgeDesc
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	rd, stats := c.a.status(now)
	ready := 0.0
	if rd.Ready {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready)
	for _, ps := range stats.Partitions {
		p := strconv.Itoa(int(ps.Partition))
		for _, s := range partitionStates {
			v := 0.0
			if ps.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(partitionStateDesc, prometheus.GaugeValue, v, p, s.String())
		}
		for _, r := range partitionRoles {
			v := 0.0
			if ps.Role == r {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(partitionRoleDesc, prometheus.GaugeValue, v, p, r.String())
		}
		if !followed(ps) {
			// Idle here: the cache of it stands still while the topic
			// moves on, so lag and age would grow for as long as another
			// instance owns it, and an alert on them would fire.
			continue
		}
		ch <- prometheus.MustNewConstMetric(partitionLagDesc, prometheus.GaugeValue, float64(ps.Lag), p)
		age := math.Inf(1)
		if !ps.CaughtUpAt.IsZero() {
			age = now.Sub(ps.CaughtUpAt).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(partitionAgeDesc, prometheus.GaugeValue, age, p)
	}
}
