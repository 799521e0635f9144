package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/compactkv/compactkv/kvstore"
)

const (
	// MaxBodyBytes bounds a PUT body.
	MaxBodyBytes = 1 << 20
	// MaxIDBytes bounds a profile ID (the Kafka key).
	MaxIDBytes = 256
	// DefaultLimit and MaxLimit bound a page of GET /profiles.
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Profile is a profile as the API shows it.
type Profile struct {
	ID        string  `json:"id"`
	FirstName string  `json:"first_name"`
	LastName  string  `json:"last_name"`
	Age       int32   `json:"age"`
	Email     *string `json:"email"`
}

func profileOf(id string, u User) Profile {
	return Profile{ID: id, FirstName: u.FirstName, LastName: u.LastName, Age: u.Age, Email: u.Email}
}

// page is the body of GET /profiles. Next is the cursor for the following
// page (pass it as after), empty on the last page.
type page struct {
	Items []Profile `json:"items"`
	Next  string    `json:"next"`
}

// badInput is a 400: the field at fault and what is wrong with it.
type badInput struct{ field, msg string }

func (e *badInput) Error() string { return e.field + ": " + e.msg }

func bad(field, format string, args ...any) *badInput {
	return &badInput{field: field, msg: fmt.Sprintf(format, args...)}
}

func writeBad(w http.ResponseWriter, e *badInput) {
	writeJSON(w, http.StatusBadRequest, errorBody{Error: e.Error(), Field: e.field})
}

// pathID returns the {id} of the request, checked.
func pathID(r *http.Request) (string, *badInput) {
	id := r.PathValue("id")
	switch {
	case id == "":
		return "", bad("id", "must not be empty (PUT, GET or DELETE /profiles/{id})")
	case len(id) > MaxIDBytes:
		return "", bad("id", "is %d bytes long; at most %d allowed", len(id), MaxIDBytes)
	case !utf8.ValidString(id):
		return "", bad("id", "must be valid UTF-8")
	}
	return id, nil
}

// readyID begins a handler of /profiles/{id}: the ready state and the
// checked id, or false having answered (503 while the store restores, 400
// for a bad id).
func (a *API) readyID(w http.ResponseWriter, r *http.Request) (*readyState, string, bool) {
	st := a.ready(w)
	if st == nil {
		return nil, "", false
	}
	id, e := pathID(r)
	if e != nil {
		writeBad(w, e)
		return nil, "", false
	}
	return st, id, true
}

// keyRequest begins a GET or DELETE of /profiles/{id} (readyID), parses
// its read gate (gate; ?consistent= only if consistentOK, a barrier on the
// key) and, in partitioned mode, sends a key this instance does not serve
// to its owner (route). It returns the gate narrowed to the key's partition
// (localGate), or false having answered.
func (a *API) keyRequest(w http.ResponseWriter, r *http.Request, consistentOK bool) (*readyState, string, readGate, bool) {
	st, id, ok := a.readyID(w, r)
	if !ok {
		return nil, "", readGate{}, false
	}
	g, ok := gate(w, r, consistentOK, id)
	if !ok {
		return nil, "", readGate{}, false
	}
	p, routed := a.route(w, r, st, id)
	if routed {
		return nil, "", readGate{}, false
	}
	return st, id, a.localGate(st, g, []int32{p}), true
}

// readFailed answers a store read that failed: forwarded or 503 where this
// instance does not serve the key (notServed), else as storeError.
func (a *API) readFailed(w http.ResponseWriter, r *http.Request, st *readyState, op, id string, err error) {
	if !a.notServed(w, r, st, err) {
		a.storeError(w, r, op, id, err)
	}
}

// notFound answers 404 for profile id.
func notFound(w http.ResponseWriter, id string) {
	writeJSON(w, http.StatusNotFound, errorBody{Error: fmt.Sprintf("profile %q not found", id)})
}

func (a *API) putProfile(w http.ResponseWriter, r *http.Request) {
	st, id, ok := a.readyID(w, r)
	if !ok {
		return
	}
	s := st.store
	u, e := decodeUser(w, r)
	if e != nil {
		writeBad(w, e)
		return
	}
	pos, err := s.Put(r.Context(), id, u)
	if err != nil {
		a.storeError(w, r, "put", id, err)
		return
	}
	setPosition(w, pos)
	writeJSON(w, http.StatusOK, profileOf(id, u))
}

// getProfile serves GET /profiles/{id}[?consistent=true]: with
// consistent=true, after a read barrier on the key's partition. In
// partitioned mode a key this instance does not serve goes to its owner
// (route).
func (a *API) getProfile(w http.ResponseWriter, r *http.Request) {
	st, id, g, ok := a.keyRequest(w, r, true)
	if !ok {
		return
	}
	s := st.store
	if a.pass(w, r, s, g) != nil {
		return
	}
	u, ok, err := s.Get(r.Context(), id)
	switch {
	case err != nil:
		a.readFailed(w, r, st, "get", id, err)
	case !ok:
		notFound(w, id)
	default:
		writeJSON(w, http.StatusOK, profileOf(id, u))
	}
}

// deleteProfile serves DELETE /profiles/{id}: once this instance has
// applied the request's Kvstore-Position (if any), it runs a read barrier on
// the key's partition (Store.Sync) and answers 404, writing nothing, only
// when that consistent read finds no profile. Otherwise, found or not known
// (the barrier failed, or ran past ReadWait, which the token's wait and the
// barrier share), it writes a tombstone and
// answers 204 with the tombstone's Kvstore-Position: a DELETE never acts on
// a stale read of a write made through another instance. In partitioned
// mode a DELETE of a key this instance does not serve goes whole to the
// key's owner (route), which reads and writes as above.
func (a *API) deleteProfile(w http.ResponseWriter, r *http.Request) {
	st, id, g, ok := a.keyRequest(w, r, false)
	if !ok {
		return
	}
	s := st.store
	// The token's wait and the barrier share one ReadWait.
	ctx, cancel := a.waitContext(r)
	defer cancel()
	if a.passWithin(ctx, w, r, s, g) != nil {
		return
	}
	switch absent, err := a.consistentlyAbsent(ctx, r, s, id); {
	case err != nil:
		a.readFailed(w, r, st, "get", id, err)
		return
	case absent:
		notFound(w, id)
		return
	}
	pos, err := s.Delete(r.Context(), id)
	if err != nil {
		a.storeError(w, r, "delete", id, err)
		return
	}
	setPosition(w, pos)
	w.WriteHeader(http.StatusNoContent)
}

// consistentlyAbsent says whether a consistent read (a barrier on the
// key's partition under ctx, a waitContext of r, then Get) finds no
// profile id. A barrier that fails or times out says false: not known to
// be absent. Its error is the request's end (cancelled, shutdown) or Get's.
func (a *API) consistentlyAbsent(ctx context.Context, r *http.Request, s Store, id string) (bool, error) {
	if err := a.wait(ctx, r, s, waitBarrier, kvstore.Position{}, []string{id}); err != nil {
		if r.Context().Err() != nil || errors.Is(err, kvstore.ErrClosed) {
			return false, err
		}
		a.log.Warn("DELETE could not tell whether the profile exists; writing the tombstone", "id", id, "err", err)
		return false, nil
	}
	_, ok, err := s.Get(r.Context(), id)
	return !ok, err
}

// listProfiles serves GET /profiles?prefix=&limit=&after=&consistent=: up
// to limit profiles whose IDs start with prefix and sort after after, in
// byte order of IDs; with consistent=true, after a read barrier over every
// partition. In partitioned mode the page merges every owner's
// (listPartitioned).
func (a *API) listProfiles(w http.ResponseWriter, r *http.Request) {
	st := a.ready(w)
	if st == nil {
		return
	}
	s := st.store
	q := r.URL.Query()
	limit := DefaultLimit
	if v := q.Get("limit"); v != "" || q.Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			writeBad(w, bad("limit", "must be a whole number from 1 to %d, got %q", MaxLimit, v))
			return
		}
		limit = n
	}
	g, ok := gate(w, r, true)
	if !ok {
		return
	}
	if st.partitioned {
		a.listPartitioned(w, r, st, g, q.Get("prefix"), q.Get("after"), limit)
		return
	}
	if a.pass(w, r, s, g) != nil {
		return
	}
	out, err := scanPage(r.Context(), s, q.Get("prefix"), q.Get("after"), limit)
	if err != nil {
		a.storeError(w, r, "scan", q.Get("prefix"), err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// scanPage reads up to limit profiles whose IDs start with prefix and sort
// after after (if not empty), and sets next when more follow.
func scanPage(ctx context.Context, s Store, prefix, after string, limit int) (page, error) {
	var opts []kvstore.ScanOption
	if after != "" {
		opts = append(opts, kvstore.After(after))
	}
	out := page{Items: []Profile{}}
	// Read one more than the page holds, to know whether a next page exists.
	for e, err := range s.Scan(ctx, prefix, opts...) {
		if err != nil {
			return page{}, err
		}
		if len(out.Items) == limit {
			out.Next = out.Items[limit-1].ID
			break
		}
		out.Items = append(out.Items, profileOf(e.Key, e.Value))
	}
	return out, nil
}

// storeError answers for a store call that failed.
func (a *API) storeError(w http.ResponseWriter, r *http.Request, op, id string, err error) {
	switch {
	case errors.Is(err, kvstore.ErrInvalidValue):
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error(), Field: "body"})
	case errors.Is(err, kvstore.ErrClosed):
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the service is shutting down"})
	case errors.Is(err, kvstore.ErrDeliveryTimeout):
		a.log.Warn("the broker did not acknowledge a write in time", "op", op, "id", id, "err", err)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the broker did not acknowledge the write in time; it may or may not have been stored, retry it"})
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		a.log.Warn("store call ended with its request", "op", op, "id", id, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the request was cancelled or timed out before the store answered"})
	default:
		a.log.Error("store call failed", "op", op, "id", id, "method", r.Method, "path", r.URL.Path, "err", err)
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "internal error; see the service log"})
	}
}

var profileFields = []string{"first_name", "last_name", "age", "email"}

// decodeUser reads and checks a PUT body: one JSON object with first_name,
// last_name (strings) and age (an integer that fits 32 bits), email (a
// string or null) optional, and nothing else. Field names match exactly:
// encoding/json would match "First_Name" to first_name, so the object is
// decoded into a map and its keys checked, where DisallowUnknownFields on a
// struct would let such keys through.
func decodeUser(w http.ResponseWriter, r *http.Request) (User, *badInput) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return User{}, bad("body", "larger than %d bytes (1 MiB)", MaxBodyBytes)
		}
		return User{}, bad("body", "could not be read: %v", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return User{}, bad("body", "empty; want a JSON object with first_name, last_name, age and optionally email")
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&fields); err != nil {
		if se, ok := errors.AsType[*json.SyntaxError](err); ok {
			return User{}, bad("body", "malformed JSON at byte %d: %v", se.Offset, se)
		}
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return User{}, bad("body", "must be a JSON object, not %s", te.Value)
		}
		return User{}, bad("body", "malformed JSON: %v", err)
	}
	if fields == nil {
		return User{}, bad("body", "must be a JSON object, not null")
	}
	if _, err := dec.Token(); err != io.EOF {
		return User{}, bad("body", "must hold one JSON object and nothing after it")
	}
	var unknown []string
	for k := range fields {
		if !slices.Contains(profileFields, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return User{}, bad(unknown[0], "unknown field (allowed: first_name, last_name, age, email)")
	}

	var u User
	var e *badInput
	if u.FirstName, e = requiredString(fields, "first_name"); e != nil {
		return User{}, e
	}
	if u.LastName, e = requiredString(fields, "last_name"); e != nil {
		return User{}, e
	}
	if u.Age, e = requiredInt32(fields, "age"); e != nil {
		return User{}, e
	}
	if raw, ok := fields["email"]; ok && string(raw) != "null" {
		if raw[0] != '"' {
			return User{}, bad("email", "must be a string or null")
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return User{}, bad("email", "must be a string or null")
		}
		u.Email = &s
	}
	return u, nil
}

func requiredString(fields map[string]json.RawMessage, name string) (string, *badInput) {
	raw, ok := fields[name]
	if !ok {
		return "", bad(name, "required")
	}
	if raw[0] != '"' {
		return "", bad(name, "must be a string, not %s", jsonKind(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", bad(name, "must be a string")
	}
	return s, nil
}

func requiredInt32(fields map[string]json.RawMessage, name string) (int32, *badInput) {
	raw, ok := fields[name]
	if !ok {
		return 0, bad(name, "required")
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, bad(name, "must be an integer, not %s", jsonKind(raw))
	}
	outside := bad(name, "must be an integer from %d to %d, got %s", math.MinInt32, math.MaxInt32, raw)
	n, err := strconv.ParseInt(string(raw), 10, 32)
	if err == nil {
		return int32(n), nil
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, outside
	}
	// 30.0 or 3e1: accept a whole number written another way.
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) {
		return 0, bad(name, "must be a whole number, got %s", raw)
	}
	if f < math.MinInt32 || f > math.MaxInt32 {
		return 0, outside
	}
	return int32(f), nil
}

// jsonKind names the JSON type of a valid JSON value.
func jsonKind(raw json.RawMessage) string {
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
