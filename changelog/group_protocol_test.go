package changelog

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/embedded"
)

// oldMember is a member of the release before protocol v2, as the group
// sees it: it offers protocol v1 only (the balancer of that release and
// this one's v1 write the same maps, TestAMapOfProtocolV1IsWhatTheOlderReleaseReads)
// and records every map it receives.
type oldMember struct {
	cl *kgo.Client

	mu  sync.Mutex
	got []syncView
}

func joinOld(t *testing.T, c *embedded.Cluster, addr string) *oldMember {
	t.Helper()
	o := &oldMember{}
	b, err := newGroupBalancer("t", 0, wireVersion, func() joinMeta { return joinMeta{addr: addr} }, func(sv syncView) {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.got = append(o.got, sv)
	})
	require.NoError(t, err)
	o.cl, err = kgo.NewClient(kgo.SeedBrokers(c.Brokers()...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t"),
		kgo.Balancers(b), kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(100*time.Millisecond),
		kgo.DisableAutoCommit())
	require.NoError(t, err)
	t.Cleanup(o.cl.Close)
	return o
}

func (o *oldMember) views() []syncView {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got)
}

// A group in the middle of a rolling deploy, a member of the release
// before protocol v2 among members of this one, speaks v1: every member
// gets a version-1 map (the older one refuses any other), partitions move
// through nobody as before, and no view names an incoming partition. Once
// the old member is gone the group speaks v2, and a member joining hears of
// the partitions moving to it as incoming before it owns them.
func TestAGroupSpeaksV1UntilItsLastOldMemberIsGone(t *testing.T) {
	c, err := embedded.Start()
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	require.NoError(t, c.Kafka().CreateTopic("t", 6, map[string]string{"cleanup.policy": "compact"}))

	// join joins a member of this release, which records its views.
	join := func(addr string) (*Membership, func() []Assignment) {
		var mu sync.Mutex
		var views []Assignment
		m, err := JoinGroup(ctx, GroupConfig{Brokers: c.Brokers(), Group: "g", Topic: "t", Advertise: addr,
			SessionTimeout: 6 * time.Second, HeartbeatInterval: 100 * time.Millisecond,
			OnAssign: func(a Assignment) {
				mu.Lock()
				defer mu.Unlock()
				views = append(views, a)
			}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Close(context.Background()) })
		return m, func() []Assignment {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(views)
		}
	}
	owns := func(a Assignment, n int) bool {
		for _, o := range a.Owners {
			if o == "" {
				return false
			}
		}
		return len(a.Owned) == n
	}

	old := joinOld(t, c, "old:1")
	require.Eventually(t, func() bool {
		v := old.views()
		return len(v) > 0 && len(v[len(v)-1].owned) == 6
	}, 20*time.Second, 10*time.Millisecond, "the old member owns every partition")

	b, bViews := join("b:2")
	require.Eventually(t, func() bool { return owns(b.Assignment(), 3) }, 20*time.Second, 10*time.Millisecond)
	sawMoving := false
	for _, sv := range old.views() {
		require.NotNil(t, sv.gm)
		require.Nil(t, sv.gm.incoming, "generation %d: a version-1 map", sv.gm.generation)
		sawMoving = sawMoving || sv.gm.moving()
	}
	require.True(t, sawMoving, "partitions moved from the old member through nobody")
	for _, v := range bViews() {
		require.Empty(t, v.Incoming, "generation %d: nothing is incoming under protocol v1", v.Generation)
	}

	old.cl.Close() // leaves the group: b takes its partitions
	require.Eventually(t, func() bool { return owns(b.Assignment(), 6) }, 20*time.Second, 10*time.Millisecond)

	d, dViews := join("d:3")
	require.Eventually(t, func() bool { return owns(d.Assignment(), 3) && owns(b.Assignment(), 3) },
		20*time.Second, 10*time.Millisecond)
	incoming := map[int32]bool{}
	for _, v := range dViews() {
		for _, p := range v.Incoming {
			require.Contains(t, v.Standby, p, "an incoming partition is kept warm")
			require.Empty(t, v.Owners[p], "an incoming partition has no owner yet")
			incoming[p] = true
		}
		for _, p := range v.Owned {
			require.True(t, incoming[p], "partition %d was incoming to d before d owned it", p)
		}
	}
}
