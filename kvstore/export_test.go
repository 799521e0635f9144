package kvstore

import (
	"sync"
	"time"
)

// SetStaleRebuildFloor lowers, for one test, the least staleness that makes
// a running follower rebuild; the returned func puts it back.
func SetStaleRebuildFloor(d time.Duration) (restore func()) {
	testHookStaleRebuildFloor.Store(&d)
	return func() { testHookStaleRebuildFloor.Store(nil) }
}

// MarkDamaged makes s's follower act as if a read had met a damaged cache
// file (it then rebuilds the file).
func MarkDamaged[V any](s *Store[V]) { s.damaged.Store(true) }

// HoldOverlaid makes the followers of stores opened from now on wait,
// before they write what Open's delta restore holds in memory into the
// cache file, until release is called.
func HoldOverlaid() (release func()) {
	ch := make(chan struct{})
	testHookOverlaid.Store(&ch)
	var once sync.Once
	return func() {
		once.Do(func() {
			testHookOverlaid.Store(nil)
			close(ch)
		})
	}
}

// FileCheckpoint returns the checkpoint s's cache file records (the next
// offset of each partition it holds) and when it records each partition
// was current.
func FileCheckpoint[V any](s *Store[V]) (map[int32]int64, map[int32]time.Time, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, err := readMeta(s.db)
	return m.next, m.current, err
}
