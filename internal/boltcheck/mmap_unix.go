//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package boltcheck

import (
	"os"
	"syscall"
)

// mapFile maps size bytes of f read-only, or returns nil if it cannot (the
// checker then reads the file instead).
func mapFile(f *os.File, size int64) (data []byte, unmap func()) {
	if size <= 0 || int64(int(size)) != size {
		return nil, func() {}
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, func() {}
	}
	return data, func() { syscall.Munmap(data) }
}
