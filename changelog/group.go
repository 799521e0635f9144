package changelog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Membership is this member's place in the consumer group of partitioned
// mode: it joins the group, heartbeats, takes part in rebalances and hands
// every new view of the group to GroupConfig.OnAssign. It never consumes
// records: the group's client pauses the topic before the first offsets
// are known, so it fetches nothing and buffers nothing, while heartbeats go
// on (a group member does not need to poll to stay in the group). The
// store reads the partitions it owns through Readers of its own. It is safe
// for concurrent use.
type Membership struct {
	cfg       GroupConfig
	lostAfter time.Duration
	cl        atomic.Pointer[kgo.Client]

	deliverMu sync.Mutex // held while a view is made and handed to OnAssign: one at a time, in order
	mu        sync.Mutex // guards the fields below; never held while OnAssign runs
	cur       Assignment
	joined    bool      // a view from a SyncGroup has been delivered
	pending   *syncView // the last SyncGroup answer, until its view is delivered
	wdLost    bool      // the watchdog declared the session lost and no SyncGroup came since
	forced    bool      // a rejoin was asked for since wdLost
	moving    bool      // the last view from a SyncGroup had partitions without owner
	hurry     bool      // that view is the first of a move: onAssigned hurries the second round
	closing   bool
	lastErr   error // the last error that ended a group session

	latest    atomic.Pointer[Assignment]
	alive     atomic.Int64 // unix nanos: when the last group request the coordinator answered was sent
	first     chan struct{}
	firstOnce sync.Once
	fatal     chan error
	stop      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// JoinGroup joins cfg.Group as a member serving partitions of cfg.Topic
// and returns once the member has its first view of the group (handed to
// OnAssign before JoinGroup returns), or fails when ctx ends first, when
// the topic does not exist (ErrTopicMissing), or when the broker refuses
// the member for good (a session timeout it does not accept, an
// unauthorized group, a protocol the group's members do not share).
//
// The group uses the cooperative protocol: a rebalance takes from a member
// only what moves, in two rounds. In the first, the partitions that move
// are taken from their owners (Owners says "" for them) and named Incoming
// (and Standby) to the members they go to; in the second, their new owners
// get them. A member that gives nothing up in the first round of a move
// rejoins 100 ms after it (the members giving partitions up do so once
// they have), so that the second round follows then rather than at its
// next heartbeat; should the move still be under way in the next
// generation (a member slow to answer), the members wait for their
// heartbeats. So the first view of a member joining a running group may
// own nothing; members starting together settle over a few generations.
//
// Members offer two protocols: "compactkv-sticky-v2", whose assignments
// name each moving partition's next owner (Assignment.Incoming), first, and
// "compactkv-sticky-v1", the only one releases before it know. The broker
// picks one every member offers, so a group speaks v1 while a member of an
// earlier release is in it (Incoming is then empty) and v2 once the last
// one has gone.
// Partitions that no member owned (the first member, the partitions of a
// member that left or died) are handed out in a single round, to their
// standbys where the balance allows.
func JoinGroup(ctx context.Context, cfg GroupConfig) (*Membership, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Membership{
		cfg:       cfg,
		lostAfter: cfg.SessionTimeout - cfg.HeartbeatInterval,
		first:     make(chan struct{}),
		fatal:     make(chan error, 1),
		stop:      make(chan struct{}),
	}
	m.cur.Generation = -1
	m.latest.Store(&Assignment{Generation: -1})
	// Both protocols, v2 preferred: see the top of balancer.go.
	bal2, err := newGroupBalancer(cfg.Topic, cfg.Standbys, mapVersionIncoming, m.joinMeta, m.synced)
	if err != nil {
		return nil, err
	}
	bal1, err := newGroupBalancer(cfg.Topic, cfg.Standbys, wireVersion, m.joinMeta, m.synced)
	if err != nil {
		return nil, err
	}
	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.ClientOpts...)
	opts = append(opts,
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.Balancers(bal2, bal1),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.HeartbeatInterval(cfg.HeartbeatInterval),
		kgo.DisableAutoCommit(), // the store keeps its own offsets; the group's mean nothing
		kgo.OnPartitionsAssigned(m.onAssigned),
		kgo.OnPartitionsRevoked(m.onRevoked),
		kgo.OnPartitionsLost(m.onLost),
		kgo.WithHooks(groupHooks{m}),
	)
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("changelog: join group %q: %w", cfg.Group, err)
	}
	// Paused before any assignment; onAssigned pauses again before the
	// first offsets are fetched, so no fetch can ever start.
	cl.PauseFetchTopics(cfg.Topic)
	m.cl.Store(cl)
	go m.watch()

	if err := m.checkTopic(ctx, cl); err != nil {
		m.abort(ctx)
		return nil, err
	}
	select {
	case <-m.first:
		return m, nil
	case err := <-m.fatal:
		m.abort(ctx)
		return nil, fmt.Errorf("changelog: join group %q on topic %q: %w", cfg.Group, cfg.Topic, err)
	case <-ctx.Done():
		m.abort(ctx)
		m.mu.Lock()
		last := m.lastErr
		m.mu.Unlock()
		if last != nil {
			return nil, fmt.Errorf("changelog: join group %q on topic %q: no assignment before the context ended (last error: %v): %w",
				cfg.Group, cfg.Topic, last, ctx.Err())
		}
		return nil, fmt.Errorf("changelog: join group %q on topic %q: no assignment before the context ended: %w",
			cfg.Group, cfg.Topic, ctx.Err())
	}
}

// checkTopic fails with ErrTopicMissing if the topic does not exist.
func (m *Membership) checkTopic(ctx context.Context, cl *kgo.Client) error {
	tds, err := kadm.NewClient(cl).ListTopics(ctx, m.cfg.Topic)
	if err != nil {
		return fmt.Errorf("changelog: join group %q: describe topic %q: %w", m.cfg.Group, m.cfg.Topic, err)
	}
	td, ok := tds[m.cfg.Topic]
	if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) || len(td.Partitions) == 0 {
		return fmt.Errorf("changelog: join group %q: %w: %q", m.cfg.Group, ErrTopicMissing, m.cfg.Topic)
	}
	if td.Err != nil {
		return fmt.Errorf("changelog: join group %q: describe topic %q: %w", m.cfg.Group, m.cfg.Topic, td.Err)
	}
	return nil
}

// abort closes a member JoinGroup gives up on, within a few seconds.
func (m *Membership) abort(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = m.Close(ctx)
}

// Assignment returns the latest view of the group (a copy, the caller's to
// keep). It never waits for OnAssign.
func (m *Membership) Assignment() Assignment {
	return m.latest.Load().clone()
}

// Close leaves the group: OnAssign gets a view with nothing owned (so no
// other member owns this member's partitions before that call returned),
// then the member tells the coordinator it leaves, and the others take its
// partitions in the next rebalance instead of after SessionTimeout. It
// returns when that is done or when ctx ends, whichever is first (the
// client then finishes closing in the background). It is idempotent.
//
// A static member (InstanceID set) does not leave: the group keeps its
// partitions for it, unserved, until it comes back or SessionTimeout
// passes.
//
// To simulate a crash in a test, pass a kgo.Dialer in ClientOpts whose
// connections the test can close (refusing new ones): the member then
// stops heartbeating without leaving and reports Lost (within about a
// second, since kgo ends a session whose coordinator refuses connections;
// at the latest after SessionTimeout minus HeartbeatInterval, when packets
// are merely dropped), and the others take its partitions once the
// broker's session timeout has passed. kgo has no way to close without
// leaving, and a member that merely stops polling stays in the group.
//
// Close must not be called from OnAssign.
func (m *Membership) Close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closing = true
		m.mu.Unlock()
		cl := m.cl.Load()
		done := make(chan error, 1)
		go func() {
			err := cl.LeaveGroupContext(ctx)
			cl.Close()
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				m.closeErr = fmt.Errorf("changelog: leave group %q: %w", m.cfg.Group, err)
			}
		case <-ctx.Done():
			m.closeErr = fmt.Errorf("changelog: leave group %q: %w", m.cfg.Group, ctx.Err())
		}
		close(m.stop)
	})
	return m.closeErr
}
