package kvstore

import (
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
// listed (as a restore's quiet tail does, replicas.overlaid), and the
// batches are handed to the follower, which writes them first thing, in
// offset order with their checkpoints, before anything it polls; each
// overlay entry is dropped only after the commit that holds it.
//
// Nothing is promised that is not true meanwhile: reads show every record
// below the listed end; the file's checkpoint and its record of when each
// partition was current stay where they were until the follower's commit
// (so a crash meanwhile costs the next Open the same delta again, and the
// retention guard is never told the file held what it did not); Close
// waits for the commit as it waits for own writes (closeDrain).
//
// A delta larger than the budget (RestoreMemory) is written into the file
// as it is read, as before: what is held goes into the file with the poll
// that overflows it.

// overlayEntryCost is what holding one record costs beyond its key and
// value bytes: the record in its batch, the overlay's map entry, ovEntry
// and the key's string copy header.
const overlayEntryCost = int64(unsafe.Sizeof(changelog.Record{})) + 96

// deltaOverlay is a delta restore's records held for the follower.
type deltaOverlay struct {
	budget, used int64
	held         []changelog.Batch // screened, in poll order
}

// fits says whether bs (screened) can be held too.
func (o *deltaOverlay) fits(bs []changelog.Batch) bool {
	n := o.used
	for i := range bs {
		for j := range bs[i].Records {
			r := &bs[i].Records[j]
			n += 2*int64(len(r.Key)) + int64(len(r.Value)) + overlayEntryCost
		}
	}
	if n > o.budget {
		return false
	}
	o.used = n
	return true
}

// hold puts bs's records into their replicas' overlays and keeps bs for
// the follower.
func (o *deltaOverlay) hold(reps *replicas, bs []changelog.Batch) {
	for i := range bs {
		rep := reps.all[bs[i].Partition]
		for _, r := range lastPerKey(bs[i].Records) {
			rep.putOwn(string(r.Key), r.Offset, r.Value)
		}
	}
	o.held = append(o.held, bs...)
}

// takeOverlaid returns the batches a delta restore left for the follower to
// write into the file, once: one batch per partition, its records in offset
// order (applyTail expects no partition twice).
func (s *Store[V]) takeOverlaid() []changelog.Batch {
	held := s.overlaid
	s.overlaid = nil
	var out []changelog.Batch
	at := map[int32]int{}
	for _, b := range held {
		i, ok := at[b.Partition]
		if !ok {
			at[b.Partition] = len(out)
			out = append(out, b)
			continue
		}
		m := &out[i]
		m.Records = append(m.Records[:len(m.Records):len(m.Records)], b.Records...)
		m.Next = max(m.Next, b.Next)
		m.Bytes += b.Bytes
	}
	return out
}
