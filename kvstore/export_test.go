package kvstore

import "time"

// SetStaleRebuildFloor lowers, for one test, the least staleness that makes
// a running follower rebuild; the returned func puts it back.
func SetStaleRebuildFloor(d time.Duration) (restore func()) {
	testHookStaleRebuildFloor.Store(&d)
	return func() { testHookStaleRebuildFloor.Store(nil) }
}

// MarkDamaged makes s's follower act as if a read had met a damaged cache
// file (it then rebuilds the file).
func MarkDamaged[V any](s *Store[V]) { s.damaged.Store(true) }
