package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

// benchPartitioned measures partitioned mode on d's topic (run on the
// topic with the most partitions): the restore of one member joining two
// others (its third of the topic) against a whole-topic restore in the
// same process, and the time from a member's crash until every partition
// is served again, with 0 and 1 standbys.
func benchPartitioned(e *env, d *dataset, res *results) error {
	add := func(fig string, v float64) { res.add(e.name, d.parts, fig, v) }
	dir := filepath.Join(e.tmp, d.topic+"-partitioned")
	defer os.RemoveAll(dir)
	for r := range *flagRuns {
		group := fmt.Sprintf("%s-bench-%d", d.topic, r)
		whole, err := timeOpen(e, d, filepath.Join(dir, fmt.Sprint("whole-", r)))
		if err != nil {
			return err
		}
		member, restore, err := memberRestore(e, d, group, filepath.Join(dir, fmt.Sprint(r)))
		if err != nil {
			return err
		}
		add("part_whole_s", whole.Seconds())
		add("part_member_s", member.Seconds())
		add("part_restore_s", restore.Seconds())
		log.Printf("  partitioned run %d/%d: whole-topic %.2fs, member joining %.2fs (%.2fx), its restore %.2fs (%.2fx)",
			r+1, *flagRuns, whole.Seconds(), member.Seconds(), member.Seconds()/whole.Seconds(),
			restore.Seconds(), restore.Seconds()/whole.Seconds())
		if !*flagFailover {
			continue
		}
		for _, standbys := range []int{0, 1} {
			took, err := failover(e, d, fmt.Sprintf("%s-failover%d", group, standbys), standbys,
				filepath.Join(dir, fmt.Sprintf("f%d-%d", standbys, r)))
			if err != nil {
				return err
			}
			add(fmt.Sprintf("failover%d_s", standbys), took.Seconds())
		}
	}
	return nil
}

// benchMember is one member of a partitioned-mode group in the benchmark.
type benchMember struct {
	s     *kvstore.Store[User]
	crash *embedded.Crasher
}

// openMember opens a member of group on d's topic with a 6s session (so
// that failover and rebalances take seconds, as a service tuned for it
// would).
func openMember(e *env, d *dataset, group, addr, dir string, standbys int, extra ...kvstore.Option) (*benchMember, error) {
	m := &benchMember{crash: &embedded.Crasher{}}
	var err error
	m.s, err = kvstore.Open[User](context.Background(), d.topic, append([]kvstore.Option{kvstore.Brokers(e.brokers...),
		kvstore.Registry(e.registry), kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(dir),
		kvstore.RestoreMemory(*flagMem), kvstore.Group(group), kvstore.Advertise(addr),
		kvstore.Standbys(standbys), kvstore.SessionTimeout(6 * time.Second),
		kvstore.KafkaOpts(kgo.Dialer(m.crash.DialContext))}, extra...)...)
	return m, err
}

// timeOpen times a global-mode Open of d's topic into an empty dir.
func timeOpen(e *env, d *dataset, dir string) (time.Duration, error) {
	began := time.Now()
	s, err := kvstore.Open[User](context.Background(), d.topic, kvstore.Brokers(e.brokers...),
		kvstore.Registry(e.registry), kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(dir),
		kvstore.RestoreMemory(*flagMem))
	if err != nil {
		return 0, err
	}
	took := time.Since(began)
	return took, s.Close()
}

// memberRestore starts two members and waits until they serve every
// partition, then times a third from Open until it serves its share of the
// partitions (into an empty dir, after the group's rebalance), and the
// restore alone: from the first partition it began to restore (owned, or
// incoming and not yet owned) until it serves its share.
func memberRestore(e *env, d *dataset, group, dir string) (total, restore time.Duration, err error) {
	var others []*benchMember
	defer func() {
		for _, m := range others {
			m.s.Close()
		}
	}()
	for i := range 2 {
		m, err := openMember(e, d, group, fmt.Sprint("other-", i), filepath.Join(dir, fmt.Sprint("other-", i)), 0)
		if err != nil {
			return 0, 0, err
		}
		others = append(others, m)
	}
	// A member joining a running group may own nothing in its first view
	// (its Open returns then) and restore its share after: the third joins
	// once the two serve every partition, so that its restore is timed
	// alone rather than next to the second's.
	if err := awaitServing(others, d.parts, 2*time.Minute); err != nil {
		return 0, 0, err
	}
	var mu sync.Mutex
	var given time.Time // first Idle->Restoring
	track := func(c kvstore.StateChange) {
		mu.Lock()
		defer mu.Unlock()
		if c.To == kvstore.PartitionRestoring && given.IsZero() {
			given = time.Now()
		}
	}
	passes := &restorePasses{}
	began := time.Now()
	m, err := openMember(e, d, group, "measured", filepath.Join(dir, "measured"), 0, kvstore.OnStateChange(track),
		kvstore.OnRestore(passes))
	if err != nil {
		return 0, 0, err
	}
	defer m.s.Close()
	// Its Open may return before the group has moved anything to it (its
	// first view owns nothing, and the others may not have given theirs up
	// yet, so that they still serve every partition): its share first.
	served, err := awaitShare(m, d.parts, d.parts/3, 2*time.Minute)
	if err != nil {
		return 0, 0, err
	}
	if err := awaitServing(append(others, m), d.parts, 2*time.Minute); err != nil {
		return 0, 0, err
	}
	total = time.Since(began)
	log.Printf("  the member's restores: %s", passes)
	mu.Lock()
	defer mu.Unlock()
	return total, served.Sub(given), nil
}

// restorePasses records the partitions of each restore a store starts, and
// how long each took.
type restorePasses struct {
	mu    sync.Mutex
	parts [][]int32
	took  []time.Duration
}

func (r *restorePasses) OnRestoreStart(rs kvstore.RestoreStart) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ps []int32
	for _, pr := range rs.Partitions {
		ps = append(ps, pr.Partition)
	}
	r.parts = append(r.parts, ps)
}

func (r *restorePasses) OnBatchRestored(kvstore.BatchRestored) {}

func (r *restorePasses) OnRestoreEnd(st kvstore.RestoreStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.Records > 0 {
		r.took = append(r.took, st.Duration)
	}
}

func (r *restorePasses) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("partitions %v, took %v", r.parts, r.took)
}

// failover starts three members with standbys, crashes one (its
// connections cut, as a kill -9 looks to the brokers), and times until the
// two others serve every partition.
func failover(e *env, d *dataset, group string, standbys int, dir string) (time.Duration, error) {
	var ms []*benchMember
	defer func() {
		for _, m := range ms {
			m.s.Close()
		}
	}()
	for i := range 3 {
		m, err := openMember(e, d, group, fmt.Sprint("m", i), filepath.Join(dir, fmt.Sprint(i)), standbys)
		if err != nil {
			return 0, err
		}
		ms = append(ms, m)
	}
	if err := awaitServing(ms, d.parts, 2*time.Minute); err != nil {
		return 0, err
	}
	began := time.Now()
	ms[0].crash.Crash()
	if err := awaitServing(ms[1:], d.parts, 2*time.Minute); err != nil {
		return 0, err
	}
	return time.Since(began), nil
}

// awaitShare waits until m serves at least n of the topic's parts
// partitions, and returns when it saw them served: owned and caught up, as
// Owner says of a key of each (a partition a standby before it was owned
// is following before it is served).
func awaitShare(m *benchMember, parts, n int, within time.Duration) (time.Time, error) {
	key := map[int32]string{} // a key of each partition
	for i := 0; len(key) < parts; i++ {
		k := fmt.Sprint("share-", i)
		p, _, _ := m.s.Owner(k)
		if _, ok := key[p]; !ok {
			key[p] = k
		}
	}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		served := 0
		for _, k := range key {
			if _, _, local := m.s.Owner(k); local {
				served++
			}
		}
		if served >= n {
			return time.Now(), nil
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("partitioned mode: the member joining never served %d partitions", n)
}

// awaitServing waits until the members between them serve every one of
// the topic's partitions, each exactly once.
func awaitServing(ms []*benchMember, parts int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		served := map[int32]int{}
		for _, m := range ms {
			for _, ps := range m.s.Stats().Partitions {
				if ps.Role == kvstore.RoleOwner && ps.State == kvstore.PartitionFollowing {
					served[ps.Partition]++
				}
			}
		}
		ok := len(served) == parts
		for _, n := range served {
			ok = ok && n == 1
		}
		if ok {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("partitioned mode: the members never served every partition")
}
