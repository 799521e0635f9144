package pagewriter

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/internal/boltcheck"
)

// VerifiedBbolt is the version of bbolt whose file format the page writer
// was verified against. A binary built with another one loads through
// bbolt's API instead (see Write); the pin test fails when go.mod moves.
const VerifiedBbolt = "v1.4.3"

// ErrUnsorted is returned by the page writer's Bucket when it gets a bucket
// name out of order. Write does not return it: it loads such input through
// bbolt's API instead.
var ErrUnsorted = errors.New("pagewriter: bucket names not in ascending order")

// Writer takes a file's contents, in order. Its methods are called by the
// Data function handed to Write, never concurrently.
type Writer interface {
	// Bucket starts a new top-level bucket. Names must be non-empty and
	// strictly ascending in byte order; a bucket is created only when
	// Bucket is called for it.
	Bucket(name []byte) error
	// Put adds key and val to the bucket Bucket last started. Keys must be
	// non-empty, at most bolt.MaxKeySize bytes and strictly ascending in
	// byte order within the bucket (keys out of order make a file the
	// self-check refuses: Write then loads through bbolt's API); values at
	// most bolt.MaxValueSize bytes. Put may keep neither: they must stay
	// unchanged until it returns, and may be reused after.
	Put(key, val []byte) error
}

// Data hands a file's contents to w and returns the first error a method
// of w returned (or one of its own). Write calls it once, or twice if it
// falls back to bbolt's API; both calls must hand over the same contents.
type Data func(w Writer) error

// Options are Write's settings. The zero value holds the defaults.
type Options struct {
	// PageSize is the file's page size: a power of two, at least 1 KiB.
	// Default (0): os.Getpagesize(), what bbolt picks for a new file.
	PageSize int
	// Logger gets the warning when Write falls back to bbolt's API.
	// Default (nil): slog.Default().
	Logger *slog.Logger
}

// loadTxBytes is how many key and value bytes the fallback puts in one
// bbolt transaction.
const loadTxBytes = 32 << 20

// Write writes a new bbolt file at path (replacing whatever is there) with
// the contents data hands over, laid out page by page; see the package doc
// for the layout and the self-check, and for when and how it falls back to
// bbolt's API (with a warning, data read a second time). It returns an
// error of data, of a Writer's method (bbolt's ErrKeyRequired,
// ErrKeyTooLarge or ErrValueTooLarge, wrapped) or of the file system; the
// file is then to be removed. The file is not synced.
func Write(path string, data Data, opts Options) error {
	ps := opts.PageSize
	if ps == 0 {
		ps = os.Getpagesize()
	}
	if ps < 1<<10 || ps&(ps-1) != 0 {
		return fmt.Errorf("pagewriter: page size %d: want a power of two, at least 1024", ps)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if v := builtBbolt(); !Verified() {
		log.Warn("pagewriter: bbolt is not the version the page writer was verified against; loading through bbolt's API",
			"bbolt", v, "verified", VerifiedBbolt)
		return load(path, ps, data)
	}
	err := writePages(path, ps, data)
	if errors.Is(err, ErrUnsorted) {
		log.Warn("pagewriter: bucket names not sorted; loading through bbolt's API", "path", path, "err", err)
		return load(path, ps, data)
	}
	if err != nil {
		return err
	}
	if err := verify(path); err != nil {
		log.Warn("pagewriter: bbolt refused the file the page writer made; loading through bbolt's API",
			"bbolt", VerifiedBbolt, "path", path, "err", err)
		return load(path, ps, data)
	}
	return nil
}

// Verified reports whether the binary was built with the bbolt the page
// writer was verified against (VerifiedBbolt), or with one whose version
// cannot be told (no build information). kvstore's Get path, which reads
// bbolt's pages in its memory map by the same layout, asks it too.
func Verified() bool {
	v := builtBbolt()
	return v == "" || v == VerifiedBbolt
}

// builtBbolt returns the version of bbolt built into the binary; tests
// replace it.
var builtBbolt = bboltVersion

// bboltVersion returns the version of bbolt built into the binary, or "" if
// the binary does not say (test binaries do not). A replaced module counts
// as unverified.
func bboltVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, d := range info.Deps {
		if d.Path == "go.etcd.io/bbolt" {
			if d.Replace != nil {
				return "replaced by " + d.Replace.Path + " " + d.Replace.Version
			}
			return d.Version
		}
	}
	return ""
}

// verify checks a file writePages made; tests replace it to force the
// fallback.
var verify = verifyPages

// verifyPages checks every page of the file at path (boltcheck), then opens
// it with bbolt as a store would (synced freelist, map freelist type) and
// reads every bucket's first and last key. A panic of bbolt, or a fault in
// its memory map, is an error.
func verifyPages(path string) (err error) {
	if err := boltcheck.Check(path); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pagewriter: bbolt: %v", r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			c := b.Cursor()
			c.First()
			c.Last()
			return nil
		})
	})
}

// load writes the contents data hands over into a new bbolt file at path
// through bbolt's API: Puts with FillPercent 1.0 in transactions of about
// loadTxBytes, what writePages does by hand.
func load(path string, pageSize int, data Data) (err error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true, PageSize: pageSize, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	l := &apiLoader{db: db}
	if l.tx, err = db.Begin(true); err != nil {
		return err
	}
	defer func() {
		if l.tx != nil {
			l.tx.Rollback()
		}
	}()
	if err := data(l); err != nil {
		return err
	}
	err = l.tx.Commit()
	l.tx = nil
	return err
}

// apiLoader is the Writer of the fallback: bbolt's API.
type apiLoader struct {
	db   *bolt.DB
	tx   *bolt.Tx
	b    *bolt.Bucket
	name []byte
	inTx int // key and value bytes put in tx
}

func (l *apiLoader) Bucket(name []byte) error {
	b, err := l.tx.CreateBucket(name)
	if err != nil {
		return fmt.Errorf("pagewriter: create bucket %q: %w", name, err)
	}
	l.b, l.name = b, append(l.name[:0], name...)
	l.b.FillPercent = 1.0
	return nil
}

func (l *apiLoader) Put(key, val []byte) error {
	if l.b == nil {
		return errors.New("pagewriter: Put before Bucket")
	}
	if l.inTx >= loadTxBytes {
		if err := l.tx.Commit(); err != nil {
			return err
		}
		var err error
		if l.tx, err = l.db.Begin(true); err != nil {
			return err
		}
		l.b, l.inTx = l.tx.Bucket(l.name), 0
		l.b.FillPercent = 1.0
	}
	l.inTx += len(key) + len(val)
	// bbolt keeps the value until the commit; the caller may reuse it.
	if err := l.b.Put(key, bytes.Clone(val)); err != nil {
		return fmt.Errorf("pagewriter: bucket %q: %w", l.name, err)
	}
	return nil
}
