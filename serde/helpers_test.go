package serde_test

import (
	"net/http/httptest"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// fakeRegistry returns a fresh in-memory registry and a client of it.
func fakeRegistry(tb testing.TB, opts ...srfake.Option) (*srfake.Registry, *sr.Client) {
	tb.Helper()
	reg := srfake.NewRegistry(opts...)
	srv := httptest.NewServer(reg.Handler())
	tb.Cleanup(srv.Close)
	rc, err := sr.NewClient(sr.URLs(srv.URL))
	if err != nil {
		tb.Fatal(err)
	}
	return reg, rc
}

// registry returns a client of a fresh in-memory registry.
func registry(tb testing.TB) *sr.Client {
	tb.Helper()
	_, rc := fakeRegistry(tb)
	return rc
}
