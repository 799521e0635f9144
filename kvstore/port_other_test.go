//go:build !(linux || darwin)

package kvstore_test

import (
	"net"
	"testing"
)

// heldPort needs SO_REUSEPORT's semantics (port_test.go); elsewhere the
// tests that stop and restart a broker on one address are skipped.
type heldPort struct {
	addr string
}

func holdPort(t *testing.T) *heldPort {
	t.Skip("holding a port across a broker restart needs SO_REUSEPORT (linux, darwin)")
	return nil
}

func (p *heldPort) listen(t *testing.T) net.Listener { return nil }
