package changelog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// TopicInfo is what the store needs to know about its topic's identity.
type TopicInfo struct {
	Name string // the topic's name
	// ID is the Kafka topic ID; it changes when a topic is deleted and created
	// again under the same name.
	ID [16]byte
	// Partitions is the partition count.
	Partitions int32
	// CleanupPolicy is the topic's cleanup.policy, for example "compact".
	CleanupPolicy string
	// DeleteRetention is the topic's delete.retention.ms: how long a
	// tombstone is kept after the log cleaner has seen it.
	DeleteRetention time.Duration
}

// TopicSpec says how Open creates a missing topic. Its fields are passed to
// the broker as they are: 0 is not a default (Kafka refuses it), -1 is.
type TopicSpec struct {
	Partitions        int32             // -1: the broker's num.partitions
	ReplicationFactor int16             // -1: the broker's default.replication.factor
	Configs           map[string]string // extra topic configs; cleanup.policy is always compact
}

// ensureTopic creates topic with cleanup.policy=compact if it does not exist,
// then describes it. An existing topic whose cleanup.policy does not include
// compact is refused with ErrNotCompacted, naming the topic and its policy.
func ensureTopic(ctx context.Context, adm *kadm.Client, topic string, spec TopicSpec) (TopicInfo, error) {
	configs := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	for k, v := range spec.Configs {
		if k == "cleanup.policy" {
			continue
		}
		configs[k] = kadm.StringPtr(v)
	}
	resp, err := adm.CreateTopic(ctx, spec.Partitions, spec.ReplicationFactor, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return TopicInfo{}, fmt.Errorf("changelog: create topic %q: %w", topic, err)
	}
	// A freshly created topic can take a moment to show in metadata.
	for {
		info, err := describeTopic(ctx, adm, topic)
		if !errors.Is(err, ErrTopicMissing) {
			return info, err
		}
		select {
		case <-ctx.Done():
			return TopicInfo{}, fmt.Errorf("changelog: wait for topic %q: %w", topic, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// describeTopic returns the identity and cleanup settings of an existing
// topic. A topic that does not exist returns ErrTopicMissing; one that is not
// compacted returns ErrNotCompacted.
func describeTopic(ctx context.Context, adm *kadm.Client, topic string) (TopicInfo, error) {
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("changelog: describe topic %q: %w", topic, err)
	}
	td, ok := tds[topic]
	if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) || len(td.Partitions) == 0 {
		return TopicInfo{}, fmt.Errorf("%w: %q", ErrTopicMissing, topic)
	}
	if td.Err != nil {
		return TopicInfo{}, fmt.Errorf("changelog: describe topic %q: %w", topic, td.Err)
	}
	info := TopicInfo{Name: topic, ID: td.ID, Partitions: int32(len(td.Partitions)), DeleteRetention: 24 * time.Hour}

	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("changelog: describe configs of topic %q: %w", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return TopicInfo{}, fmt.Errorf("changelog: describe configs of topic %q: %w", topic, err)
	}
	for _, c := range rc.Configs {
		switch c.Key {
		case "cleanup.policy":
			info.CleanupPolicy = c.MaybeValue()
		case "delete.retention.ms":
			if ms, err := strconv.ParseInt(c.MaybeValue(), 10, 64); err == nil {
				info.DeleteRetention = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if !hasCompact(info.CleanupPolicy) {
		return info, fmt.Errorf("%w: topic %q has cleanup.policy=%q, want one that includes compact",
			ErrNotCompacted, topic, info.CleanupPolicy)
	}
	return info, nil
}

func hasCompact(policy string) bool {
	for _, p := range strings.Split(policy, ",") {
		if strings.TrimSpace(p) == "compact" {
			return true
		}
	}
	return false
}
