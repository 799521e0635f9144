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
// the next records' arrival and memory stays within limit. Each then
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
// every run at once, through a 256 KiB buffer each (larger for a record
// that does not fit in it) and one open file each,
// so a limit far below the data's size costs memory and file descriptors in
// proportion to the number of runs. There is no second merge pass.
//
// A Sorter is not safe for concurrent use (its spills' goroutines are its
// own business). Slices handed to Each's callback belong to the Sorter and
// are valid only during the call; an empty value may come as nil or as an
// empty slice. Once a spill fails, the Sorter returns that error from every
// later Add and Each; only Close is of use then. A run that cannot be
// created fails the Add that spills it; one that cannot be written fails
// the next Add that spills, or Each, since it is written after its Add has
// returned.
package extsort
