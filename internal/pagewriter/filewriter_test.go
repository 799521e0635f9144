package pagewriter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/internal/boltcheck"
)

// requireNoWriterLeft waits briefly for the goroutine count to come back to
// before: the file writer's goroutine has ended.
func requireNoWriterLeft(t *testing.T, before int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > before; time.Sleep(5 * time.Millisecond) {
		// not require.Eventually: it counts among the goroutines
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before: the file writer's goroutine is still running", runtime.NumGoroutine(), before)
		}
	}
}

// failWritesAfter makes the file writer's n+1-th write fail, until the
// test ends, and returns the error it fails with.
func failWritesAfter(t *testing.T, n int) error {
	injected := errors.New("injected write failure")
	var calls atomic.Int32
	old := writeFile
	writeFile = func(f *os.File, b []byte) error {
		if calls.Add(1) > int32(n) {
			return injected
		}
		return old(f, b)
	}
	t.Cleanup(func() { writeFile = old })
	return injected
}

// Values larger than a write buffer take page runs larger than it: they
// go to the file in buffers of their own, between the pooled ones, one
// after another too, and the file holds them in order.
func TestWriteLaysOutPageRunsLargerThanAWriteBuffer(t *testing.T) {
	for _, ps := range []int{4 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("%dKiB", ps>>10), func(t *testing.T) {
			model := contents{"a": {}, "b": {}}
			for i := range 40 {
				v := fmt.Appendf(nil, "small-%d", i)
				switch i % 10 {
				case 3, 4: // two in a row
					v = bytes.Repeat([]byte{byte(i)}, writeBufSize+writeBufSize/2)
				case 7:
					v = bytes.Repeat([]byte{byte(i)}, 3*writeBufSize)
				}
				model["a"][fmt.Sprintf("k%03d", i)] = v
			}
			model["b"]["after"] = []byte("the last one")
			path := filepath.Join(t.TempDir(), "big.db")
			require.NoError(t, Write(path, model.data(nil), Options{PageSize: ps}))
			require.NoError(t, boltcheck.Check(path))
			db := open(t, path)
			defer db.Close()
			requireTxCheck(t, db)
			require.Equal(t, model, read(t, db))
		})
	}
}

// A write that fails on the file writer's goroutine is what Write returns,
// whether it is the first, one in the middle while the pages are still
// being built, or the last (the buffer finish hands over); the goroutine
// has ended by then, and the data is not handed over a second time (no
// fallback: the file system failed, not the layout).
func TestWriteReportsAFailedWriteOfItsGoroutine(t *testing.T) {
	model := contents{"p000": {}, "p001": {}}
	for i := range 200_000 { // about 12 MB: a dozen buffers
		model[fmt.Sprintf("p%03d", i%2)][fmt.Sprintf("key-%08d", i)] = fmt.Appendf(nil, "value-%040d", i)
	}
	var total int
	{
		path := filepath.Join(t.TempDir(), "count.db")
		old := writeFile
		writeFile = func(f *os.File, b []byte) error { total++; return old(f, b) }
		require.NoError(t, Write(path, model.data(nil), Options{PageSize: 4 << 10}))
		writeFile = old
	}
	require.Greater(t, total, 2, "the test wants several buffers written")
	for _, after := range []int{0, total / 2, total - 1} {
		t.Run(fmt.Sprintf("after=%d", after), func(t *testing.T) {
			before := runtime.NumGoroutine()
			injected := failWritesAfter(t, after)
			calls := 0
			err := Write(filepath.Join(t.TempDir(), "c.db"), model.data(&calls), Options{PageSize: 4 << 10})
			require.ErrorIs(t, err, injected)
			require.Equal(t, 1, calls)
			requireNoWriterLeft(t, before)
		})
	}
}

// An error of the data function stops the file writer too: Write returns
// that error, and nothing writes to the file once it has returned.
func TestWriteStopsItsGoroutineOnAnErrorOfData(t *testing.T) {
	before := runtime.NumGoroutine()
	stop := errors.New("the merge failed")
	model := randomContents(6, 20_000, []string{"p000"}, 0)
	data := func(w Writer) error {
		n := 0
		err := model.data(nil)(writerFunc{w, func() error {
			if n++; n == 15_000 {
				return stop
			}
			return nil
		}})
		return err
	}
	path := filepath.Join(t.TempDir(), "c.db")
	require.ErrorIs(t, Write(path, data, Options{PageSize: 4 << 10}), stop)
	requireNoWriterLeft(t, before)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	fi2, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, fi.Size(), fi2.Size(), "nothing writes to the file after Write returned")
}

// writerFunc is a Writer whose Put fails when before says so.
type writerFunc struct {
	Writer
	before func() error
}

func (w writerFunc) Put(key, val []byte) error {
	if err := w.before(); err != nil {
		return err
	}
	return w.Writer.Put(key, val)
}
