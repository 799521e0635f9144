package changelog

import (
	"fmt"
	"time"

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
