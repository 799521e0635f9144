package pagewriter

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing the n bytes at off of f
// to disk, without waiting for them (sync_file_range with
// SYNC_FILE_RANGE_WRITE): the caller's fsync, which alone makes the file
// durable, then waits for less. A failure is of no consequence: the fsync
// writes whatever is left and reports any error.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
