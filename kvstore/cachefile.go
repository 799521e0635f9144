package kvstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// openExisting opens the cache file if there is one and says which guard,
// if any, keeps it from being brought up to date from its checkpoint, with
// the checkpoint itself; bad lists the partitions to rebuild alone, when
// only some are refused. A file that cannot be read is moved aside.
func (s *Store[V]) openExisting(start, end map[int32]int64) (guard Guard, reason string, next map[int32]int64, bad []partGuard, err error) {
	r, begun := s.takeEarly()
	if !begun {
		if _, err := os.Stat(s.path); errors.Is(err, os.ErrNotExist) {
			return GuardNoCache, "no cache", nil, nil, nil
		}
		r.db, r.m, r.err = openAndReadMeta(s.path, s.cfg.lockTimeout)
	}
	db, m, err := r.db, r.m, r.err
	if errors.Is(err, berrors.ErrTimeout) {
		return 0, "", nil, nil, fmt.Errorf("kvstore: cache file %s is locked by another store or process (waited %v; each store needs its own Dir): %w",
			s.path, s.cfg.lockTimeout, ErrCacheLocked)
	}
	if err != nil {
		aside := fmt.Sprintf("%s.corrupt-%d", s.path, time.Now().UnixNano())
		if rerr := os.Rename(s.path, aside); rerr != nil {
			return 0, "", nil, nil, fmt.Errorf("kvstore: move unreadable cache %s aside: %w", s.path, rerr)
		}
		s.log.Warn("kvstore: cache file unreadable, moved aside", "path", s.path, "moved_to", aside, "err", err)
		s.removeOlderAside(aside)
		return GuardCorrupt, "cache file unreadable: " + err.Error(), nil, nil, nil
	}
	guard, reason, bad = decideGuard(m, s.info, start, end, time.Now())
	if len(bad) > 0 {
		// Only some partitions are refused: the rest of the cache is good,
		// and those partitions are rebuilt alone.
		s.db = db
		return guard, reason, m.next, bad, nil
	}
	if guard != GuardNone {
		db.Close()
		return guard, reason, nil, nil, s.discardCache()
	}
	s.db = db
	return GuardNone, "", m.next, nil, nil
}

// openedFile is what openAndReadMeta returned.
type openedFile struct {
	db  *bolt.DB
	m   cacheMeta
	err error
}

// openEarly begins openAndReadMeta of the cache file, if there is one, on a
// goroutine of its own: Open calls it before it asks the broker and the
// registry, which the file's check (it reads every page) does not need, so
// that the two overlap. openExisting takes the result (takeEarly); an Open
// that fails before then drops it (dropEarly).
func (s *Store[V]) openEarly() {
	if _, err := os.Stat(s.path); err != nil {
		return // no file (openExisting says so), or one it cannot stat either
	}
	ch := make(chan openedFile, 1)
	s.early = ch
	go func() {
		var r openedFile
		r.db, r.m, r.err = openAndReadMeta(s.path, s.cfg.lockTimeout)
		ch <- r
	}()
}

// takeEarly waits for what openEarly began and returns it; begun is false
// if it began nothing, or its result was taken already.
func (s *Store[V]) takeEarly() (r openedFile, begun bool) {
	if s.early == nil {
		return r, false
	}
	r = <-s.early
	s.early = nil
	return r, true
}

// dropEarly closes the file openEarly opened, if nothing took it, once it
// is open: on a goroutine, so that an Open failing on the broker does not
// wait for the lock another process holds on the file.
func (s *Store[V]) dropEarly() {
	if ch := s.early; ch != nil {
		s.early = nil
		go func() {
			if r := <-ch; r.db != nil {
				r.db.Close()
			}
		}()
	}
}

// openAndReadMeta opens the cache file and reads its metadata. A damaged
// file is an error wrapping errDamaged, never a crash: under a shared lock
// (so that a process holding the file is waited for, up to timeout, and
// reported with bbolt's ErrTimeout), checkFile reads the whole file and
// refuses anything bbolt would trip over; only then does bbolt open it for
// writing. A panic of bbolt in this goroutine, or a fault in its memory map,
// is turned into an error as well, should the file change in between.
func openAndReadMeta(path string, timeout time.Duration) (db *bolt.DB, m cacheMeta, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // a fault in a damaged mmap becomes a panic
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("%w: bbolt: %v", errDamaged, r)
		}
	}()
	ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return nil, m, err
	}
	err = checkFile(path)
	ro.Close()
	if err != nil {
		return nil, m, err
	}
	// Synced commits from the first: a commit without fsync lets the
	// kernel write its meta page before its data pages, and a power loss
	// then leaves a checkpoint ahead of the pages it describes, holding
	// well-formed older contents that no check can tell from current ones.
	db, err = openBolt(path, timeout, false)
	if err != nil {
		return nil, m, err
	}
	if m, err = readMeta(db); err != nil {
		db.Close()
		return nil, m, err
	}
	return db, m, nil
}

// removeLeftovers removes what a restore killed midway left: spilled runs
// and a half-written replacement cache file.
func (s *Store[V]) removeLeftovers() {
	left, _ := filepath.Glob(filepath.Join(s.cfg.dir, s.topic+runSuffix))
	left = append(left, s.path+".restore")
	for _, f := range left {
		if err := os.Remove(f); err == nil {
			s.log.Info("kvstore: removed what an interrupted restore left", "path", f)
		}
	}
}

// discardCache removes the cache file so that it is rebuilt.
func (s *Store[V]) discardCache() error {
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kvstore: remove stale cache %s: %w", s.path, err)
	}
	return nil
}

// removeOlderAside removes the damaged files moved aside before keep, so
// that a disk that keeps damaging the cache does not fill up with copies:
// the newest one stays for a post-mortem.
func (s *Store[V]) removeOlderAside(keep string) {
	old, _ := filepath.Glob(s.path + ".corrupt-*")
	for _, f := range old {
		if f != keep && os.Remove(f) == nil {
			s.log.Info("kvstore: removed an older damaged cache file", "path", f)
		}
	}
}
