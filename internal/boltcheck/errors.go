package boltcheck

import (
	"errors"
	"fmt"
)

// ErrDamaged is wrapped by every error of Check that is about the file's
// contents: anything bbolt would trip over. Other errors (the file cannot
// be opened or read) do not wrap it.
var ErrDamaged = errors.New("boltcheck: damaged bbolt file")

// damage is an error of Check about the file's contents; it says what is
// wrong and where, and is ErrDamaged.
type damage struct{ msg string }

func (d *damage) Error() string        { return "boltcheck: " + d.msg }
func (d *damage) Is(target error) bool { return target == ErrDamaged }

func damaged(format string, args ...any) error {
	return &damage{msg: fmt.Sprintf(format, args...)}
}
