package kvstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/kvstore"
)

// TestConcurrentCallsAndCloseNeitherRaceNorPanic runs Puts, Deletes, Gets
// and Scans from many goroutines and closes the store in the middle of
// them (run it with -race). Every call before Close succeeds, every call
// after it returns ErrClosed, and a call that overlaps Close does one or the
// other.
func TestConcurrentCallsAndCloseNeitherRaceNorPanic(t *testing.T) {
	e := newEnv(t)
	s := e.open("", kvstore.Partitions(3))
	ctx := ctxT(t)

	var closed atomic.Bool // set once Close has returned
	var calls, afterClose atomic.Int64
	check := func(err error, startedAfterClose bool) {
		calls.Add(1)
		switch {
		case startedAfterClose:
			afterClose.Add(1)
			if !errors.Is(err, kvstore.ErrClosed) {
				t.Errorf("call after Close: got %v, want ErrClosed", err)
			}
		case err != nil && !errors.Is(err, kvstore.ErrClosed):
			t.Errorf("call before or during Close: %v", err)
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	worker := func(id int, fn func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				after := closed.Load()
				check(fn(i), after)
			}
		}()
	}
	for w := range 3 {
		worker(w, func(i int) error {
			return errOf(s.Put(ctx, fmt.Sprintf("k%02d", (i*7+w)%40), User{FirstName: fmt.Sprint(w, i), Age: int32(i)}))
		})
	}
	worker(10, func(i int) error { return errOf(s.Delete(ctx, fmt.Sprintf("k%02d", i%40))) })
	for w := range 3 {
		worker(20+w, func(i int) error {
			_, _, err := s.Get(ctx, fmt.Sprintf("k%02d", (i+w)%40))
			return err
		})
	}
	for w := range 2 {
		worker(30+w, func(int) error {
			n := 0
			for e, err := range s.Scan(ctx, "k") {
				if err != nil {
					return err
				}
				if e.Key == "" {
					return errors.New("empty key in scan")
				}
				n++
			}
			return nil
		})
	}

	// Close once the workers have had some of everything done, not on a timer.
	require.Eventually(t, func() bool { return calls.Load() > 400 }, 20*time.Second, time.Millisecond)
	require.NoError(t, s.Close())
	closed.Store(true) // a call begun before this may have overlapped Close
	// Let every worker run at least a few calls after Close.
	require.Eventually(t, func() bool { return afterClose.Load() > 50 }, 10*time.Second, time.Millisecond)
	close(stop)
	wg.Wait()
	require.NoError(t, s.Close(), "Close is idempotent")
	t.Logf("%d calls, %d after Close", calls.Load(), afterClose.Load())

	// Scan after Close yields ErrClosed once and ends.
	var errs []error
	for _, err := range s.Scan(context.Background(), "") {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	require.ErrorIs(t, errs[0], kvstore.ErrClosed)
}
