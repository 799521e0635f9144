package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compactkv/compactkv/kvstore"
)

// Partitioned mode's routing: see the package doc.

const (
	// ForwardedHeader marks a request one instance forwarded to another
	// (partitioned mode). An instance answers such a request from the
	// partitions it owns only: it never forwards it again.
	ForwardedHeader = "Kvstore-Forwarded"
	// ForwardedToHeader is set on an answer that came from another
	// instance: the owner's address.
	ForwardedToHeader = "Kvstore-Forwarded-To"
	// PartitionsHeader is set on an instance's answer to a forwarded GET
	// /profiles: the partitions (comma-separated) the page covers, those
	// the instance owned throughout its scan.
	PartitionsHeader = "Kvstore-Partitions"
)

// DefaultForwardMargin is what ForwardTimeout's default adds to ReadWait.
const DefaultForwardMargin = 5 * time.Second

// ForwardTimeout bounds a request forwarded to a key's owner (partitioned
// mode), from sending it to reading the whole answer; past it the request
// answers 504 with Retry-After: 1. Default ReadWait plus DefaultForwardMargin (5s), so that the
// owner's own waits (a Kvstore-Position token, ?consistent=true) answer
// first; d <= 0 keeps the default.
func ForwardTimeout(d time.Duration) Option {
	return optFn(func(a *API) {
		if d > 0 {
			a.forwardTimeout = d
		}
	})
}

// route answers a request for key id that this instance does not serve
// (partitioned mode): it forwards it to the owner, or answers 503. It
// returns false, having answered nothing, when this instance serves id, and
// the partition of id.
func (a *API) route(w http.ResponseWriter, r *http.Request, st *readyState, id string) (int32, bool) {
	if !st.partitioned {
		return 0, false
	}
	p, owner, local := st.store.Owner(id)
	if local {
		return p, false
	}
	a.toOwner(w, r, st, p, owner)
	return p, true
}

// notServed answers for a store call that failed because this instance
// does not serve the key (kvstore.ErrNotServed: the partition moved
// since route, or is restoring): forwarded to the owner, or 503. It
// returns false, having answered nothing, for any other error.
func (a *API) notServed(w http.ResponseWriter, r *http.Request, st *readyState, err error) bool {
	if ne, ok := errors.AsType[*kvstore.NotOwnerError](err); ok {
		a.toOwner(w, r, st, ne.Partition, ne.Owner)
		return true
	}
	if errors.Is(err, kvstore.ErrNotServed) {
		retryLater(w, "this instance is still restoring the key's partition; retry")
		return true
	}
	return false
}

// toOwner forwards r to owner, the owner of partition p, unless there is
// none, it is this instance (still restoring p), or r was forwarded
// already: then it answers 503 with Retry-After.
func (a *API) toOwner(w http.ResponseWriter, r *http.Request, st *readyState, p int32, owner string) {
	switch {
	case owner == "":
		retryLater(w, fmt.Sprintf("partition %d has no owner right now (a rebalance is moving it); retry", p))
	case owner == st.self:
		retryLater(w, fmt.Sprintf("this instance is still restoring partition %d; retry", p))
	case r.Header.Get(ForwardedHeader) != "":
		a.m.forwarded("refused")
		retryLater(w, fmt.Sprintf("partition %d is not served by this instance, to which it was forwarded (it moved); retry", p))
	default:
		a.forward(w, r, owner)
	}
}

// retryLater answers 503 with Retry-After: 1.
func retryLater(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: msg})
}

// forward sends r (a GET or DELETE, without body) to owner and relays its
// answer.
func (a *API) forward(w http.ResponseWriter, r *http.Request, owner string) {
	resp, err := a.send(r, owner, r.URL.RequestURI())
	if err != nil {
		a.forwardError(w, r, owner, false, err)
		return
	}
	defer resp.Body.Close()
	relayHeaders(w.Header(), resp.Header)
	w.Header().Set(ForwardedToHeader, owner)
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil {
		a.log.Warn("relaying a forwarded answer", "owner", owner, "method", r.Method, "path", r.URL.Path, "err", err)
	}
}

// relayed are the headers of an owner's answer relayed to the client.
var relayed = []string{"Content-Type", "X-Content-Type-Options", "Retry-After", "Allow", PositionHeader}

func relayHeaders(dst, src http.Header) {
	for _, k := range relayed {
		if vs := src.Values(k); len(vs) > 0 {
			dst[http.CanonicalHeaderKey(k)] = slices.Clone(vs)
		}
	}
}

// send forwards r's method, its Kvstore-Position headers and
// ForwardedHeader to uri (a path and query) on owner, bounded by
// ForwardTimeout. The caller closes the answer's body, which the bound
// covers too; the answer's outcome is counted in the metrics.
func (a *API) send(r *http.Request, owner, uri string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(r.Context(), a.forwardTimeout)
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+owner+uri, nil)
	if err != nil {
		cancel()
		a.m.forwarded("failed")
		return nil, err
	}
	for _, v := range r.Header.Values(PositionHeader) {
		req.Header.Add(PositionHeader, v)
	}
	req.Header.Set(ForwardedHeader, "1")
	resp, err := a.client.Do(req)
	if err != nil {
		cancel()
		a.m.forwarded(forwardOutcome(r, err))
		return nil, err
	}
	a.m.forwarded("ok")
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// forwardOutcome is the outcome label of a forward that got no answer.
func forwardOutcome(r *http.Request, err error) string {
	switch {
	case r.Context().Err() != nil:
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "unreachable"
}

// forwardError answers for a forward that got no answer from owner: the
// key's owner, or for a listing (GET /profiles, which has no key) an owner
// asked for its page. An owner that cannot be reached is a 503, one that
// did not answer within ForwardTimeout (hung, say) a 504; both carry
// Retry-After: 1, since either ends once the owner's partitions move
// (within the session timeout) or it answers again. The failure is logged
// at Warn, at most once per owner per forwardWarnEvery (warnForward).
func (a *API) forwardError(w http.ResponseWriter, r *http.Request, owner string, listing bool, err error) {
	whose := fmt.Sprintf("the key's owner %s", owner)
	if listing {
		whose = fmt.Sprintf("owner %s, asked for its part of the listing,", owner)
	}
	switch forwardOutcome(r, err) {
	case "cancelled":
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the request was cancelled before " + whose + " answered"})
	case "timeout":
		msg := "the key's owner did not answer a forwarded request in time"
		if listing {
			msg = "an owner did not answer for its part of a listing in time"
		}
		a.warnForward(owner, msg, "owner", owner, "method", r.Method, "path", r.URL.Path, "timeout", a.forwardTimeout)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusGatewayTimeout, errorBody{Error: fmt.Sprintf("%s did not answer within %v; retry", whose, a.forwardTimeout)})
	default:
		msg := "cannot forward a request to the key's owner"
		if listing {
			msg = "cannot ask an owner for its part of a listing"
		}
		a.warnForward(owner, msg, "owner", owner, "method", r.Method, "path", r.URL.Path, "err", err)
		retryLater(w, fmt.Sprintf("%s cannot be reached (if it failed, its partitions move to another instance within the session timeout); retry", whose))
	}
}

// warnForward logs a failed forward to owner at Warn, unless one was
// logged for owner less than forwardWarnEvery ago: an owner that is down
// fails every request sent its way. The line says how many failures to
// owner went unlogged since the last one ("suppressed").
func (a *API) warnForward(owner, msg string, args ...any) {
	ok, suppressed := a.forwardWarns.allow(owner, time.Now())
	if !ok {
		return
	}
	a.log.Warn(msg, append(args, "suppressed", suppressed)...)
}

// localGate narrows g to the partitions this instance serves, in
// partitioned mode: a store waits only for partitions it follows (it would
// wait out ReadWait on any other), and the rest of a token is for the
// other owners. The narrowed token keeps its topic, so that the store
// still refuses a token of another topic. A barrier over no
// partition is dropped; over some, it runs on one key of each (keys).
func (a *API) localGate(st *readyState, g readGate, parts []int32) readGate {
	if !st.partitioned {
		return g
	}
	g.pos = g.pos.Only(parts...)
	if g.barrier && g.keys == nil {
		for _, p := range parts {
			if k, ok := st.keys[p]; ok {
				g.keys = append(g.keys, k)
			}
		}
		g.barrier = len(g.keys) > 0
	}
	return g
}

// partitionKeys returns a key of each of the topic's partitions, for a
// read barrier (Store.Sync) on partitions rather than keys.
func partitionKeys(s Store, partitions int) map[int32]string {
	out := make(map[int32]string, partitions)
	for i := 0; len(out) < partitions && i < 1024+256*partitions; i++ {
		k := "p" + strconv.Itoa(i)
		if p, _, _ := s.Owner(k); p >= 0 && int(p) < partitions {
			if _, ok := out[p]; !ok {
				out[p] = k
			}
		}
	}
	return out
}

// partial is one owner's part of a merged GET /profiles: its answer, and
// for a 200 its page and the partitions it covers.
type partial struct {
	owner  string // "" for this instance
	code   int
	header http.Header
	body   []byte
	page   page
	parts  []int32
}

// listPartitioned serves GET /profiles in partitioned mode. A forwarded
// request is answered from the partitions this instance owns; any other
// asks every owner (this instance included) for its page, with the same
// query and Kvstore-Position headers, and merges them in key order: the
// first limit items, and next when any owner has more. It answers 503
// while a partition has no owner, or when the pages together miss a
// partition (it moved while they were read); an owner's error answer is
// relayed.
func (a *API) listPartitioned(w http.ResponseWriter, r *http.Request, st *readyState, g readGate, prefix, after string, limit int) {
	if r.Header.Get(ForwardedHeader) != "" {
		a.listOwned(w, r, st, g, prefix, after, limit)
		return
	}
	stats := st.store.Stats()
	var owners []string
	for _, ps := range stats.Partitions {
		switch {
		case ps.Owner == "":
			retryLater(w, fmt.Sprintf("partition %d has no owner right now (a rebalance is moving it); retry", ps.Partition))
			return
		case ps.Owner != st.self && !slices.Contains(owners, ps.Owner):
			owners = append(owners, ps.Owner)
		}
	}
	slices.Sort(owners)
	parts := make([]partial, 1+len(owners))
	done := make(chan struct{})
	for i, owner := range owners {
		go func() {
			defer func() { done <- struct{}{} }()
			parts[i+1] = a.fetchPage(r, owner)
		}()
	}
	rec := &bufferedResponse{header: http.Header{}}
	a.listOwned(rec, r, st, g, prefix, after, limit)
	parts[0] = partial{code: rec.code, header: rec.header, body: rec.body.Bytes()}
	for range owners {
		<-done
	}

	covered := map[int32]bool{}
	var items []Profile
	more := false
	for i := range parts {
		pt := &parts[i]
		if pt.code == http.StatusOK {
			var err error
			if pt.parts, pt.page, err = decodePartial(pt.header, pt.body); err != nil {
				a.log.Warn("an owner's listing page cannot be read", "owner", pt.owner, "err", err)
				writeJSON(w, http.StatusBadGateway, errorBody{Error: fmt.Sprintf("the page of owner %s cannot be read: %v", pt.owner, err)})
				return
			}
		}
		if pt.code != http.StatusOK {
			relayHeaders(w.Header(), pt.header)
			if pt.owner != "" {
				w.Header().Set(ForwardedToHeader, pt.owner)
			}
			w.WriteHeader(pt.code)
			_, _ = w.Write(pt.body)
			return
		}
		for _, p := range pt.parts {
			covered[p] = true
		}
		items = append(items, pt.page.Items...)
		more = more || pt.page.Next != ""
	}
	for _, ps := range stats.Partitions {
		if !covered[ps.Partition] {
			retryLater(w, fmt.Sprintf("partition %d moved while the listing was read; retry", ps.Partition))
			return
		}
	}
	slices.SortFunc(items, func(x, y Profile) int { return strings.Compare(x.ID, y.ID) })
	// A key sits in one partition, unless a writer with another
	// partitioner put it in two: it is listed once.
	items = slices.CompactFunc(items, func(x, y Profile) bool { return x.ID == y.ID })
	out := page{Items: items}
	if n := min(limit, len(items)); n > 0 && (len(items) > limit || more) {
		out.Items, out.Next = items[:n], items[n-1].ID
	}
	if out.Items == nil {
		out.Items = []Profile{}
	}
	writeJSON(w, http.StatusOK, out)
}

// fetchPage asks owner for its page of r's listing.
func (a *API) fetchPage(r *http.Request, owner string) partial {
	pt := partial{owner: owner}
	resp, err := a.send(r, owner, r.URL.RequestURI())
	if err != nil {
		rec := &bufferedResponse{header: http.Header{}}
		a.forwardError(rec, r, owner, true, err)
		pt.code, pt.header, pt.body = rec.code, rec.header, rec.body.Bytes()
		return pt
	}
	defer resp.Body.Close()
	pt.code, pt.header = resp.StatusCode, resp.Header
	if pt.body, err = io.ReadAll(resp.Body); err != nil {
		rec := &bufferedResponse{header: http.Header{}}
		a.forwardError(rec, r, owner, true, err)
		pt.code, pt.header, pt.body = rec.code, rec.header, rec.body.Bytes()
	}
	return pt
}

// decodePartial reads a 200 answer to a forwarded GET /profiles.
func decodePartial(h http.Header, body []byte) ([]int32, page, error) {
	var pg page
	if err := json.Unmarshal(body, &pg); err != nil {
		return nil, page{}, err
	}
	parts, err := parsePartitions(h.Get(PartitionsHeader))
	return parts, pg, err
}

// listOwned answers a page of the partitions this instance owns: the
// request's token and barrier narrowed to them (localGate), then Scan. The
// answer's PartitionsHeader names the partitions owned both before and
// after the scan; 503 while one of them is still restoring.
func (a *API) listOwned(w http.ResponseWriter, r *http.Request, st *readyState, g readGate, prefix, after string, limit int) {
	s := st.store
	before := s.Stats().Owned()
	if a.pass(w, r, s, a.localGate(st, g, before)) != nil {
		return
	}
	out, err := scanPage(r.Context(), s, prefix, after, limit)
	if err != nil {
		a.readFailed(w, r, st, "scan", prefix, err)
		return
	}
	now := s.Stats().Owned()
	both := make([]string, 0, len(before))
	for _, p := range before {
		if slices.Contains(now, p) {
			both = append(both, strconv.Itoa(int(p)))
		}
	}
	w.Header().Set(PartitionsHeader, strings.Join(both, ","))
	writeJSON(w, http.StatusOK, out)
}

func parsePartitions(v string) ([]int32, error) {
	var out []int32
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a partition", PartitionsHeader, f)
		}
		out = append(out, int32(n))
	}
	return out, nil
}

// bufferedResponse is a ResponseWriter that keeps the answer.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	return b.body.Write(p)
}
