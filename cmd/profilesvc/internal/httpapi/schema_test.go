package httpapi_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/testdata"
)

func TestTheServiceSchemaIsTheTestsUserSchema(t *testing.T) {
	require.Equal(t, testdata.UserV2Schema, httpapi.UserSchema,
		"cmd/profilesvc/internal/httpapi/user.avsc and testdata/user-v2.avsc drifted apart")
}
