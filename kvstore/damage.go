package kvstore

import (
	"errors"
	"fmt"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/internal/boltcheck"
)

// errDamaged marks a cache file whose pages break what bbolt takes for
// granted. bbolt checks a file's meta pages when it opens it and nothing
// else: a page of the wrong type, an element pointing outside its page or a
// branch pointing back up its own tree makes it panic, or fault, when a read
// or a write reaches that page, sometimes on a goroutine of its own where no
// recover can reach. The store never lets bbolt near such a file: Open checks
// the whole file first (checkFile) and rebuilds it from the topic if it is
// damaged, and damage that appears while the store runs turns into this
// error (safeView, safeUpdate).
var errDamaged = errors.New("damaged cache file")

// checkFile reads the bbolt file at path itself, without bbolt, and returns
// an error wrapping errDamaged if anything bbolt would trip over is wrong
// (internal/boltcheck says what it checks), the error as is if the file
// cannot be read.
func checkFile(path string) error {
	err := boltcheck.Check(path)
	if errors.Is(err, boltcheck.ErrDamaged) {
		return fmt.Errorf("%w: %w", errDamaged, err)
	}
	return err
}

// safeView is db.View that returns a panic of bbolt (or a fault reading its
// memory map) inside the transaction as an error wrapping errDamaged, rather
// than letting it take the process down. The file was checked when it was
// opened, so such a panic means it changed under the store.
func safeView(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverDamage(&err)
	return db.View(fn)
}

// safeUpdate is db.Update as safeView is db.View. bbolt rolls the
// transaction back before the panic reaches here, so nothing of it is
// committed.
func safeUpdate(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverDamage(&err)
	return db.Update(fn)
}

func recoverDamage(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: bbolt: %v", errDamaged, r)
	}
}
