package boltfmt

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// A meta page bbolt wrote reads back as this package describes it: header,
// magic, version, page size, a freelist page, a checksum that matches; and
// PutMeta writes it back byte for byte.
func TestMetaIsWhatBboltWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: 4096})
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err == nil {
			err = b.Put([]byte("k"), []byte("v"))
		}
		return err
	}))
	require.NoError(t, db.Close())
	file, err := os.ReadFile(path)
	require.NoError(t, err)
	for id := range uint64(2) {
		p := file[id*4096 : (id+1)*4096]
		gotID, flags, m, ok := ReadMeta(p)
		require.True(t, ok, "checksum of meta page %d", id)
		require.Equal(t, id, gotID)
		require.Equal(t, uint16(MetaPage), flags)
		require.Equal(t, uint32(Magic), m.Magic)
		require.Equal(t, uint32(Version), m.Version)
		require.Equal(t, uint32(4096), m.PageSize)
		require.NotEqual(t, NoFreelist, m.Freelist)
		require.Less(t, m.Freelist, m.HWM)
		require.Less(t, m.Root, m.HWM)
		require.Equal(t, uint16(FreelistPage), binary.NativeEndian.Uint16(file[m.Freelist*4096+8:]))
		require.Equal(t, uint16(LeafPage), binary.NativeEndian.Uint16(file[m.Root*4096+8:]))

		again := make([]byte, PageHeaderSize+MetaSize)
		PutMeta(again, id, m)
		require.Equal(t, p[:PageHeaderSize+MetaSize], again)
	}
}
