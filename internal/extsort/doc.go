// Package extsort sorts key/value records of many partitions in bounded
// memory and keeps, of each (partition, key), only the version added last.
//
// # Basics
//
// A Sorter takes records in any order (Add) and hands them back once, or as
// often as asked, in (partition, key) order: partitions as signed integers
// ascending, keys in byte order (Each). Of the records with the same
// partition and key, only the one added last is handed back, and not even
// that if it is a tombstone (a nil value). It is the first half of filling
// an empty file sequentially: kvstore's full restore feeds it a topic and
// writes what comes out, in order, page by page.
//
// It holds about limit bytes in memory: the records' bytes plus a fixed
// overhead per record (its entry in the sort's two buffers, counted by
// their capacity, and slack). Once the records added hold half of that, it
// spills them: a goroutine of its own sorts them, drops the versions that
// later ones replace and writes the rest to a run file in dir, while Add
// goes on filling the other half. An Add that fills the other half before
// that spill has ended waits for it, so sorting and writing a run overlap
// the next records' arrival and memory stays within limit. Both halves'
// chunks, sort buffers and partly filled last chunks are counted by what is
// allocated; a small limit takes smaller chunks (1 MiB at most, limit/8
// down to 16 KiB). Each then
// merges the runs and what is still in memory, k-way, newest input winning
// among equal keys.
//
// # Durability
//
// Run files are scratch: they are not synced and mean nothing after the
// process ends. Close removes them; a process killed before that leaves them
// behind, named by the pattern given to New, and the caller removes them
// (kvstore does at its next Open).
//
// # Caveats
//
// The bound is on the records held, not on everything: Each's merge reads
// up to 64 runs at once, each through one open file and a read buffer of
// 256 KiB (less for a small limit: limit/65, 16 KiB at least; larger for a
// record that does not fit in it). With more runs than that, Each first
// merges the oldest 64 into one run, as often as needed (a pass over their
// data each time), so open files and buffers stay bounded however far the
// data outgrows the limit. Runs are half the limit each: the data's size
// over half the limit is how many there are.
//
// A Sorter is not safe for concurrent use (its spills' goroutines are its
// own business). Slices handed to Each's callback belong to the Sorter and
// are valid only during the call; an empty value may come as nil or as an
// empty slice. Once a spill fails, the Sorter returns that error from every
// later Add and Each; only Close is of use then. A run that cannot be
// created fails the Add that spills it; one that cannot be written is
// written after that Add has returned, and fails the first Add after the
// spill has ended (or the next spilling Add, which waits for it), or Each.
package extsort
