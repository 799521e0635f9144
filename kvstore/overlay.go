package kvstore

import (
	"context"
	"time"
	"unsafe"

	"github.com/compactkv/compactkv/changelog"
)

// A delta restore (Open on a cache the guards trust) serves what it read
// from memory and leaves writing it into the cache file to the follower.
//
// Why: a delta of a few changed keys spread over the table rewrites most of
// the file's leaves (bbolt copies every page it touches on write), which
// cost 85% of a 1% delta's Open, for records that are already in memory.
// So each record read goes into its replica's overlay of writes the file
// does not hold yet (the one own writes use: Get and Scan read it before
// the file, replica.go), the replicas count as reaching the end the restore
// listed (as a restore's quiet tail does, replicas.overlaid), and the polls
// are handed to the follower, which writes them first thing, one
// transaction a poll in poll order with their checkpoints (as Open wrote
// them before), before anything it polls; each overlay entry is dropped
// only after the commit that holds it. The last of those commits records
// that every partition was current when Open listed the end offsets, as
// Open's own commit did.
//
// Nothing is promised that is not true meanwhile: reads show every record
// below the listed end; the file's checkpoint and its record of when each
// partition was current stay where they were until the follower's commits
// (so a crash meanwhile costs the next Open the same delta again, and the
// retention guard is never told the file held what it did not). Close
// waits for those commits as it waits for own writes (up to closeDrain).
//
// Held are deltas within a quarter of RestoreMemory (16 MiB by default:
// some 70,000 records of 60 bytes), so that a Scan, which merges the whole
// overlay into every page, stays cheap in the moment it lasts, and only
// when every record sits on the partition this store's partitioner picks
// for its key (Get looks a key up in that partition's overlay only). A
// delta that is not is written into the file as it is read, as before:
// what is held goes in first, a transaction a poll.

// overlayEntryCost is what holding one record costs beyond its key and
// value bytes: the record in its batch, the overlay's map entry, ovEntry
// and the key's string copy header.
const overlayEntryCost = int64(unsafe.Sizeof(changelog.Record{})) + 96

// deltaOverlay is a delta restore's records held for the follower.
type deltaOverlay struct {
	budget, used int64
	held         [][]changelog.Batch // screened polls, in poll order
}

// newDeltaOverlay returns the overlay of a delta restore in Open.
func newDeltaOverlay(restoreMemory int) *deltaOverlay {
	return &deltaOverlay{budget: int64(restoreMemory) / 4}
}

// fits says whether the poll bs (screened) can be held too: within the
// budget, and every key on the partition part picks for it among n.
func (o *deltaOverlay) fits(bs []changelog.Batch, part func([]byte, int32) int32, n int32) bool {
	used := o.used
	for i := range bs {
		for j := range bs[i].Records {
			r := &bs[i].Records[j]
			used += 2*int64(len(r.Key)) + int64(len(r.Value)) + overlayEntryCost
			if n > 1 && part(r.Key, n) != bs[i].Partition {
				return false
			}
		}
	}
	if used > o.budget {
		return false
	}
	o.used = used
	return true
}

// hold puts the poll bs's records into their replicas' overlays and keeps
// bs for the follower.
func (o *deltaOverlay) hold(reps *replicas, bs []changelog.Batch) {
	for i := range bs {
		rep := reps.all[bs[i].Partition]
		for _, r := range lastPerKey(bs[i].Records) {
			rep.putOwn(string(r.Key), r.Offset, r.Value)
		}
	}
	o.held = append(o.held, bs)
}

// overlaidPolls is what Open's delta restore left for the follower.
type overlaidPolls struct {
	polls     [][]changelog.Batch // screened, in poll order
	currentAt time.Time           // when Open listed the end offsets
}

// takeOverlaid returns, once, what a delta restore left for the follower
// to write into the file.
func (s *Store[V]) takeOverlaid() overlaidPolls {
	o := s.overlaid
	s.overlaid = overlaidPolls{}
	return o
}

// writeOverlaid writes the polls Open's delta restore held into the file,
// a transaction each, the last one recording that every partition was
// current at o.currentAt, and advances the replicas past each.
func (s *Store[V]) writeOverlaid(ctx context.Context, o overlaidPolls) error {
	for i, bs := range o.polls {
		var current map[int32]time.Time
		if i == len(o.polls)-1 {
			current = allAt(s.info.Partitions, o.currentAt)
		}
		if err := s.applyTail(ctx, bs, true, current); err != nil {
			return err
		}
		for _, b := range bs {
			s.reps.applied(b.Partition, b.Next)
		}
	}
	return nil
}
