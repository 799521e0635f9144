package kvstore

import "time"

// SetStaleRebuildFloor lowers, for one test, the least staleness that makes
// a running follower rebuild; the returned func puts it back.
func SetStaleRebuildFloor(d time.Duration) (restore func()) {
	testHookStaleRebuildFloor.Store(&d)
	return func() { testHookStaleRebuildFloor.Store(nil) }
}
