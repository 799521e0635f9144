package kvstore

import (
	"crypto/tls"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/pkg/sr"
)

// Security options. Each one passes its credentials straight to franz-go
// (kgo, for the producer, the consumer and the admin client) or to the
// schema registry client (sr); the store keeps no other copy and never logs
// them or puts them in an error. They are sugar over WithKgoOpts and
// WithRegistryOpts, which remain for everything else (OAUTHBEARER, AWS
// MSK IAM, custom dialers).

// TLS encrypts the connections to the brokers with cfg (a copy is taken;
// a nil cfg means the system roots and the broker's host name). Combine it
// with a SASL option for SASL_SSL. Default: plaintext.
func TLS(cfg *tls.Config) Option {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c := cfg.Clone()
	return optFn(func(o *config) { o.kgoOpts = append(o.kgoOpts, kgo.DialTLSConfig(c)) })
}

// SASLPlain authenticates to the brokers with SASL/PLAIN. PLAIN sends the
// password as it is: use it only over TLS. Default: no SASL.
func SASLPlain(user, pass string) Option {
	m := plain.Auth{User: user, Pass: pass}.AsMechanism()
	return optFn(func(o *config) { o.kgoOpts = append(o.kgoOpts, kgo.SASL(m)) })
}

// SASLScram256 authenticates to the brokers with SASL/SCRAM-SHA-256.
// Default: no SASL.
func SASLScram256(user, pass string) Option {
	m := scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	return optFn(func(o *config) { o.kgoOpts = append(o.kgoOpts, kgo.SASL(m)) })
}

// SASLScram512 authenticates to the brokers with SASL/SCRAM-SHA-512.
// Default: no SASL.
func SASLScram512(user, pass string) Option {
	m := scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	return optFn(func(o *config) { o.kgoOpts = append(o.kgoOpts, kgo.SASL(m)) })
}

// RegistryBasicAuth authenticates to the schema registry with HTTP basic
// auth (Confluent Cloud: the API key and secret). Default: none.
func RegistryBasicAuth(user, pass string) Option {
	return optFn(func(o *config) { o.srOpts = append(o.srOpts, sr.BasicAuth(user, pass)) })
}

// RegistryBearerToken authenticates to the schema registry with an
// "Authorization: Bearer <token>" header. Default: none.
func RegistryBearerToken(token string) Option {
	return optFn(func(o *config) { o.srOpts = append(o.srOpts, sr.BearerToken(token)) })
}

// RegistryTLS sets the TLS configuration of the schema registry client
// (a copy is taken), for a registry with a private CA or client
// certificates. An https:// registry URL without it uses the system roots.
func RegistryTLS(cfg *tls.Config) Option {
	c := cfg.Clone()
	return optFn(func(o *config) { o.srOpts = append(o.srOpts, sr.DialTLSConfig(c)) })
}
