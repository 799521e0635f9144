package embedded_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

const otherAvsc = `{"type":"record","name":"Other","fields":[{"name":"x","type":"long"}]}`

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func start(t *testing.T, opts ...embedded.Option) *embedded.Cluster {
	t.Helper()
	c, err := embedded.Start(opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func srClient(t *testing.T, c *embedded.Cluster) *sr.Client {
	t.Helper()
	cl, err := sr.NewClient(sr.URLs(c.RegistryURL()))
	require.NoError(t, err)
	return cl
}

func avro(s string) sr.Schema { return sr.Schema{Schema: s, Type: sr.TypeAvro} }

func TestRegistrySchemaIDsSurviveRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "registry", "schemas.json")
	ctx := ctxT(t)

	c1 := start(t, embedded.RegistryFile(file))
	cl := srClient(t, c1)
	other, err := cl.CreateSchema(ctx, "other-value", avro(otherAvsc))
	require.NoError(t, err)
	v1, err := cl.CreateSchema(ctx, "users-value", avro(testdata.UserV1Schema))
	require.NoError(t, err)
	v2, err := cl.CreateSchema(ctx, "users-value", avro(testdata.UserV2Schema))
	require.NoError(t, err)
	// The same schema under a second subject shares its ID.
	shared, err := cl.CreateSchema(ctx, "copy-value", avro(testdata.UserV1Schema))
	require.NoError(t, err)
	require.Equal(t, v1.ID, shared.ID)
	// A soft-deleted version keeps its ID.
	require.NoError(t, cl.DeleteSchema(ctx, "other-value", other.Version, sr.SoftDelete))
	c1.Close()

	c2 := start(t, embedded.RegistryFile(file))
	cl = srClient(t, c2)
	for _, want := range []sr.SubjectSchema{other, v1, v2, shared} {
		got, err := cl.SchemaByID(ctx, want.ID)
		require.NoError(t, err, "schema ID %d", want.ID)
		require.JSONEq(t, want.Schema.Schema, got.Schema)
	}
	for _, want := range []sr.SubjectSchema{v1, v2, shared} {
		got, err := cl.SchemaByVersion(ctx, want.Subject, want.Version)
		require.NoError(t, err)
		require.Equal(t, want.ID, got.ID, "%s version %d", want.Subject, want.Version)
	}
	live, err := cl.SubjectVersions(ctx, "users-value")
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, live)
	_, err = cl.SchemaByVersion(ctx, "other-value", other.Version)
	require.Error(t, err, "the soft-deleted version is not live")
	deleted, err := cl.SchemaByVersion(sr.WithParams(ctx, sr.ShowDeleted), "other-value", other.Version)
	require.NoError(t, err)
	require.Equal(t, other.ID, deleted.ID)

	// Registering an existing schema returns its old ID; a new one gets a
	// fresh ID above every persisted one.
	again, err := cl.CreateSchema(ctx, "users-value", avro(testdata.UserV2Schema))
	require.NoError(t, err)
	require.Equal(t, v2.ID, again.ID)
	fresh, err := cl.CreateSchema(ctx, "fresh-value", avro(`{"type":"record","name":"Fresh","fields":[]}`))
	require.NoError(t, err)
	require.Greater(t, fresh.ID, v2.ID)
	c2.Close()

	// ... and that registration was persisted too.
	c3 := start(t, embedded.RegistryFile(file))
	got, err := srClient(t, c3).SchemaByVersion(ctx, "fresh-value", 1)
	require.NoError(t, err)
	require.Equal(t, fresh.ID, got.ID)
}

// A store's records carry the schema ID they were written with. After a
// restart of the broker and the registry, a store on an empty cache must
// still decode them, which needs the ID to name the same schema.
func TestStoreRecordsDecodeAfterClusterRestart(t *testing.T) {
	dir := t.TempDir()
	opts := []embedded.Option{
		embedded.DataDir(filepath.Join(dir, "kafka")),
		embedded.RegistryFile(filepath.Join(dir, "registry", "schemas.json")),
	}
	open := func(c *embedded.Cluster) *kvstore.Store[testdata.User] {
		s, err := kvstore.Open[testdata.User](ctxT(t), "people",
			kvstore.Brokers(c.Brokers()...), kvstore.Registry(c.RegistryURL()),
			kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(t.TempDir()))
		require.NoError(t, err)
		return s
	}

	c1, err := embedded.Start(opts...)
	require.NoError(t, err)
	// Take ID 1 first, so that the user schema's ID is one a fresh registry
	// would not give it again.
	_, err = srClient(t, c1).CreateSchema(ctxT(t), "other-value", avro(otherAvsc))
	require.NoError(t, err)
	s := open(c1)
	ada := testdata.User{FirstName: "Ada", LastName: "Lovelace", Age: 36}
	_, err = s.Put(ctxT(t), "u1", ada)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	c1.Close()

	c2 := start(t, opts...)
	s = open(c2)
	defer s.Close()
	require.Equal(t, "full", s.Stats().Restore.Mode)
	got, ok, err := s.Get(ctxT(t), "u1")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ada, got)
}

func writeRegistryFile(t *testing.T, body string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "schemas.json")
	require.NoError(t, os.WriteFile(file, []byte(body), 0o644))
	return file
}

func TestRegistryFileWithSharedIDSeedsWithoutPanic(t *testing.T) {
	// Two subjects with the same schema and ID, listed in an order that puts
	// the higher ID first: seeding must neither panic nor renumber.
	file := writeRegistryFile(t, `{"format":1,"schemas":[
		{"subject":"b-value","version":1,"id":7,"schema":`+quote(otherAvsc)+`},
		{"subject":"a-value","version":1,"id":3,"schema":`+quote(testdata.UserV1Schema)+`},
		{"subject":"b-value","version":2,"id":3,"schema":`+quote(testdata.UserV1Schema)+`}
	]}`)
	c := start(t, embedded.RegistryFile(file))
	cl := srClient(t, c)
	ctx := ctxT(t)
	for _, sv := range []struct {
		subject     string
		version, id int
	}{{"a-value", 1, 3}, {"b-value", 1, 7}, {"b-value", 2, 3}} {
		got, err := cl.SchemaByVersion(ctx, sv.subject, sv.version)
		require.NoError(t, err)
		require.Equal(t, sv.id, got.ID, "%s version %d", sv.subject, sv.version)
	}
	fresh, err := cl.CreateSchema(ctx, "c-value", avro(testdata.UserV2Schema))
	require.NoError(t, err)
	require.Equal(t, 8, fresh.ID)
}

func TestRegistryFileThatContradictsItselfFailsStart(t *testing.T) {
	for name, body := range map[string]string{
		"one ID, two schemas": `{"format":1,"schemas":[
			{"subject":"a-value","version":1,"id":1,"schema":` + quote(testdata.UserV1Schema) + `},
			{"subject":"b-value","version":1,"id":1,"schema":` + quote(otherAvsc) + `}]}`,
		"subject version twice": `{"format":1,"schemas":[
			{"subject":"a-value","version":1,"id":1,"schema":` + quote(testdata.UserV1Schema) + `},
			{"subject":"a-value","version":1,"id":2,"schema":` + quote(otherAvsc) + `}]}`,
		"invalid schema": `{"format":1,"schemas":[{"subject":"a-value","version":1,"id":1,"schema":"{not avro"}]}`,
		"unknown format": `{"format":99,"schemas":[]}`,
		"not JSON":       `{"format":1,`,
	} {
		t.Run(name, func(t *testing.T) {
			c, err := embedded.Start(embedded.RegistryFile(writeRegistryFile(t, body)))
			if c != nil {
				c.Close()
			}
			require.Error(t, err)
		})
	}
}

func TestSaveRegistryPersistsGoAPIRegistrations(t *testing.T) {
	file := filepath.Join(t.TempDir(), "schemas.json")
	c1 := start(t, embedded.RegistryFile(file))
	_, _, err := c1.Registry().RegisterSchema("x-value", avro(otherAvsc))
	require.NoError(t, err)
	id, _, err := c1.Registry().RegisterSchema("y-value", avro(testdata.UserV1Schema))
	require.NoError(t, err)
	require.NoError(t, c1.SaveRegistry())
	c1.Close()

	c2 := start(t, embedded.RegistryFile(file))
	got, ok := c2.Registry().GetSchema("y-value", 1)
	require.True(t, ok)
	require.Equal(t, id, got.ID)
}

func quote(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// The file's own reads and writes of the registry pass its auth check.
func TestRegistryFileWorksWithRegistryAuth(t *testing.T) {
	file := filepath.Join(t.TempDir(), "schemas.json")
	opts := []embedded.Option{embedded.RegistryFile(file), embedded.RegistryBasicAuth("u", "p")}
	c1 := start(t, opts...)
	cl, err := sr.NewClient(sr.URLs(c1.RegistryURL()), sr.BasicAuth("u", "p"))
	require.NoError(t, err)
	ctx := ctxT(t)
	_, err = cl.CreateSchema(ctx, "other-value", avro(otherAvsc))
	require.NoError(t, err)
	ss, err := cl.CreateSchema(ctx, "users-value", avro(testdata.UserV1Schema))
	require.NoError(t, err)
	require.NoError(t, cl.DeleteSchema(ctx, "other-value", 1, sr.SoftDelete))
	c1.Close()

	c2 := start(t, opts...)
	cl, err = sr.NewClient(sr.URLs(c2.RegistryURL()), sr.BasicAuth("u", "p"))
	require.NoError(t, err)
	got, err := cl.SchemaByVersion(ctx, "users-value", 1)
	require.NoError(t, err)
	require.Equal(t, ss.ID, got.ID)
	_, err = cl.SchemaByVersion(ctx, "other-value", 1)
	require.Error(t, err, "still soft-deleted")
}
