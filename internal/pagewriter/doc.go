// Package pagewriter writes a new bbolt file directly from sorted key/value
// pairs, page by page, without bbolt's transactions.
//
// # Basics
//
// Write lays out the B+tree of each top-level bucket itself: leaves packed
// full and in key order (what bbolt writes with FillPercent 1.0 and sorted
// Puts, without their cost per key), the branch pages above them, the root
// bucket, a freelist page listing no free pages (every page is in use, and
// bbolt then opens the file without walking all its pages to find the free
// ones) and the two meta pages. bbolt opens the result like a file it wrote
// itself and keeps updating it.
//
// Write checks what it wrote before it returns: internal/boltcheck reads
// every page, then bbolt opens the file and reads every bucket's first and
// last key. Should either refuse it (keys out of order, say), should the
// bucket names not be sorted, or
// should the bbolt this binary was built with not be the version the page
// layout was verified against (VerifiedBbolt), it logs a warning and loads
// the same data through bbolt's own API instead: slower, but a file bbolt
// wrote itself. Unless the version decided it, the data is then read a
// second time.
//
// # Durability
//
// The file is not synced: the caller syncs it, typically with the bbolt
// transaction that adds what else the file holds (kvstore adds its meta
// bucket), and renames it into place. Write only starts the writeback of
// what it wrote (on Linux, sync_file_range without waiting), so that the
// caller's fsync has less left to wait for; it promises nothing. On error
// the file may be left half-written; the caller removes it.
//
// Pages are laid out in place in a few write buffers (4 MiB in all); a
// goroutine of Write's own writes each full one to the file while the next
// fills. It has ended when Write returns, also on error; a write it failed
// is Write's error.
//
// # Caveats
//
// The page layout is bbolt v1.4's (file format version 2, see
// internal/boltfmt), in the host's byte order, as bbolt writes it. Buckets
// are top-level only, without nested buckets, and every page size from
// 1 KiB to 64 KiB is tested. Write is safe for concurrent use on different
// paths.
package pagewriter
