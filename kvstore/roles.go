package kvstore

import (
	"errors"
	"fmt"
)

// PartitionRole says what a store does with a partition.
type PartitionRole int

const (
	// RoleOwner: the store serves the partition (every partition in
	// global mode).
	RoleOwner PartitionRole = iota
	// RoleStandby: the store follows the partition, so that it can take
	// it over without a full restore, but does not serve it: a standby
	// (Standbys), or a partition a rebalance is moving to this member.
	RoleStandby
	// RoleNone: another member owns the partition; this store neither
	// follows nor serves it, and keeps its bucket for a later delta. Right
	// after a view takes a partition away, Stats may show it with its last
	// state for a moment, until the follower lets go of it.
	RoleNone
)

// String returns the role's name: "owner", "standby" or "none".
func (r PartitionRole) String() string {
	switch r {
	case RoleOwner:
		return "owner"
	case RoleStandby:
		return "standby"
	case RoleNone:
		return "none"
	}
	return fmt.Sprintf("PartitionRole(%d)", int(r))
}

// MarshalText returns the role's name.
func (r PartitionRole) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// ErrNotServed is wrapped by every NotOwnerError, and by the error of a read
// of a partition this store owns but has not finished restoring: errors.Is
// tells both apart from other failures; errors.As with *NotOwnerError says
// where to go.
var ErrNotServed = errors.New("kvstore: partition not served here")

// NotOwnerError is the error of a Get or Scan, in partitioned mode, of a key
// whose partition another member owns, or that has no owner right now (a
// rebalance moves it). It wraps ErrNotServed.
type NotOwnerError struct {
	Key       string // "" for WaitFor and Sync of a partition not followed here
	Partition int32
	// Owner is the owner's advertised address; "" while the partition has
	// no owner (try again shortly).
	Owner string
}

// Error names the key, its partition and its owner.
func (e *NotOwnerError) Error() string {
	if e.Key == "" { // a Position or a barrier, not a key
		return fmt.Sprintf("kvstore: partition %d is not followed here (owner: %q)", e.Partition, e.Owner)
	}
	if e.Owner == "" {
		return fmt.Sprintf("kvstore: key %q: partition %d has no owner right now (a rebalance is moving it)", e.Key, e.Partition)
	}
	return fmt.Sprintf("kvstore: key %q: partition %d is served by %s", e.Key, e.Partition, e.Owner)
}

// Unwrap returns ErrNotServed.
func (e *NotOwnerError) Unwrap() error { return ErrNotServed }

// GroupStats is partitioned mode's part of Stats.
type GroupStats struct {
	// Group is the consumer group's ID, Advertise this member's address.
	Group, Advertise string
	// Generation is the group generation of the last view this member got.
	Generation int32
	// Views counts the views of the group this member got since Open: one
	// per rebalance it took part in, plus those that lost its partitions.
	Views int64
	// Lost is set while this member may no longer be in the group (its
	// session expired, or the coordinator has not answered): it serves
	// nothing until it rejoins.
	Lost bool
}
