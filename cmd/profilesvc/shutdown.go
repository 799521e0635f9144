package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// shutdown is one shutdown's deadline, --shutdown-timeout from the moment
// it begins: the first call of deadline or httpEnd.
type shutdown struct {
	timeout time.Duration
	once    sync.Once
	end     time.Time
}

func newShutdown(timeout time.Duration) *shutdown { return &shutdown{timeout: timeout} }

// deadline returns when the shutdown must be over.
func (s *shutdown) deadline() time.Time {
	s.once.Do(func() { s.end = time.Now().Add(s.timeout) })
	return s.end
}

// httpEnd returns when the HTTP server must have stopped: closePhase before
// the deadline, which is kept for closing the store.
func (s *shutdown) httpEnd() time.Time { return s.deadline().Add(-closePhase(s.timeout)) }

// closePhase is the part of a shutdown bounded by timeout kept for closing
// the store: the last third, at most 5s.
func closePhase(timeout time.Duration) time.Duration { return min(timeout/3, 5*time.Second) }

// closeTimeout is the kvstore.CloseTimeout for a shutdown bounded by
// timeout: half of closePhase. The other half is for what Close does past
// that bound: stopping the follower and closing the Kafka clients, which
// takes up to about 2s with the broker gone (franz-go's Client.Close gives
// the broker 1s to end a fetch session and 1s for a last telemetry push).
func closeTimeout(timeout time.Duration) time.Duration {
	return max(closePhase(timeout)/2, time.Millisecond)
}

// drain stops srv by end: it stops accepting requests and waits for those
// in flight until a fifth (at most 1s) of the time left before end; then it
// cancels those still running through cancelRequests (the context they run
// under), so that their store calls return and they answer 503, waits for
// them until end, and closes what is left. It returns an error if requests
// had to be cancelled.
func drain(srv *http.Server, cancelRequests context.CancelFunc, end time.Time) error {
	grace := max(0, min(time.Second, time.Until(end)/5))
	ctx, cancel := context.WithDeadline(context.Background(), end.Add(-grace))
	err := srv.Shutdown(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	cancelRequests()
	ctx, cancel = context.WithDeadline(context.Background(), end)
	defer cancel()
	cancelled := fmt.Errorf("%w: cancelled the requests still in flight when the shutdown could wait no longer", errGaveUp)
	if err := srv.Shutdown(ctx); err != nil {
		return errors.Join(cancelled, fmt.Errorf("closed connections still busy: %w", err), srv.Close())
	}
	return cancelled
}

// errGaveUp marks what a shutdown cut short to keep its bound: it is
// logged, and the process still exits 0, since it did what it was asked.
var errGaveUp = errors.New("gave up to keep the shutdown bound")

// closeStore closes s and waits for it until deadline at most. Close bounds
// itself (kvstore.CloseTimeout); the wait here holds the shutdown to its
// bound even if that one slips.
func closeStore(s io.Closer, deadline time.Time) error {
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w: still closing at the end of --shutdown-timeout; exiting without waiting for it", errGaveUp)
	}
}
