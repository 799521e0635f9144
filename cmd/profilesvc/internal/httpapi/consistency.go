package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/compactkv/compactkv/kvstore"
)

// PositionHeader is the header that carries a kvstore.Position token: a
// 2xx PUT or DELETE of /profiles/{id} answers with the Position of its
// write, and a GET of /profiles/{id} or /profiles, or a DELETE, that sends
// it is served once this instance has applied it.
const PositionHeader = "Kvstore-Position"

// DefaultReadWait is ReadWait's default.
const DefaultReadWait = 5 * time.Second

// ReadWait bounds how long a request waits for this instance to apply the
// Position its Kvstore-Position header names, and for a ?consistent=true
// read barrier (kvstore.Store.Sync), both together: past it the request
// answers 504. Default DefaultReadWait (5s); d <= 0 keeps the default.
func ReadWait(d time.Duration) Option {
	return optFn(func(a *API) {
		if d > 0 {
			a.readWait = d
		}
	})
}

// setPosition puts the Position of a write in the response's header.
func setPosition(w http.ResponseWriter, pos kvstore.Position) {
	if !pos.IsZero() {
		w.Header().Set(PositionHeader, pos.String())
	}
}

// requestPosition returns the Position the request's Kvstore-Position
// headers name: every value, and every comma-separated token in a value,
// merged (empty ones ignored). The zero Position when there is none.
func requestPosition(r *http.Request) (kvstore.Position, *badInput) {
	var pos kvstore.Position
	for _, v := range r.Header.Values(PositionHeader) {
		for tok := range strings.SplitSeq(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" {
				continue
			}
			p, err := kvstore.ParsePosition(tok)
			if err != nil {
				return kvstore.Position{}, bad(PositionHeader, "%q is a malformed %s token (%s)", abbrev(tok), PositionHeader, detail(err, kvstore.ErrBadPosition))
			}
			if pos, err = pos.Merge(p); err != nil {
				return kvstore.Position{}, bad(PositionHeader, "holds tokens of different topics; send one topic's (%v)", err)
			}
		}
	}
	return pos, nil
}

// abbrev shortens a token quoted back in an error.
func abbrev(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// detail returns what err says after sentinel's own text ("kvstore:
// malformed position token: truncated" gives "truncated"), so that an answer
// that already names the sentinel's meaning does not repeat it; err's whole
// text when it does not hold sentinel's, or holds nothing after it.
func detail(err, sentinel error) string {
	s := err.Error()
	if _, rest, ok := strings.Cut(s, sentinel.Error()+": "); ok && rest != "" {
		return rest
	}
	return s
}

// consistentParam reads ?consistent=: false when absent, else a boolean
// as strconv.ParseBool spells it.
func consistentParam(r *http.Request) (bool, *badInput) {
	q := r.URL.Query()
	if !q.Has("consistent") {
		return false, nil
	}
	v := q.Get("consistent")
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, bad("consistent", "must be true or false, got %q", v)
	}
	return b, nil
}

// readGate is what a request must wait for before it reads: the Position
// of its header, and a barrier over keys (every partition when keys is
// empty) when barrier is set.
type readGate struct {
	pos     kvstore.Position
	barrier bool
	keys    []string
}

// gate parses the request's Kvstore-Position header and, if consistentOK,
// its ?consistent= parameter; on bad input it answers 400 and returns false.
func gate(w http.ResponseWriter, r *http.Request, consistentOK bool, keys ...string) (readGate, bool) {
	pos, e := requestPosition(r)
	if e != nil {
		writeBad(w, e)
		return readGate{}, false
	}
	g := readGate{pos: pos, keys: keys}
	if consistentOK {
		if g.barrier, e = consistentParam(r); e != nil {
			writeBad(w, e)
			return readGate{}, false
		}
	}
	return g, true
}

// waitKind names a wait in metrics and answers.
type waitKind string

const (
	waitToken   waitKind = "token"   // a Kvstore-Position header: Store.WaitFor
	waitBarrier waitKind = "barrier" // ?consistent=true or DELETE's check: Store.Sync
)

// describe names what a wait of kind waits for, in an answer.
func (k waitKind) describe() string {
	if k == waitToken {
		return "the " + PositionHeader + " token"
	}
	return "the consistent read's barrier"
}

// errReadWait is a wait that ran past ReadWait.
var errReadWait = errors.New("read wait exceeded")

// pass waits until s has applied what g asks for, within ReadWait in all.
// It returns nil when the request may read; otherwise it has answered the
// request (400 for a foreign token; 504 past ReadWait, or past the store's
// own bound on the barrier's ListOffsets; 503 when the wait could not be
// done: a stopped partition, the broker failing the ListOffsets, the
// request cancelled, shutdown) and returns the error, which wraps
// errReadWait for a timeout.
func (a *API) pass(w http.ResponseWriter, r *http.Request, s Store, g readGate) error {
	if g.pos.IsZero() && !g.barrier {
		return nil
	}
	ctx, cancel := a.waitContext(r)
	defer cancel()
	return a.passWithin(ctx, w, r, s, g)
}

// waitContext returns the request's context bounded by ReadWait, for the
// waits a request makes before it reads.
func (a *API) waitContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), a.readWait)
}

// passWithin is pass under ctx, a waitContext of r.
func (a *API) passWithin(ctx context.Context, w http.ResponseWriter, r *http.Request, s Store, g readGate) error {
	if !g.pos.IsZero() {
		if err := a.wait(ctx, r, s, waitToken, g.pos, nil); err != nil {
			a.waitError(w, r, waitToken, g.pos, err)
			return err
		}
	}
	if g.barrier {
		if err := a.wait(ctx, r, s, waitBarrier, kvstore.Position{}, g.keys); err != nil {
			a.waitError(w, r, waitBarrier, kvstore.Position{}, err)
			return err
		}
	}
	return nil
}

// wait runs one wait under ctx (bounded by ReadWait), records it in the
// metrics, and returns its error, wrapping errReadWait when ctx's deadline
// ended it while the request itself was still live.
func (a *API) wait(ctx context.Context, r *http.Request, s Store, kind waitKind, pos kvstore.Position, keys []string) error {
	done := a.m.readWait(kind)
	var err error
	if kind == waitToken {
		err = s.WaitFor(ctx, pos)
	} else {
		_, err = s.Sync(ctx, keys...)
	}
	if err != nil && r.Context().Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		// ReadWait ran out, or (barrier) the store's own bound on the
		// broker's ListOffsets answer did: either way the wait timed out.
		err = fmt.Errorf("%w: %w", errReadWait, err)
	}
	done(waitOutcome(err))
	return err
}

// waitOutcome is a wait's outcome label.
func waitOutcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, errReadWait):
		return "timeout"
	case errors.Is(err, kvstore.ErrForeignPosition):
		return "foreign"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, kvstore.ErrClosed):
		return "cancelled"
	}
	return "failed"
}

// waitError answers for a wait that failed.
func (a *API) waitError(w http.ResponseWriter, r *http.Request, kind waitKind, pos kvstore.Position, err error) {
	switch {
	case errors.Is(err, errReadWait):
		what := "this instance did not apply the position of the " + PositionHeader + " header"
		if kind == waitBarrier {
			what = "this instance did not catch up with the topic for the consistent read"
		}
		writeJSON(w, http.StatusGatewayTimeout, errorBody{Error: fmt.Sprintf("%s within the read wait of %v; retry, or read from another instance", what, a.readWait)})
	case errors.Is(err, kvstore.ErrForeignPosition):
		writeBad(w, bad(PositionHeader, "the token is not of this service's topic: %s", detail(err, kvstore.ErrForeignPosition)))
	case errors.Is(err, kvstore.ErrClosed):
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the service is shutting down"})
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the request was cancelled or timed out before the store caught up"})
	default:
		// A stopped partition (see /readyz), or the broker failed the
		// barrier's ListOffsets: this instance cannot serve the read now.
		a.log.Warn("a read could not wait for its position", "kind", string(kind), "position", pos.Offsets(),
			"method", r.Method, "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: fmt.Sprintf("this instance cannot wait for %s now; see /readyz and the service log, or read from another instance", kind.describe())})
	}
}
