package pagewriter

import (
	"fmt"
	"os"
)

// pageWriter appends pages to the file sequentially. Pages are laid out in
// place, in one of a few buffers; a full buffer goes to a goroutine of its
// own that writes it to the file and starts its writeback (startWriteback)
// while the next one fills. Building pages (and the merge feeding them)
// then overlaps the copy into the page cache, which costs as much as the
// building where fresh memory is dear (a VM whose host takes back freed
// pages), and the caller's fsync finds most of the file written back
// already.
type pageWriter struct {
	pageSize int
	next     uint64 // id of the next page
	cur      []byte // the buffer being filled: pages laid out so far

	full     chan []byte   // buffers to write, in file order; closed by finish
	free     chan []byte   // pooled buffers back from the goroutine
	done     chan struct{} // closed when the goroutine has ended
	err      error         // the goroutine's error; read after done is closed
	finished bool          // finish was called
}

const (
	// writeBufSize is the size of each pooled buffer, and of most writes.
	writeBufSize = 1 << 20
	// writeBufs is how many buffers are pooled: one filling, the others
	// queued or being written. Together as large as the bufio.Writer the
	// page writer had before (4 MiB).
	writeBufs = 4
)

// writeFile writes b at the file's current offset; tests replace it to
// make a write fail.
var writeFile = func(f *os.File, b []byte) error {
	_, err := f.Write(b)
	return err
}

// newPageWriter starts writing pages of ps bytes to f from its current
// offset (its start). The caller must call finish, on every path.
func newPageWriter(f *os.File, ps int) *pageWriter {
	pw := &pageWriter{
		pageSize: ps,
		full:     make(chan []byte, writeBufs),
		free:     make(chan []byte, writeBufs),
		done:     make(chan struct{}),
	}
	for range writeBufs {
		pw.free <- make([]byte, 0, writeBufSize)
	}
	go pw.run(f, pw.full, pw.free)
	return pw
}

// run writes the buffers that come through full until it is closed or a
// write fails, handing the pooled ones back through free. A buffer larger
// than writeBufSize (pages that do not fit in one) is not pooled.
func (pw *pageWriter) run(f *os.File, full <-chan []byte, free chan<- []byte) {
	defer close(pw.done)
	var off int64
	for b := range full {
		if err := writeFile(f, b); err != nil {
			pw.err = fmt.Errorf("pagewriter: %w", err) // a *PathError: "write <path>: ..."
			return
		}
		startWriteback(f, off, int64(len(b)))
		off += int64(len(b))
		if cap(b) == writeBufSize {
			free <- b[:0]
		}
	}
}

// alloc lays out the next n bytes of the file (whole pages) and returns
// them zeroed, for the caller to fill before its next call of alloc or
// finish. It returns the error of a write that failed meanwhile.
func (pw *pageWriter) alloc(n int) ([]byte, error) {
	if len(pw.cur)+n > cap(pw.cur) {
		if err := pw.handOff(); err != nil {
			return nil, err
		}
		if n > writeBufSize {
			if pw.cur != nil { // an empty pooled buffer: back to the pool
				pw.free <- pw.cur
			}
			pw.cur = make([]byte, 0, n)
		} else if pw.cur == nil {
			select {
			case pw.cur = <-pw.free:
			case <-pw.done:
				return nil, pw.failed()
			}
		}
	}
	b := pw.cur[len(pw.cur) : len(pw.cur)+n]
	clear(b)
	pw.cur = pw.cur[:len(pw.cur)+n]
	pw.next += uint64(n / pw.pageSize)
	return b, nil
}

// handOff sends the buffer being filled, if it holds anything, to the
// goroutine; pw.cur is then nil.
func (pw *pageWriter) handOff() error {
	if len(pw.cur) == 0 {
		return nil
	}
	select {
	case <-pw.done:
		return pw.failed()
	default:
	}
	select {
	case pw.full <- pw.cur:
		pw.cur = nil
		return nil
	case <-pw.done:
		return pw.failed()
	}
}

// failed returns the goroutine's error once it has ended.
func (pw *pageWriter) failed() error {
	if pw.err != nil {
		return pw.err
	}
	return fmt.Errorf("pagewriter: file writer ended early")
}

// finish writes what is left and waits for the goroutine to end, and
// returns the first error a write met. It is idempotent; after an error of
// the caller's it still waits, so that nothing writes to the file once it
// returns.
func (pw *pageWriter) finish() error {
	if pw.finished {
		<-pw.done
		return pw.err
	}
	pw.finished = true
	err := pw.handOff()
	close(pw.full)
	<-pw.done
	if err != nil {
		return err
	}
	return pw.err
}
