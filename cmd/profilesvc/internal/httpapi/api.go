// Package httpapi is profilesvc's HTTP API: the profile routes, health and
// readiness, and Prometheus metrics.
//
// The handler serves from the moment it is built; the store arrives later,
// through SetReady, once its restore is done. Until then /readyz and every
// profile route answer 503, and /healthz answers 200.
//
// Once the store is there, the profile routes serve from it whatever
// /readyz says: a stale read beats none. /readyz answers 503 while the
// follower of some partition has stopped (a poison record, a cache that
// cannot be written, Close) and, with MaxStaleness, while some partition has
// not been caught up with the topic for longer than that. A partition the
// follower cannot read for now (a broker that does not answer: stalled)
// leaves the service ready until MaxStaleness says otherwise, so that a
// broker outage does not take every instance out of its load balancer at
// once.
//
// # Consistency
//
// A plain read serves this instance's cache: its own writes at once, other
// instances' once its follower has applied them. A 2xx PUT or DELETE of
// /profiles/{id} answers with the header Kvstore-Position: the Position of
// its write (kvstore.Position's token). A GET of /profiles/{id} or
// /profiles, or a DELETE, that sends that header back (several values, or
// comma-separated tokens, are merged) is served once this instance has
// applied it (Store.WaitFor): read-your-writes across instances. With
// ?consistent=true a GET first runs a read barrier (Store.Sync: the key's
// partition, or every partition for /profiles), so it sees every write
// acknowledged anywhere before the request. Both waits together are bounded
// by ReadWait: past it the request answers 504. A malformed token, one of
// another topic, or tokens of two topics, are a 400 naming the header.
// DELETE answers 404 only when a barrier on the key's partition and then
// Get find no profile; otherwise it writes the tombstone and answers 204.
//
// # Partitioned mode
//
// When the store is a member of a group (kvstore.Group), each instance
// serves the keys of the partitions it owns. A GET or DELETE of a key
// another instance owns goes to that owner (its advertised address,
// Store.Owner) with its Kvstore-Position headers and query, and the
// owner's answer comes back with ForwardedToHeader: one hop, since the
// forwarded request carries ForwardedHeader and an instance answers such a
// request for a key it does not serve with 503 instead of forwarding it
// again. While a key's partition has no owner that serves it (a rebalance
// is moving it, or its new owner is still restoring it), or its owner
// cannot be reached, the answer is 503 with Retry-After: 1; an owner that
// does not answer within ForwardTimeout (hung) gets a 504, with
// Retry-After: 1 too. A failed forward is logged at most once per owner
// every 5s, with the count of those left unlogged. PUT needs no owner: it
// goes to Kafka from any instance. GET /profiles asks every owner for its
// page (the instance's own partitions read locally) and merges them in key
// order under the same pagination contract; it answers 503 while a
// partition has no owner. Token waits and barriers run on the owner, for
// the partitions it owns only: a read of a key waits for its token's offset
// of the key's partition, and a listing has each owner wait for the
// offsets of its own partitions; the token's other offsets are dropped
// (Position.Only), not refused.
package httpapi

import (
	"context"
	"encoding/json"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/compactkv/compactkv/kvstore"
)

// User is the stored value, of UserSchema (com.example.User).
type User struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
}

// Store is what the API needs of *kvstore.Store[User].
type Store interface {
	Put(ctx context.Context, key string, value User) (kvstore.Position, error)
	Get(ctx context.Context, key string) (User, bool, error)
	Delete(ctx context.Context, key string) (kvstore.Position, error)
	Scan(ctx context.Context, prefix string, opts ...kvstore.ScanOption) iter.Seq2[kvstore.Entry[User], error]
	// WaitFor returns once the store has applied pos (ctx's error if ctx
	// ends first; kvstore.ErrForeignPosition for a Position of another
	// topic).
	WaitFor(ctx context.Context, pos kvstore.Position) error
	// Sync is a read barrier over the partitions of keys (all of them for
	// none): it returns once the store has applied their end offsets.
	Sync(ctx context.Context, keys ...string) (kvstore.Position, error)
	// Owner says which partition key is in, the address of its owner
	// ("" while none) and whether this store serves it (partitioned
	// mode; always true in global mode).
	Owner(key string) (partition int32, addr string, local bool)
	// Stats is read by /readyz, /healthz and at every scrape of /metrics.
	Stats() kvstore.Stats
}

// API is the HTTP API. Its methods are safe for concurrent use.
type API struct {
	log          *slog.Logger
	maxStaleness time.Duration
	readWait     time.Duration
	// forwardTimeout and client forward requests to other instances
	// (partitioned mode; routing.go).
	forwardTimeout time.Duration
	client         *http.Client
	forwardWarns   warnLimiter
	m              *metrics
	state          atomic.Pointer[readyState]
	progress       progress
	handler        http.Handler
}

type readyState struct {
	store Store
	stats kvstore.RestoreStats
	// Partitioned mode (kvstore.Group): self is this instance's advertised
	// address, keys a key of each partition (for barriers on partitions).
	partitioned bool
	self        string
	keys        map[int32]string
}

// Option configures the API.
type Option interface{ apply(*API) }

type optFn func(*API)

func (f optFn) apply(a *API) { f(a) }

// MaxStaleness makes /readyz answer 503 while some partition of the topic
// has not been caught up with it for longer than d (kvstore.PartitionStats
// CaughtUpAt), whatever its state. Default 0: no bound; only a stopped
// follower makes the API unready.
func MaxStaleness(d time.Duration) Option { return optFn(func(a *API) { a.maxStaleness = d }) }

// New returns the API, not ready yet. cachePath is the store's cache file,
// whose size /metrics reports (empty: not reported).
func New(log *slog.Logger, cachePath string, opts ...Option) *API {
	a := &API{log: log, m: newMetrics(cachePath), readWait: DefaultReadWait,
		forwardWarns: warnLimiter{every: forwardWarnEvery}}
	for _, o := range opts {
		o.apply(a)
	}
	if a.forwardTimeout == 0 {
		a.forwardTimeout = a.readWait + DefaultForwardMargin
	}
	a.client = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // instances talk to each other directly
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	a.m.reg.MustRegister(storeCollector{a}) // readiness.go
	mux := http.NewServeMux()
	route := func(pattern string, h http.HandlerFunc) { mux.HandleFunc(pattern, h) }

	route("PUT /profiles/{id...}", a.putProfile)
	route("GET /profiles/{id...}", a.getProfile)
	route("DELETE /profiles/{id...}", a.deleteProfile)
	route("/profiles/{id...}", methodNotAllowed("GET, HEAD, PUT, DELETE"))
	route("GET /profiles", a.listProfiles)
	route("/profiles", methodNotAllowed("GET, HEAD"))
	route("GET /healthz", a.healthz)
	route("/healthz", methodNotAllowed("GET, HEAD"))
	route("GET /readyz", a.readyz)
	route("/readyz", methodNotAllowed("GET, HEAD"))
	mux.Handle("GET /metrics", a.m.handler())
	route("/metrics", methodNotAllowed("GET, HEAD"))
	route("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{Error: "no route for " + r.URL.Path})
	})
	a.handler = a.m.instrument(mux)
	return a
}

// Handler returns the API's HTTP handler.
func (a *API) Handler() http.Handler { return a.handler }

// SetReady hands the API its store, restored as stats says; the profile
// routes start serving and /readyz judges the store's Stats from then on.
// Call it once.
func (a *API) SetReady(s Store, stats kvstore.RestoreStats) {
	a.m.restored(stats)
	a.m.watchMisrouted(s) // misrouted.go
	st := &readyState{store: instrumented{s, a.m}, stats: stats}
	if now := s.Stats(); now.Group != nil {
		st.partitioned, st.self = true, now.Group.Advertise
		st.keys = partitionKeys(s, len(now.Partitions))
		a.m.watchGroup(s) // metrics.go
	}
	a.state.Store(st)
}

// ready returns the store's state, or answers 503 and returns nil while
// there is no store.
func (a *API) ready(w http.ResponseWriter) *readyState {
	st := a.state.Load()
	if st == nil {
		retryLater(w, "the store is restoring; see /readyz")
		return nil
	}
	return st
}

// errorBody is every error response: what went wrong and, for bad input,
// which field ("id", "body", "first_name", "limit", ...).
type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{
			Error: "method " + r.Method + " not allowed on " + r.URL.Path + "; allowed: " + allow,
		})
	}
}

// instrumented times a store's calls into the metrics.
type instrumented struct {
	s Store
	m *metrics
}

func (i instrumented) Put(ctx context.Context, key string, v User) (kvstore.Position, error) {
	done := i.m.storeOp("put")
	pos, err := i.s.Put(ctx, key, v)
	done(err)
	return pos, err
}

func (i instrumented) Get(ctx context.Context, key string) (User, bool, error) {
	done := i.m.storeOp("get")
	u, ok, err := i.s.Get(ctx, key)
	done(err)
	return u, ok, err
}

func (i instrumented) Delete(ctx context.Context, key string) (kvstore.Position, error) {
	done := i.m.storeOp("delete")
	pos, err := i.s.Delete(ctx, key)
	done(err)
	return pos, err
}

func (i instrumented) Stats() kvstore.Stats { return i.s.Stats() }

func (i instrumented) Owner(key string) (int32, string, bool) { return i.s.Owner(key) }

// WaitFor and Sync are timed by the handlers (metrics.readWait), which know
// whether a wait ran out of ReadWait.
func (i instrumented) WaitFor(ctx context.Context, pos kvstore.Position) error {
	return i.s.WaitFor(ctx, pos)
}

func (i instrumented) Sync(ctx context.Context, keys ...string) (kvstore.Position, error) {
	return i.s.Sync(ctx, keys...)
}

// Scan times the whole iteration, until the loop ends or breaks.
func (i instrumented) Scan(ctx context.Context, prefix string, opts ...kvstore.ScanOption) iter.Seq2[kvstore.Entry[User], error] {
	return func(yield func(kvstore.Entry[User], error) bool) {
		done := i.m.storeOp("scan")
		var err error
		for e, e2 := range i.s.Scan(ctx, prefix, opts...) {
			if e2 != nil {
				err = e2
			}
			if !yield(e, e2) {
				break
			}
		}
		done(err)
	}
}

// routeLabel is the metrics label of a request's route: the ServeMux
// pattern it matched, so the label set stays small.
func routeLabel(r *http.Request) string {
	if r.Pattern == "" {
		return "none"
	}
	return strings.TrimSpace(r.Pattern)
}
