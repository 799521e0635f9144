package embedded_test

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/embedded"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

func TestAHandedKafkaListenerServesTheBrokerAndClosesWithIt(t *testing.T) {
	ln := listen(t)
	c, err := embedded.Start(embedded.KafkaListener(ln))
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, []string{ln.Addr().String()}, c.Brokers())

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...))
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.Ping(ctxT(t)), "the broker answers on the handed listener")

	c.Close()
	_, err = ln.Accept()
	require.ErrorIs(t, err, net.ErrClosed, "Close closes the handed listener")
}

func TestAStartThatFailsClosesTheHandedKafkaListener(t *testing.T) {
	for name, opt := range map[string]embedded.Option{
		"a second broker": embedded.KfakeOpts(kfake.NumBrokers(2)),
		"a registry address that cannot be listened on": embedded.RegistryAddr("127.0.0.1:-1"),
	} {
		t.Run(name, func(t *testing.T) {
			ln := listen(t)
			_, err := embedded.Start(embedded.KafkaListener(ln), opt)
			require.Error(t, err)
			_, err = ln.Accept()
			require.ErrorIs(t, err, net.ErrClosed)
		})
	}
}
