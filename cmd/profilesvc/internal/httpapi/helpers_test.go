package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
)

// The helpers the tests of this package share: an in-process broker and
// registry, stores of profiles on it, a ready API, and requests to it.

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// startCluster starts a fresh in-process broker and registry, closed at
// the end of the test.
func startCluster(tb testing.TB) *embedded.Cluster {
	tb.Helper()
	c, err := embedded.Start()
	require.NoError(tb, err)
	tb.Cleanup(c.Close)
	return c
}

// storeOpts are the options of a store of profiles on c whose cache is in
// dir, then more.
func storeOpts(c *embedded.Cluster, dir string, more ...kvstore.Option) []kvstore.Option {
	return append([]kvstore.Option{kvstore.Brokers(c.Brokers()...), kvstore.Registry(c.RegistryURL()),
		kvstore.ValueSchema(httpapi.UserSchema), kvstore.Dir(dir)}, more...)
}

// openStore opens a store of topic on c with its cache in dir, closed at
// the end of the test.
func openStore(t *testing.T, c *embedded.Cluster, topic, dir string, more ...kvstore.Option) *kvstore.Store[httpapi.User] {
	t.Helper()
	s, err := kvstore.Open[httpapi.User](ctxT(t), topic, storeOpts(c, dir, more...)...)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// newStore opens a store on a fresh in-process broker and registry, and
// returns it with the path of its cache file.
func newStore(t *testing.T) (*kvstore.Store[httpapi.User], string) {
	t.Helper()
	dir := t.TempDir()
	return openStore(t, startCluster(t), "profiles", dir), filepath.Join(dir, "profiles.db")
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// servingAPI returns an API ready with s, restored in mode, and its
// handler.
func servingAPI(s httpapi.Store, mode string, opts ...httpapi.Option) (*httpapi.API, http.Handler) {
	api := httpapi.New(discard(), "", opts...)
	api.SetReady(s, kvstore.RestoreStats{Mode: mode})
	return api, api.Handler()
}

type result struct {
	code   int
	header http.Header
	body   map[string]any
	raw    string
}

func call(t *testing.T, h http.Handler, method, target, body string) result {
	t.Helper()
	return callWith(t, h, method, target, body, nil)
}

// callWith is call with extra request headers (each value added, so a
// header may repeat).
func callWith(t *testing.T, h http.Handler, method, target, body string, header http.Header) result {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := result{code: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if rec.Header().Get("Content-Type") == "application/json" {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &r.body), "body %q", rec.Body.String())
	}
	return r
}

func tokenHeader(tokens ...string) http.Header {
	return http.Header{httpapi.PositionHeader: tokens}
}

// listAll pages through GET /profiles?prefix= with limit, following next
// until it is empty, and returns the IDs in the order listed and the
// number of pages. Every page but the last must be full.
func listAll(t *testing.T, h http.Handler, prefix string, limit int) (ids []string, pages int) {
	t.Helper()
	after := ""
	for {
		r := call(t, h, "GET", fmt.Sprintf("/profiles?prefix=%s&limit=%d&after=%s", prefix, limit, after), "")
		require.Equal(t, 200, r.code, r.raw)
		pages++
		for _, it := range r.body["items"].([]any) {
			ids = append(ids, it.(map[string]any)["id"].(string))
		}
		if after = r.body["next"].(string); after == "" {
			return ids, pages
		}
		require.Len(t, r.body["items"], limit)
	}
}
