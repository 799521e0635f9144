package kvstore_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

// selfSigned returns a server certificate for 127.0.0.1 and a client
// config that trusts it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "compactkv test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// requireNoSecret fails if secret shows in any of the texts.
func requireNoSecret(t *testing.T, secret string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		require.NotContains(t, s, secret, "a secret leaked")
	}
}

// Credentials go to franz-go through KafkaOpts, spelled as its doc shows.
func TestSASLAndTLSConnectAndAWrongPasswordFailsWithoutLeakingIt(t *testing.T) {
	const user = "alice"
	mechs := []struct {
		name string
		mech func(user, pass string) sasl.Mechanism
	}{
		{"PLAIN", func(u, p string) sasl.Mechanism { return plain.Auth{User: u, Pass: p}.AsMechanism() }},
		{"SCRAM-SHA-256", func(u, p string) sasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha256Mechanism() }},
		{"SCRAM-SHA-512", func(u, p string) sasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha512Mechanism() }},
	}
	for _, m := range mechs {
		for _, withTLS := range []bool{false, true} {
			name := m.name
			if withTLS {
				name += "+TLS"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel() // each has its own broker; the wrong-password wait dominates
				pass := "pw-" + strings.ToLower(m.name) + "-7f3a91c2"
				kopts := []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(m.name, user, pass)}
				var client *tls.Config
				if withTLS {
					var server *tls.Config
					server, client = selfSigned(t)
					kopts = append(kopts, kfake.TLS(server))
				}
				c, err := embedded.Start(embedded.KfakeOpts(kopts...))
				require.NoError(t, err)
				defer c.Close()
				log, logs := captureLogs()
				opts := func(pass string) []kvstore.Option {
					kopts := []kgo.Opt{kgo.SASL(m.mech(user, pass))}
					if withTLS {
						kopts = append(kopts, kgo.DialTLSConfig(client))
					}
					return []kvstore.Option{kvstore.Brokers(c.Brokers()...), kvstore.Registry(c.RegistryURL()),
						kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(t.TempDir()), kvstore.Logger(log),
						kvstore.KafkaOpts(kopts...)}
				}
				ctx := ctxT(t)
				s, err := kvstore.Open[User](ctx, "secure", opts(pass)...)
				require.NoError(t, err)
				acked(t)(s.Put(ctx, "k", User{FirstName: "authenticated"}))
				got, ok, err := s.Get(ctx, "k")
				require.NoError(t, err)
				require.True(t, ok)
				require.Equal(t, "authenticated", got.FirstName)
				require.NoError(t, s.Close())

				// A wrong password fails Open within its ctx. kfake drops the
				// connection on a failed SASL exchange (a real broker answers
				// SASL_AUTHENTICATION_FAILED, which kgo does not retry), so
				// here the store only sees its ctx end.
				wrong := "wrong-" + pass
				octx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
				defer cancel()
				began := time.Now()
				_, err = kvstore.Open[User](octx, "secure", opts(wrong)...)
				require.Error(t, err)
				require.Less(t, time.Since(began), 5*time.Second)
				require.Contains(t, err.Error(), `kvstore: open "secure"`)
				t.Logf("wrong password: %v", err)
				requireNoSecret(t, pass, err.Error(), logs.String())
				requireNoSecret(t, wrong, err.Error(), logs.String())
				requireNoSecret(t, pass, fmt.Sprintf("%+v %#v", err, err))
			})
		}
	}
}

// Credentials go to the registry client through RegistryOpts, spelled as
// its doc shows.
func TestRegistryAuthAndAWrongSecretFailsWithoutLeakingIt(t *testing.T) {
	cases := []struct {
		name         string
		server       embedded.Option
		right, bad   kvstore.Option
		secret, bad2 string
	}{
		{"basic", embedded.RegistryBasicAuth("reg-user", "reg-pass-51d0e8"),
			kvstore.RegistryOpts(sr.BasicAuth("reg-user", "reg-pass-51d0e8")),
			kvstore.RegistryOpts(sr.BasicAuth("reg-user", "nope-reg-pass-51d0e8")),
			"reg-pass-51d0e8", "nope-reg-pass-51d0e8"},
		{"bearer", embedded.RegistryBearerToken("tok-9b2e44aa"),
			kvstore.RegistryOpts(sr.BearerToken("tok-9b2e44aa")), kvstore.RegistryOpts(sr.BearerToken("tok-bad-0000")),
			"tok-9b2e44aa", "tok-bad-0000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, err := embedded.Start(c.server)
			require.NoError(t, err)
			defer cl.Close()
			log, logs := captureLogs()
			opts := func(extra ...kvstore.Option) []kvstore.Option {
				return append([]kvstore.Option{kvstore.Brokers(cl.Brokers()...), kvstore.Registry(cl.RegistryURL()),
					kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(t.TempDir()), kvstore.Logger(log)}, extra...)
			}
			ctx := ctxT(t)
			s, err := kvstore.Open[User](ctx, "reg", opts(c.right)...)
			require.NoError(t, err)
			acked(t)(s.Put(ctx, "k", User{FirstName: "ok"}))
			require.NoError(t, s.Close())

			_, err = kvstore.Open[User](ctx, "reg", opts()...)
			require.Error(t, err)
			require.Contains(t, err.Error(), "Missing Authorization header")
			_, err = kvstore.Open[User](ctx, "reg", opts(c.bad)...)
			require.Error(t, err)
			require.Contains(t, err.Error(), "not authorized")
			t.Logf("wrong registry secret: %v", err)
			requireNoSecret(t, c.secret, err.Error(), logs.String())
			requireNoSecret(t, c.bad2, err.Error(), logs.String())
		})
	}
}
