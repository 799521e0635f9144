package changelog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of GroupConfig.
const (
	// DefaultSessionTimeout is Kafka's own default session.timeout.ms.
	// Brokers accept 6s to 30min unless configured otherwise
	// (group.min.session.timeout.ms, group.max.session.timeout.ms).
	DefaultSessionTimeout = 45 * time.Second

	// maxDefaultHeartbeat caps the default HeartbeatInterval (Kafka's
	// default heartbeat.interval.ms).
	maxDefaultHeartbeat = 3 * time.Second
)

// GroupConfig says how JoinGroup joins the consumer group of partitioned
// mode. Brokers, Group, Topic and Advertise are required.
type GroupConfig struct {
	// Brokers are the bootstrap servers, "host:port". Required.
	Brokers []string
	// ClientOpts are franz-go options for the connection (TLS, SASL,
	// dialer, logger, client ID, timeouts). They are applied before the
	// group's own, so consumer and group settings given here are
	// overridden where GroupConfig sets them (group, topics, balancer,
	// session timeout, heartbeat interval, instance ID, callbacks,
	// auto-commit, which is off). Hooks given here are kept.
	ClientOpts []kgo.Opt
	// Group is the consumer group ID. Required.
	Group string
	// Topic is the topic whose partitions the group splits. It must
	// exist. Required.
	Topic string
	// Advertise is this member's address as the others should reach it,
	// for example "host:port"; every member's Assignment.Owners carries
	// it. Required, at most 1024 bytes.
	Advertise string
	// Standbys is how many members other than a partition's owner keep
	// it warm. With fewer members than Standbys+1, every other member is
	// a standby. Default 0.
	Standbys int
	// SessionTimeout is how long the broker keeps this member in the
	// group without a heartbeat: how long a crashed member's partitions
	// stay unserved. The broker must accept it (6s to 30min by default;
	// kfake's minimum is 6s as well). Default DefaultSessionTimeout (45s).
	SessionTimeout time.Duration
	// HeartbeatInterval is how often the member heartbeats. It bounds how
	// soon the member notices a rebalance, and so how long a partition
	// that moves between members is served by nobody, and it is the
	// margin by which a member cut off from the coordinator reports Lost
	// before the broker can expire it. Default a tenth of SessionTimeout,
	// at most 3s; it must be at most a third of SessionTimeout.
	HeartbeatInterval time.Duration
	// InstanceID turns on static membership (KIP-345): a member that
	// restarts with the same InstanceID within SessionTimeout takes its
	// place back without the others moving. Such a member does not leave
	// the group when closed (see Membership.Close). Default "": dynamic
	// membership.
	InstanceID string
	// OnAssign is called with every new view of the group this member
	// gets (see Assignment), one call at a time, in the order of the
	// views, which is generation order. Default nil: poll
	// Membership.Assignment instead.
	//
	// It runs on the group's own goroutine: return quickly (start
	// restores in the background). While it runs for a view that takes
	// partitions away, the member has not yet handed them back, so no
	// other member owns them before it returns: stop serving them first.
	// It must not call Membership.Close.
	OnAssign func(Assignment)
}

// withDefaults fills the defaults and checks the combination.
func (c GroupConfig) withDefaults() (GroupConfig, error) {
	fail := func(why string) (GroupConfig, error) {
		return GroupConfig{}, fmt.Errorf("changelog: join group %q on topic %q: %s", c.Group, c.Topic, why)
	}
	switch {
	case len(c.Brokers) == 0:
		return fail("no brokers")
	case c.Group == "":
		return fail("no group ID")
	case c.Topic == "":
		return fail("no topic")
	case c.Advertise == "":
		return fail("no advertised address")
	case len(c.Advertise) > maxAdvertiseLen:
		return fail(fmt.Sprintf("advertised address of %d bytes, at most %d", len(c.Advertise), maxAdvertiseLen))
	case c.Standbys < 0:
		return fail(fmt.Sprintf("Standbys %d is negative", c.Standbys))
	case c.SessionTimeout < 0 || c.HeartbeatInterval < 0:
		return fail("negative session timeout or heartbeat interval")
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = min(c.SessionTimeout/10, maxDefaultHeartbeat)
	}
	if c.HeartbeatInterval*3 > c.SessionTimeout {
		return fail(fmt.Sprintf("heartbeat interval %v is more than a third of the session timeout %v",
			c.HeartbeatInterval, c.SessionTimeout))
	}
	return c, nil
}

// Assignment is one member's view of the group at one generation.
type Assignment struct {
	// Generation is the group generation the view belongs to. Views come
	// in non-decreasing generation order; a lost view keeps the
	// generation of the view it replaces.
	Generation int32
	// Owned are the partitions this member serves, ascending.
	Owned []int32
	// Standby are the partitions this member keeps warm (follows, does
	// not serve), ascending. Never overlaps Owned.
	Standby []int32
	// Owners maps every partition of the topic to its owner's advertised
	// address. It is "" while a partition has no owner: in the first
	// round of a cooperative rebalance a partition moving from one member
	// to another belongs to neither (about a heartbeat interval, until
	// the second round), and in a lost view this member's own partitions
	// are "" too. A view that came without the group's map (a member can
	// miss a generation's map) keeps the others' entries of the previous
	// view.
	Owners map[int32]string
	// Lost is set when this member may no longer be in the group: its
	// session expired, it was fenced, or the coordinator has not answered
	// its heartbeats for SessionTimeout minus HeartbeatInterval (so the
	// member gives its partitions up before the broker can hand them to
	// another). Owned and Standby are then empty. The member keeps trying
	// to rejoin; the next assignment clears Lost.
	Lost bool
}

// clone returns a deep copy.
func (a Assignment) clone() Assignment {
	a.Owned = slices.Clone(a.Owned)
	a.Standby = slices.Clone(a.Standby)
	a.Owners = maps.Clone(a.Owners)
	return a
}

func (a Assignment) equal(b Assignment) bool {
	return a.Generation == b.Generation && a.Lost == b.Lost &&
		slices.Equal(a.Owned, b.Owned) && slices.Equal(a.Standby, b.Standby) && maps.Equal(a.Owners, b.Owners)
}

// without returns a with nothing owned or kept warm, this member's
// partitions unowned in Owners.
func (a Assignment) without(lost bool) Assignment {
	b := Assignment{Generation: a.Generation, Owners: maps.Clone(a.Owners), Lost: lost}
	for _, p := range a.Owned {
		b.Owners[p] = ""
	}
	return b
}

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
// are taken from their owners (Owners says "" for them); in the second,
// which follows within about a heartbeat interval, their new owners get
// them. So the first view of a member joining a running group may own
// nothing; members starting together settle over a few generations.
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
	bal, err := newGroupBalancer(cfg.Topic, cfg.Standbys, m.joinMeta, m.synced)
	if err != nil {
		return nil, err
	}
	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.ClientOpts...)
	opts = append(opts,
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.Balancers(bal),
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

// deliver makes the next view from the current one (under m.mu) and, if it
// differs, publishes it and hands it to OnAssign, all under deliverMu so
// that views are handed over one at a time and in the order they were made.
func (m *Membership) deliver(next func(cur Assignment) (Assignment, bool)) {
	m.deliverMu.Lock()
	defer m.deliverMu.Unlock()
	m.mu.Lock()
	a, ok := next(m.cur)
	ok = ok && !a.equal(m.cur)
	if ok {
		m.cur = a
		m.latest.Store(new(a.clone()))
	}
	joined := m.joined
	m.mu.Unlock()
	if !ok {
		return
	}
	if m.cfg.OnAssign != nil {
		m.cfg.OnAssign(a.clone())
	}
	if joined && !a.Lost {
		m.firstOnce.Do(func() { close(m.first) })
	}
}

// fromSync delivers the view of the last SyncGroup answer, if one is
// waiting. Called under m.mu through deliver.
func (m *Membership) fromSync(cur Assignment, generation int32) (Assignment, bool) {
	sv := m.pending
	if sv == nil {
		return cur, false
	}
	m.pending = nil
	a := Assignment{Generation: generation, Owned: sv.owned}
	if sv.gm != nil {
		a.Owners = sv.gm.owners()
		a.Standby = sv.gm.standbyOf(sv.gm.self)
	} else { // no map this generation: keep what we knew of the others
		a.Owners = maps.Clone(cur.Owners)
		if a.Owners == nil {
			a.Owners = make(map[int32]string)
		}
		for _, p := range cur.Owned {
			a.Owners[p] = ""
		}
		for _, p := range sv.owned {
			a.Owners[p] = m.cfg.Advertise
		}
	}
	m.joined = true
	return a, true
}

// onRevoked runs first in a session that takes partitions away (before the
// member rejoins to hand them back), at the end of every session, and when
// the member leaves.
func (m *Membership) onRevoked(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
	_, gen := cl.GroupMetadata()
	m.deliver(func(cur Assignment) (Assignment, bool) {
		switch {
		case m.pending != nil:
			return m.fromSync(cur, gen)
		case m.closing:
			return cur.without(false), m.joined
		case m.joined && len(lost[m.cfg.Topic]) > 0:
			a := cur.clone()
			a.Owned = slices.DeleteFunc(a.Owned, func(p int32) bool { return slices.Contains(lost[m.cfg.Topic], p) })
			for _, p := range lost[m.cfg.Topic] {
				a.Owners[p] = ""
			}
			return a, true
		}
		return cur, false
	})
}

// onAssigned runs once in every session, after onRevoked and before any
// offsets are fetched.
func (m *Membership) onAssigned(_ context.Context, cl *kgo.Client, _ map[string][]int32) {
	cl.PauseFetchTopics(m.cfg.Topic)
	_, gen := cl.GroupMetadata()
	m.deliver(func(cur Assignment) (Assignment, bool) { return m.fromSync(cur, gen) })
}

// onLost runs when a session ended in an error: expired, fenced, or the
// coordinator out of reach for longer than the retries allow.
func (m *Membership) onLost(context.Context, *kgo.Client, map[string][]int32) {
	m.deliver(func(cur Assignment) (Assignment, bool) {
		m.pending = nil
		return cur.without(true), m.joined && !m.closing && !cur.Lost
	})
}

// joinMeta is what this member advertises when it joins.
func (m *Membership) joinMeta() joinMeta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return joinMeta{addr: m.cfg.Advertise, standby: slices.Clone(m.cur.Standby)}
}

// synced keeps a SyncGroup answer until the session's callbacks deliver it.
func (m *Membership) synced(sv syncView) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending = &sv
	m.wdLost, m.forced = false, false
}

// watch declares the session lost when the coordinator has not answered a
// group request sent within the last lostAfter: the broker expires the
// session SessionTimeout after the last heartbeat it received, so the
// member stops serving before any other member can be given its
// partitions. kgo would report the loss itself only when its retries of
// the heartbeat run out, about a session timeout later than the last
// answered one.
func (m *Membership) watch() {
	t := time.NewTicker(max(m.cfg.HeartbeatInterval/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, m.alive.Load())) < m.lostAfter {
			continue
		}
		m.deliver(func(cur Assignment) (Assignment, bool) {
			if !m.joined || m.closing || cur.Lost || time.Since(time.Unix(0, m.alive.Load())) < m.lostAfter {
				return cur, false
			}
			m.wdLost, m.forced = true, false
			return cur.without(true), true
		})
	}
}

// Request keys of the group requests whose answers show the coordinator
// still has the member.
const (
	keyJoinGroup = 11
	keyHeartbeat = 12
	keySyncGroup = 14
)

// groupHooks feeds the watchdog and JoinGroup's wait.
type groupHooks struct{ m *Membership }

// OnBrokerE2E records when the last answered group request was sent. A
// heartbeat answered after the watchdog declared the session lost makes the
// member rejoin, so that a fresh SyncGroup says what it owns (if the
// session was in fact alive, the group's assignment comes back unchanged).
func (h groupHooks) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e kgo.BrokerE2E) {
	if e.Err() != nil || (key != keyJoinGroup && key != keyHeartbeat && key != keySyncGroup) {
		return
	}
	m := h.m
	sent := time.Now().Add(-e.DurationE2E()).UnixNano()
	for {
		old := m.alive.Load()
		if sent <= old || m.alive.CompareAndSwap(old, sent) {
			break
		}
	}
	if key != keyHeartbeat {
		return
	}
	m.mu.Lock()
	kick := m.wdLost && !m.forced && !m.closing
	if kick {
		m.forced = true
	}
	m.mu.Unlock()
	if cl := m.cl.Load(); kick && cl != nil {
		go cl.ForceRebalance()
	}
}

// OnGroupManageError records why a session ended; before the first view,
// an error the broker will not change its mind about fails JoinGroup.
func (h groupHooks) OnGroupManageError(err error) {
	m := h.m
	m.mu.Lock()
	m.lastErr = err
	joined := m.joined
	m.mu.Unlock()
	if !joined && isFatalJoinErr(err) {
		select {
		case m.fatal <- err:
		default:
		}
	}
}

// isFatalJoinErr says whether the broker refused the member for good.
func isFatalJoinErr(err error) bool {
	for _, e := range []error{
		kerr.InvalidSessionTimeout, kerr.GroupAuthorizationFailed, kerr.InconsistentGroupProtocol,
		kerr.InvalidGroupID, kerr.GroupMaxSizeReached, kerr.UnsupportedVersion,
		kerr.TopicAuthorizationFailed, kerr.FencedInstanceID,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
