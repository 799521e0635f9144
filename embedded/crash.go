package embedded

import (
	"context"
	"errors"
	"net"
	"sync"
)

// ErrCut is the error of a dial through a Crasher after Crash.
var ErrCut = errors.New("embedded: connections cut (simulated crash)")

// Crasher is a dialer for Kafka clients (kgo.Dialer(c.DialContext)) that
// simulates the crash of the process using it: until Crash it dials as
// net.Dialer does; Crash closes every connection it made and refuses new
// ones. To the brokers the process then looks killed (kill -9): no more
// heartbeats, no leave. Its zero value is ready to use; it is safe for
// concurrent use.
type Crasher struct {
	mu      sync.Mutex
	crashed bool
	conns   []net.Conn
}

// DialContext dials network address host, unless Crash was called.
func (c *Crasher) DialContext(ctx context.Context, network, host string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed {
		return nil, ErrCut
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

// Crash closes every connection made so far and refuses new ones.
func (c *Crasher) Crash() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crashed = true
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}
