package pagewriter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// When the self-check refuses the page writer's file, Write warns and
// loads the same data, read a second time, through bbolt's API: a file
// bbolt wrote, in transactions of about loadTxBytes, with the page size
// asked for.
func TestWriteFallsBackToBboltsAPIWhenTheCheckRefusesTheFile(t *testing.T) {
	defer func(v func(string) error) { verify = v }(verify)
	var refused []string
	verify = func(path string) error {
		refused = append(refused, path)
		return errors.New("refused for the test")
	}
	buckets := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name        string
		ps          int
		n, bigEvery int
	}{
		{"1KiB", 1 << 10, 30_000, 997},
		{"4KiB", 4 << 10, 30_000, 997},
		{"64KiB", 64 << 10, 30_000, 997},
		{"more than one transaction", 4 << 10, 800, 1}, // ~80 MB of values
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.db")
			model := randomContents(2, tc.n, buckets, tc.bigEvery)
			var logs bytes.Buffer
			calls := 0
			require.NoError(t, Write(path, model.data(&calls), Options{PageSize: tc.ps, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
			require.Equal(t, 2, calls, "the data is read a second time")
			require.Contains(t, refused, path)
			require.Contains(t, logs.String(), "level=WARN")
			require.Contains(t, logs.String(), "bbolt refused the file")
			require.Contains(t, logs.String(), "refused for the test")

			require.NoError(t, verifyPages(path))
			m := readMeta(t, path)
			require.Greater(t, m.txid, uint64(1), "bbolt's commits wrote the file, not the page writer")
			if tc.bigEvery == 1 {
				require.Greater(t, m.txid, uint64(2), "the load spans several transactions (the first commits txid 2)")
			}
			db := open(t, path)
			defer db.Close()
			require.Equal(t, tc.ps, db.Info().PageSize)
			requireTxCheck(t, db)
			require.Equal(t, model, read(t, db))
		})
	}
}

// A binary built with another bbolt than the page writer was verified
// against does not use the page writer at all.
func TestWriteWithAnotherBboltVersionUsesBboltsAPI(t *testing.T) {
	defer func(v func() string) { builtBbolt = v }(builtBbolt)
	builtBbolt = func() string { return "v1.9.0" }
	defer func(v func(string) error) { verify = v }(verify)
	verify = func(string) error { t.Error("the page writer ran"); return nil }

	path := filepath.Join(t.TempDir(), "c.db")
	var logs bytes.Buffer
	model := randomContents(4, 5000, []string{"a", "b"}, 0)
	calls := 0
	require.NoError(t, Write(path, model.data(&calls), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	require.Equal(t, 1, calls)
	require.Contains(t, logs.String(), "level=WARN")
	require.Contains(t, logs.String(), "bbolt=v1.9.0 verified="+VerifiedBbolt)
	db := open(t, path)
	defer db.Close()
	requireTxCheck(t, db)
	require.Equal(t, model, read(t, db))
}

// Input out of order is loaded through bbolt's API, with a warning: keys
// within a bucket (the self-check refuses the file), or bucket names. What neither way can write (an empty
// key, a key over bbolt's limit, a Put before any Bucket) and an error of
// the data itself come back as errors.
func TestWriteRefusesWhatBboltWouldRefuse(t *testing.T) {
	put := func(calls ...[2]string) Data {
		return func(w Writer) error {
			for _, c := range calls {
				var err error
				if c[0] == "bucket" {
					err = w.Bucket([]byte(c[1]))
				} else {
					err = w.Put([]byte(c[1]), []byte("v"))
				}
				if err != nil {
					return err
				}
			}
			return nil
		}
	}
	b := func(name string) [2]string { return [2]string{"bucket", name} }
	k := func(key string) [2]string { return [2]string{"put", key} }
	for _, tc := range []struct {
		name, warning string
		data          Data
		want          contents
	}{
		{"keys out of order", "bbolt refused the file", put(b("a"), k("1"), k("3"), k("2")),
			contents{"a": {"1": []byte("v"), "2": []byte("v"), "3": []byte("v")}}},
		{"bucket names out of order", "bucket names not sorted", put(b("b"), k("1"), b("a"), k("1")),
			contents{"a": {"1": []byte("v")}, "b": {"1": []byte("v")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.db")
			var logs bytes.Buffer
			require.NoError(t, Write(path, tc.data, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
			require.Contains(t, logs.String(), tc.warning)
			db := open(t, path)
			defer db.Close()
			require.Equal(t, tc.want, read(t, db))
		})
	}
	stop := errors.New("stop")
	for _, tc := range []struct {
		name string
		data Data
		want error
	}{
		{"empty key", put(b("a"), k("")), berrors.ErrKeyRequired},
		{"key too large", put(b("a"), k(strings.Repeat("k", bolt.MaxKeySize+1))), berrors.ErrKeyTooLarge},
		{"empty bucket name", put(b("")), berrors.ErrBucketNameRequired},
		{"a bucket twice", put(b("a"), b("a")), berrors.ErrBucketExists},
		{"Put before Bucket", put(k("1")), nil},
		{"the data's own error", func(w Writer) error { return stop }, stop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.db")
			err := Write(path, tc.data, Options{Logger: slog.New(slog.DiscardHandler)})
			require.Error(t, err)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
	for _, ps := range []int{-1, 512, 3000} {
		err := Write(filepath.Join(t.TempDir(), "c.db"), put(), Options{PageSize: ps})
		require.ErrorContains(t, err, fmt.Sprintf("page size %d", ps))
	}
}

// The page writer lays out bbolt's on-disk format by hand. It was verified
// against one version of bbolt; a move to another must be a decision.
func TestPagesPinTheBboltVersion(t *testing.T) {
	f, err := os.Open("../../go.mod")
	require.NoError(t, err)
	defer f.Close()
	var got, replaced string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "//")
		line = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(line), "require "), "replace ")
		lhs, rhs, isReplace := strings.Cut(line, "=>")
		fields := strings.Fields(lhs)
		if len(fields) == 0 || fields[0] != "go.etcd.io/bbolt" {
			continue
		}
		switch {
		case isReplace:
			replaced = "replaced by " + strings.TrimSpace(rhs)
		case len(fields) >= 2:
			got = fields[1]
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, got, "no go.etcd.io/bbolt in ../../go.mod")
	if replaced != "" {
		got = replaced
	}
	if got != VerifiedBbolt {
		t.Fatalf("go.mod has go.etcd.io/bbolt %s, but the page writer (internal/pagewriter) was verified against %s. "+
			"It writes bbolt's file format by hand, and internal/boltcheck reads it, both as internal/boltfmt describes it: "+
			"before moving, compare internal/boltfmt with the new version's "+
			"internal/common (page.go, meta.go, inbucket.go: page header, element, meta and freelist layouts, Version), "+
			"db.go (Open, loadFreelist, mmap) and tx_check.go; run TestWritePassesTxCheckAtEveryPageSize and "+
			"boltcheck's TestCheckAcceptsWhatBboltWrites; then set VerifiedBbolt to %s. Until then a binary built with "+
			"another version loads through bbolt's API (slower) and says so in a warning. kvstore's Get path reads the "+
			"same pages in bbolt's memory map (kvstore/pagewalk.go) through a read transaction Gets share "+
			"(kvstore/readsnap.go), relying on bbolt v1.4's behaviour: Info().Data maps the whole file, an open read "+
			"transaction blocks a remap, pages a read transaction reaches are never rewritten; run kvstore's "+
			"TestThePageWalk* and TestWritesThatGrowTheFileAreNotBlockedByGets too. Until then such a binary's Gets "+
			"read through a transaction of their own with bbolt's API.",
			got, VerifiedBbolt, got)
	}
}
