package serde_test

import (
	"context"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// A registry that checks compatibility itself judges the registered text: it
// must keep the defaults that make v2 (optional email) compatible with v1.
func TestTheRegisteredSchemaKeepsFieldDefaults(t *testing.T) {
	rc := registry(t)
	ctx := context.Background()
	if _, err := serde.New[map[string]any](ctx, rc, "users-value", testdata.UserV2Schema, sr.CompatBackward); err != nil {
		t.Fatal(err)
	}
	ss, err := rc.SchemaByVersion(ctx, "users-value", -1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ss.Schema.Schema, `"default":null`) {
		t.Fatalf("registered schema lost email's default: %s", ss.Schema.Schema)
	}
	// Opening again finds the same version instead of registering another.
	if _, err := serde.New[map[string]any](ctx, rc, "users-value", testdata.UserV2Schema, sr.CompatBackward); err != nil {
		t.Fatal(err)
	}
	if vs, err := rc.SubjectVersions(ctx, "users-value"); err != nil || len(vs) != 1 {
		t.Fatalf("versions %v, %v; want one", vs, err)
	}
}
