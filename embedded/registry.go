package embedded

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// registryFileFormat is the format number written into the registry file.
const registryFileFormat = 1

// registryFile is the JSON document RegistryFile writes.
type registryFile struct {
	Format  int            `json:"format"`
	Schemas []storedSchema `json:"schemas"`
}

// storedSchema is one subject version: where it was registered, the ID
// records carry, and the schema itself.
type storedSchema struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	// Deleted marks a soft-deleted version: its ID still resolves, but it is
	// not listed among the subject's live versions.
	Deleted bool `json:"deleted,omitempty"`
	sr.Schema
}

type svKey struct {
	subject string
	version int
}

// registryStore persists an srfake registry to a file. It serves the
// registry's HTTP API and, after every request that changed something,
// writes a snapshot of all schemas before the client sees the answer, so a
// schema ID a client was told is on disk.
type registryStore struct {
	path string
	reg  *srfake.Registry
	h    http.Handler
	auth string // Authorization header of its own requests to h, if the registry requires one

	mu   sync.Mutex // serializes save
	last []byte     // what the file holds
}

// openRegistryStore seeds reg from the file at path (a missing file is an
// empty registry) and returns the store that keeps the file current. auth is
// the Authorization header reg's handler requires ("" for none).
func openRegistryStore(path string, reg *srfake.Registry, auth string) (*registryStore, error) {
	rs := &registryStore{path: path, reg: reg, h: reg.Handler(), auth: auth}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("embedded: read registry file: %w", err)
	default:
		var f registryFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("embedded: registry file %s: %w", path, err)
		}
		if f.Format != registryFileFormat {
			return nil, fmt.Errorf("embedded: registry file %s: format %d, want %d", path, f.Format, registryFileFormat)
		}
		if err := rs.seed(f.Schemas); err != nil {
			return nil, fmt.Errorf("embedded: registry file %s: %w", path, err)
		}
		rs.last = b
	}
	return rs, nil
}

// seed loads schemas into the registry with their subjects, versions and
// IDs. srfake's SeedSchema panics when an ID or a subject version is already
// taken, so the entries are checked first and every ID is seeded once. The
// entries go in version order within each subject, and across subjects the
// lowest ID first (so that a referenced schema comes before the schemas that
// reference it). A subject version whose ID is already seeded, as happens
// when one schema is registered under two subjects, is registered again,
// which reuses the ID and gives the subject's next version number, the one
// it had unless versions before it were deleted for good.
func (rs *registryStore) seed(entries []storedSchema) error {
	bySV := map[svKey]bool{}
	byID := map[int]sr.Schema{}
	queues := map[string][]storedSchema{}
	for _, e := range entries {
		switch {
		case e.Subject == "":
			return fmt.Errorf("schema ID %d: empty subject", e.ID)
		case e.Version < 1 || e.ID < 1:
			return fmt.Errorf("subject %q: version %d, ID %d: both must be at least 1", e.Subject, e.Version, e.ID)
		case bySV[svKey{e.Subject, e.Version}]:
			return fmt.Errorf("subject %q version %d listed twice", e.Subject, e.Version)
		}
		bySV[svKey{e.Subject, e.Version}] = true
		if prev, ok := byID[e.ID]; ok && (prev.Schema != e.Schema.Schema || prev.Type != e.Type) {
			return fmt.Errorf("schema ID %d holds two different schemas", e.ID)
		}
		byID[e.ID] = e.Schema
		queues[e.Subject] = append(queues[e.Subject], e)
	}
	for _, q := range queues {
		slices.SortFunc(q, func(a, b storedSchema) int { return cmp.Compare(a.Version, b.Version) })
	}

	seeded := map[int]bool{}
	for len(queues) > 0 {
		var next *storedSchema
		for _, q := range queues {
			if next == nil || cmp.Or(cmp.Compare(q[0].ID, next.ID), cmp.Compare(q[0].Subject, next.Subject)) < 0 {
				next = &q[0]
			}
		}
		e := *next
		if q := queues[e.Subject][1:]; len(q) > 0 {
			queues[e.Subject] = q
		} else {
			delete(queues, e.Subject)
		}

		version := e.Version
		if !seeded[e.ID] {
			if err := seedOne(rs.reg, e); err != nil {
				return err
			}
			seeded[e.ID] = true
		} else {
			id, v, err := rs.reg.RegisterSchema(e.Subject, e.Schema)
			if err != nil {
				return fmt.Errorf("subject %q version %d: %w", e.Subject, e.Version, err)
			}
			if id != e.ID {
				return fmt.Errorf("subject %q version %d: registered again with ID %d, want %d", e.Subject, e.Version, id, e.ID)
			}
			version = v
		}
		if e.Deleted {
			// Deleted at once, so that a later version of the same schema in
			// this subject is registered anew, as it was the first time.
			rec := rs.internal(http.MethodDelete, "/subjects/"+url.PathEscape(e.Subject)+"/versions/"+strconv.Itoa(version))
			if rec.Code != http.StatusOK {
				return fmt.Errorf("subject %q version %d: soft delete: HTTP %d: %s", e.Subject, e.Version, rec.Code, bytes.TrimSpace(rec.Body.Bytes()))
			}
		}
	}
	return nil
}

// internal serves a request of the store's own to the registry's handler.
func (rs *registryStore) internal(method, target string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	if rs.auth != "" {
		req.Header.Set("Authorization", rs.auth)
	}
	rec := httptest.NewRecorder()
	rs.h.ServeHTTP(rec, req)
	return rec
}

// seedOne is SeedSchema with its panic (an invalid schema or reference)
// turned into an error.
func seedOne(reg *srfake.Registry, e storedSchema) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("subject %q version %d, ID %d: %v", e.Subject, e.Version, e.ID, r)
		}
	}()
	reg.SeedSchema(e.Subject, e.Version, e.ID, e.Schema)
	return nil
}

// ServeHTTP serves the registry's API. A request that may change the
// registry (any method but GET, HEAD and OPTIONS) is answered only after the
// snapshot it produced is on disk; if writing the file fails the client gets
// a 500, though the change stays in memory.
func (rs *registryStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		rs.h.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	rs.h.ServeHTTP(rec, r)
	if rec.Code >= 200 && rec.Code < 300 {
		if err := rs.save(); err != nil {
			w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]any{
				"error_code": 50001,
				"message":    err.Error(),
			})
			return
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// snapshot lists every subject version the registry holds, soft-deleted ones
// included, in subject and version order.
func (rs *registryStore) snapshot() ([]storedSchema, error) {
	list := func(query string) ([]sr.SubjectSchema, error) {
		rec := rs.internal(http.MethodGet, "/schemas"+query)
		if rec.Code != http.StatusOK {
			return nil, fmt.Errorf("list schemas: HTTP %d: %s", rec.Code, bytes.TrimSpace(rec.Body.Bytes()))
		}
		var out []sr.SubjectSchema
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			return nil, fmt.Errorf("list schemas: %w", err)
		}
		return out, nil
	}
	all, err := list("?deleted=true")
	if err != nil {
		return nil, err
	}
	live, err := list("")
	if err != nil {
		return nil, err
	}
	isLive := map[svKey]bool{}
	for _, s := range live {
		isLive[svKey{s.Subject, s.Version}] = true
	}
	out := make([]storedSchema, 0, len(all))
	for _, s := range all {
		out = append(out, storedSchema{
			Subject: s.Subject,
			Version: s.Version,
			ID:      s.ID,
			Deleted: !isLive[svKey{s.Subject, s.Version}],
			Schema:  s.Schema,
		})
	}
	return out, nil
}

// save writes a snapshot to the file if it differs from what the file holds:
// to a temporary file in the same directory, synced, then renamed over the
// old one, so the file is always either the old or the new snapshot.
func (rs *registryStore) save() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	schemas, err := rs.snapshot()
	if err != nil {
		return fmt.Errorf("embedded: persist registry: %w", err)
	}
	b, err := json.MarshalIndent(registryFile{Format: registryFileFormat, Schemas: schemas}, "", "  ")
	if err != nil {
		return fmt.Errorf("embedded: persist registry: %w", err)
	}
	b = append(b, '\n')
	if bytes.Equal(b, rs.last) {
		return nil
	}
	if err := writeFileAtomic(rs.path, b); err != nil {
		return fmt.Errorf("embedded: persist registry: %w", err)
	}
	rs.last = b
	return nil
}

func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
