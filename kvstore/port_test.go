//go:build linux || darwin

package kvstore_test

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// heldPort is a loopback port a test keeps for itself from start to end,
// whether or not anything listens on it: an address a broker can stop
// serving and serve again, that refuses connections in between, and that no
// other program can take meanwhile.
//
// It holds a socket bound to the port with SO_REUSEPORT that never listens:
// the kernel refuses connections to a port nobody listens on, and lets a
// second socket bind the port only if that one sets SO_REUSEPORT too and
// belongs to the same user; listen opens such a socket. (Closing a listener
// and listening again on its port number instead leaves the port free in
// between, for any program to take.)
type heldPort struct {
	addr string
}

func holdPort(t *testing.T) *heldPort {
	t.Helper()
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	require.NoError(t, err, "socket")
	t.Cleanup(func() { syscall.Close(fd) })
	require.NoError(t, syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1))
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	return &heldPort{addr: (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()}
}

// listen returns a listener on the held port, to hand to a server that
// closes it when it stops.
func (p *heldPort) listen(t *testing.T) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", p.addr)
	require.NoError(t, err)
	return ln
}
