package changelog

import (
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

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
