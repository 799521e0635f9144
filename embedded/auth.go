package embedded

import (
	"encoding/base64"

	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// RegistryBasicAuth makes the registry refuse every request that does not
// carry HTTP basic auth with user and pass (401 without credentials, 403
// with others). Default: no auth.
func RegistryBasicAuth(user, pass string) Option {
	v := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	return optFn(func(c *config) {
		c.registryOpts = append(c.registryOpts, srfake.WithAuth(v))
		c.registryAuth = v
	})
}

// RegistryBearerToken makes the registry refuse every request that does not
// carry "Authorization: Bearer <token>". Default: no auth.
func RegistryBearerToken(token string) Option {
	return optFn(func(c *config) {
		c.registryOpts = append(c.registryOpts, srfake.WithAuth("Bearer "+token))
		c.registryAuth = "Bearer " + token
	})
}
