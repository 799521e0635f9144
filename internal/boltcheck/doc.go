// Package boltcheck checks a bbolt file before bbolt opens it.
//
// # Basics
//
// bbolt checks a file's meta pages when it opens it and nothing else: a
// page of the wrong type, an element pointing outside its page or a branch
// pointing back up its own tree makes it panic, or fault, when a read or a
// write reaches that page, sometimes on a goroutine of its own where no
// recover can reach. Check reads the whole file itself, without bbolt, and
// refuses such a file with an error wrapping ErrDamaged, so that its caller
// (kvstore, before it opens its cache file) can rebuild it instead of
// crashing.
//
// Check accepts every file bbolt writes, with or without a synced freelist,
// and every file the page writer (internal/pagewriter) writes. It reads
// through a read-only memory map where the platform has one (no copies, no
// system call per page) and with plain reads elsewhere, reading ahead while
// pages come in file order.
//
// # Durability
//
// Check only reads. It takes no lock: a caller that must not race a writer
// holds bbolt's file lock meanwhile (kvstore opens the file read-only with
// bbolt first).
//
// # Caveats
//
// Check cannot see damage inside a key or value that keeps the keys in
// order: bbolt's format has no checksums on data pages. It lets pages that
// are neither reachable nor free pass (see Check). It knows the format of
// bbolt v1.4 (format version 2) as internal/boltfmt describes it; the page
// writer's version pin guards both.
package boltcheck
