package serde_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

func versions(t *testing.T, rc *sr.Client, subject string) []int {
	t.Helper()
	vs, err := rc.SubjectVersions(context.Background(), subject)
	if err != nil {
		return nil
	}
	return vs
}

// A v1 reader meeting a record written with a schema that dropped its
// required field is told which field, which writer schema and why, and the
// error is not "unknown schema": the registry has the schema.
func TestAnUnresolvableWriterSchemaIsReportedWithItsCause(t *testing.T) {
	ctx := context.Background()
	_, rc := fakeRegistry(t)
	v1, err := serde.New[testdata.UserV1](ctx, rc, "users-value", testdata.UserV1Schema, sr.CompatNone)
	require.NoError(t, err)
	v2, err := serde.New[testdata.UserNoAge](ctx, rc, "users-value", testdata.UserNoAgeSchema, sr.CompatNone)
	require.NoError(t, err)
	b, err := v2.Encode(testdata.UserNoAge{FirstName: "Ada", LastName: "Lovelace"})
	require.NoError(t, err)

	var u testdata.UserV1
	err = v1.Decode(ctx, b, &u)
	require.ErrorIs(t, err, serde.ErrUnresolvableSchema)
	require.NotErrorIs(t, err, serde.ErrUnknownSchema)
	require.NotErrorIs(t, err, serde.ErrRegistryUnavailable)
	require.ErrorContains(t, err, fmt.Sprintf("reader field age has no default and writer schema %d lacks it", v2.ID()))
	var se *serde.SchemaError
	require.ErrorAs(t, err, &se)
	require.Equal(t, v2.ID(), se.ID)
	require.Equal(t, err.Error(), v1.Check(ctx, b).Error(), "Check says the same")

	// A nested field is named by its path.
	nested := func(inner string) string {
		return `{"type":"record","name":"Outer","fields":[{"name":"home","type":` +
			`{"type":"record","name":"Place","fields":[` + inner + `]}}]}`
	}
	type place struct {
		City string `avro:"city"`
		Zip  int32  `avro:"zip"`
	}
	type outer struct {
		Home place `avro:"home"`
	}
	type placeNoZip struct {
		City string `avro:"city"`
	}
	type outerNoZip struct {
		Home placeNoZip `avro:"home"`
	}
	o1, err := serde.New[outer](ctx, rc, "outer-value", nested(`{"name":"city","type":"string"},{"name":"zip","type":"int"}`), sr.CompatNone)
	require.NoError(t, err)
	o2, err := serde.New[outerNoZip](ctx, rc, "outer-value", nested(`{"name":"city","type":"string"}`), sr.CompatNone)
	require.NoError(t, err)
	b, err = o2.Encode(outerNoZip{Home: placeNoZip{City: "Oslo"}})
	require.NoError(t, err)
	var o outer
	err = o1.Decode(ctx, b, &o)
	require.ErrorIs(t, err, serde.ErrUnresolvableSchema)
	require.ErrorContains(t, err, fmt.Sprintf("reader field home.zip has no default and writer schema %d lacks it", o2.ID()))
}

// FULL_TRANSITIVE refuses what BACKWARD lets through: a new version without
// a field the old readers need.
func TestFullTransitiveRefusesDroppingARequiredField(t *testing.T) {
	ctx := context.Background()
	_, rc := fakeRegistry(t, srfake.WithGlobalCompat(sr.CompatNone))
	_, err := serde.New[testdata.UserV1](ctx, rc, "users-value", testdata.UserV1Schema, sr.CompatFullTransitive)
	require.NoError(t, err)
	_, err = serde.New[testdata.User](ctx, rc, "users-value", testdata.UserV2Schema, sr.CompatFullTransitive)
	require.NoError(t, err, "adding a field with a default is fully compatible")

	_, err = serde.New[testdata.UserNoAge](ctx, rc, "users-value", testdata.UserNoAgeSchema, sr.CompatFullTransitive)
	require.ErrorIs(t, err, serde.ErrIncompatibleSchema)
	require.ErrorContains(t, err, "FULL_TRANSITIVE")
	require.ErrorContains(t, err, "reader field age has no default and the new schema lacks it")
	require.Equal(t, []int{1, 2}, versions(t, rc, "users-value"), "nothing more registered")

	_, err = serde.New[testdata.UserNoAge](ctx, rc, "users-value", testdata.UserNoAgeSchema, sr.CompatBackward)
	require.NoError(t, err, "BACKWARD lets it through")
}

// The registry's level for the subject, else its global one, applies when
// it is stricter than the library's.
func TestTheRegistrysOwnLevelAppliesWhenStricter(t *testing.T) {
	ctx := context.Background()
	_, rc := fakeRegistry(t, srfake.WithGlobalCompat(sr.CompatNone))
	_, err := serde.New[testdata.UserV1](ctx, rc, "users-value", testdata.UserV1Schema, sr.CompatNone)
	require.NoError(t, err)

	res := rc.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatForward}, "users-value")
	require.NoError(t, res[0].Err)
	_, err = serde.New[testdata.UserNoAge](ctx, rc, "users-value", testdata.UserNoAgeSchema, sr.CompatBackward)
	require.ErrorIs(t, err, serde.ErrIncompatibleSchema)
	require.ErrorContains(t, err, "(FULL)", "BACKWARD and the subject's FORWARD make FULL")

	require.NoError(t, rc.ResetCompatibility(ctx, "users-value")[0].Err)
	require.NoError(t, rc.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatForwardTransitive})[0].Err)
	_, err = serde.New[testdata.UserNoAge](ctx, rc, "users-value", testdata.UserNoAgeSchema, sr.CompatNone)
	require.ErrorIs(t, err, serde.ErrIncompatibleSchema, "the global level applies when the subject has none")
	require.ErrorContains(t, err, "(FORWARD_TRANSITIVE)")

	require.NoError(t, rc.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatNone})[0].Err)
	_, err = serde.New[testdata.UserNoAge](ctx, rc, "users-value", testdata.UserNoAgeSchema, sr.CompatNone)
	require.NoError(t, err, "NONE with NONE checks nothing")
}

// A registry without any level (404) leaves the library's; one that fails to
// answer (a 5xx, an auth failure) stops New before it registers anything.
func TestARegistryLevelThatCannotBeReadIsHandled(t *testing.T) {
	ctx := context.Background()
	reg, rc := fakeRegistry(t)
	_, err := serde.New[testdata.UserV1](ctx, rc, "users-value", testdata.UserV1Schema, sr.CompatNone)
	require.NoError(t, err)

	status := http.StatusNotFound
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/config") {
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error_code":%d,"message":"no"}`, status*100+1)
			return true
		}
		return false
	})
	_, err = serde.New[testdata.UserNoAge](ctx, rc, "users-value", testdata.UserNoAgeSchema, sr.CompatFullTransitive)
	require.ErrorIs(t, err, serde.ErrIncompatibleSchema, "404: the library's level")

	for _, status = range []int{http.StatusInternalServerError, http.StatusForbidden} {
		_, err = serde.New[testdata.UserNoAge](ctx, rc, "users-value", testdata.UserNoAgeSchema, sr.CompatNone)
		require.ErrorIs(t, err, serde.ErrRegistryUnavailable, "HTTP %d", status)
		require.ErrorContains(t, err, `read the compatibility level of subject "users-value"`)
		require.Equal(t, []int{1}, versions(t, rc, "users-value"), "nothing registered")
	}

	status = http.StatusNotFound
	_, err = serde.New[testdata.UserNoAge](ctx, rc, "users-value", testdata.UserNoAgeSchema, sr.CompatNone)
	require.NoError(t, err, "404 with the library's NONE: no check")
}

// A registry that enforces its own level and refuses the schema (HTTP 409)
// is reported as ErrIncompatibleSchema too.
func TestASchemaTheRegistryRefusesIsIncompatible(t *testing.T) {
	ctx := context.Background()
	reg, rc := fakeRegistry(t, srfake.WithGlobalCompat(sr.CompatNone))
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/versions") {
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"error_code":409,"message":"Schema being registered is incompatible"}`)
			return true
		}
		return false
	})
	_, err := serde.New[testdata.UserV1](ctx, rc, "users-value", testdata.UserV1Schema, sr.CompatNone)
	require.ErrorIs(t, err, serde.ErrIncompatibleSchema)
	require.ErrorContains(t, err, "incompatible")
}
