package kvstore

import (
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/internal/pagewriter"
)

// Gets read the cache file through a shared read snapshot: one bbolt read
// transaction that concurrent Gets use together, begun when a Get finds
// none and retired when a write begins (and when the file is swapped or
// closed). A read transaction of its own per Get costs more than the
// lookup itself: bbolt's Begin and Rollback each take the DB's meta lock
// (a mutex every reader shares), its mmap lock and its stats lock, and
// allocate the transaction, its meta and its root bucket.
//
// Why a write retires the snapshot first: bbolt remaps the file when a
// commit grows it past its mapping, and the remap waits for every read
// transaction to end; a snapshot kept over a write would block that commit
// for good. So no snapshot is begun while a write is under way: Gets then
// read in transactions of their own, as they always did. And since the
// snapshot a Get uses is never older than the last write that had ended
// when the Get began, a Get still sees every write committed before it
// (with the overlay of own writes, which a replica drops only after the
// commit that holds them).
type readSnaps struct {
	cur atomic.Pointer[readSnap] // nil: none; a Get begins one

	mu      sync.Mutex // orders beginning a snapshot against writes starting and ending
	writers int        // writes under way (updateCache)
}

// snapsVerified says whether the binary's bbolt is the one the page walk
// and the shared snapshot were verified against (see pagewriter.Verified):
// with another, every Get reads in a transaction of its own through bbolt's
// API, as the page writer falls back to it.
var snapsVerified = pagewriter.Verified()

// readSnap is one read transaction shared by Gets.
type readSnap struct {
	db *bolt.DB
	tx *bolt.Tx
	// buckets holds each partition's bucket in tx (nil: none), opened once,
	// and roots its root page (0: none, or an inline bucket).
	buckets []*bolt.Bucket
	roots   []uint64
	pages   pageMap // tx's pages (pagewalk.go)
	// refs counts the slot's reference while the snapshot is current, and
	// each Get using it; the one that drops it to 0 rolls tx back.
	refs atomic.Int64
}

// acquire returns the current snapshot of db with a reference taken, for
// release, beginning one if there is none. It returns nil while a write is
// under way (or if bbolt cannot begin a transaction): the caller reads in a
// transaction of its own. The caller holds s.mu for reading, so db is the
// store's file and stays open.
func (r *readSnaps) acquire(db *bolt.DB, reps []*replica) *readSnap {
	if !snapsVerified {
		return nil
	}
	for {
		p := r.cur.Load()
		if p == nil {
			return r.begin(db, reps)
		}
		if p.db != db { // of a file swapped out without retire: never used
			r.retire(p)
			continue
		}
		if n := p.refs.Load(); n > 0 && p.refs.CompareAndSwap(n, n+1) {
			return p
		}
		// Retired meanwhile (refs 0: no longer in the slot), or the count
		// moved: look again.
	}
}

// begin begins a snapshot of db and makes it current, unless a write is
// under way or another Get made one first (then it takes that one).
func (r *readSnaps) begin(db *bolt.DB, reps []*replica) *readSnap {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.writers > 0 {
		return nil
	}
	if p := r.cur.Load(); p != nil {
		if n := p.refs.Load(); p.db == db && n > 0 && p.refs.CompareAndSwap(n, n+1) {
			return p
		}
		return nil
	}
	tx, err := db.Begin(false)
	if err != nil {
		return nil // the caller's own transaction reports it
	}
	made := false
	defer func() {
		if !made { // bbolt panicked on a damaged file: the caller recovers
			_ = tx.Rollback()
		}
	}()
	p := &readSnap{db: db, tx: tx, buckets: make([]*bolt.Bucket, len(reps)), roots: make([]uint64, len(reps)), pages: mapOf(db, tx)}
	for i, rep := range reps {
		if b := tx.Bucket(rep.bucket); b != nil {
			p.buckets[i], p.roots[i] = b, uint64(b.Root())
		}
	}
	p.refs.Store(2) // the slot's and the caller's
	r.cur.Store(p)
	made = true
	return p
}

// release drops a reference acquire took.
func (p *readSnap) release() {
	if p.refs.Add(-1) == 0 {
		_ = p.tx.Rollback()
	}
}

// retire takes p out of the slot, if it is there, and drops the slot's
// reference: it is rolled back once the last Get using it is done.
func (r *readSnaps) retire(p *readSnap) {
	if r.cur.CompareAndSwap(p, nil) {
		p.release()
	}
}

// drop retires the current snapshot. Called with s.mu held exclusively
// before the file is swapped or closed, it rolls the snapshot back at once
// (no Get holds it then), so that bbolt's Close does not wait for it.
func (r *readSnaps) drop() {
	if p := r.cur.Load(); p != nil {
		r.retire(p)
	}
}

// beginWrite retires the current snapshot and keeps new ones from being
// begun until endWrite.
func (r *readSnaps) beginWrite() {
	r.mu.Lock()
	r.writers++
	p := r.cur.Swap(nil)
	r.mu.Unlock()
	if p != nil {
		p.release()
	}
}

func (r *readSnaps) endWrite() {
	r.mu.Lock()
	r.writers--
	r.mu.Unlock()
}

// updateCache is safeUpdate on the store's file, with the read snapshot retired
// first and none begun until it is done. Every write to s.db once Open has
// returned goes through it.
func (s *Store[V]) updateCache(fn func(*bolt.Tx) error) error {
	s.snaps.beginWrite()
	defer s.snaps.endWrite()
	return safeUpdate(s.db, fn)
}

// get returns key's value in partition p's bucket, else (unless only) in
// another partition's; nil if none. The bytes are the memory map's: valid
// until the snapshot is released.
func (sn *readSnap) get(p int32, key []byte, only bool) ([]byte, error) {
	if v, err := sn.getIn(int(p), key); v != nil || err != nil || only {
		return v, err
	}
	for q := range sn.buckets {
		if q == int(p) {
			continue
		}
		if v, err := sn.getIn(q, key); v != nil || err != nil {
			return v, err
		}
	}
	return nil, nil
}

// getIn returns key's value in partition q's bucket.
func (sn *readSnap) getIn(q int, key []byte) ([]byte, error) {
	switch {
	case sn.roots[q] != 0:
		return sn.pages.get(sn.roots[q], key)
	case sn.buckets[q] != nil: // inline
		return sn.buckets[q].Get(key), nil
	}
	return nil, nil
}
