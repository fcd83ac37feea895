package eventstore_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/raftlog"
)

// filesHolding lists the files under dir whose bytes contain b.
func filesHolding(t *testing.T, dir string, b []byte) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, b) {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	}))
	return out
}

var testKEK = bytes.Repeat([]byte{7}, 32)

func openEncrypted(t *testing.T, dir string) *eventstore.Store {
	t.Helper()
	s, err := eventstore.Open(context.Background(), dir, eventstore.Partitions(2),
		eventstore.Encrypt(eventstore.Encryption{Subject: eventstore.SubjectPerStream("user"), KEK: testKEK}))
	require.NoError(t, err)
	return s
}

// Crypto-shredding: no plaintext of an encrypted event on disk; after
// Shred, no node reads it, nor a restore of a backup taken before the
// shred (backups hold no key), and the key is erased from the state files.
func TestCryptoShredding(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openEncrypted(t, dir)
	defer func() { s.Close() }()
	const m1, m2, m3 = "MARKER-user1-5d0c", "MARKER-user2-91aa", "MARKER-order-3f7e"
	for i := 0; i < 3; i++ {
		for stream, data := range map[string]string{"user-1": m1, "user-2": m2, "order-1": m3} {
			_, err := s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{{Type: "Noted", Data: []byte(data)}})
			require.NoError(t, err)
		}
	}
	evs, err := s.ReadStream(ctx, "user-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 3)
	for _, ev := range evs {
		require.Equal(t, m1, string(ev.Data))
		require.NoError(t, ev.Unreadable)
	}
	sub, err := s.Subscribe(ctx, eventstore.SubscribeOptions{Streams: []string{"user-2"}})
	require.NoError(t, err)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ev, err := sub.Next(sctx)
	cancel()
	require.NoError(t, err)
	require.Equal(t, m2, string(ev.Data), "subscriptions decrypt")
	sub.Close()
	keyEvs, err := s.ReadStream(ctx, eventstore.KeyStream("user-1"), 0, 10)
	require.NoError(t, err)
	require.Len(t, keyEvs, 1)
	wrappedKey := keyEvs[0].Data

	// Taken before the shred.
	backup := filepath.Join(t.TempDir(), "before.backup")
	f, err := os.Create(backup)
	require.NoError(t, err)
	_, err = s.Backup(ctx, f, nil)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Contains(t, filesHolding(t, dir, wrappedKey), filepath.Join("g0", "p0", "00000000000000000000.seg"), "the backup's flush wrote the key to a segment")

	require.NoError(t, s.Shred(ctx, "user-1"))
	evs, err = s.ReadStream(ctx, "user-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 3, "the events stay, unreadable")
	for _, ev := range evs {
		require.Nil(t, ev.Data)
		require.ErrorIs(t, ev.Unreadable, eventstore.ErrShredded)
		var se *eventstore.ShreddedError
		require.ErrorAs(t, ev.Unreadable, &se)
		require.Equal(t, "user-1", se.Subject)
	}
	evs, err = s.ReadStream(ctx, "user-2", 0, 10)
	require.NoError(t, err)
	require.Equal(t, m2, string(evs[0].Data), "another subject is untouched")
	_, err = s.Append(ctx, "user-1", eventstore.Any, []eventstore.EventData{{Type: "Noted", Data: []byte("again")}})
	require.ErrorIs(t, err, eventstore.ErrShredded)
	var export bytes.Buffer
	n, err := s.ExportKeys(ctx, &export)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the live keys: user-2's only")
	require.NotContains(t, export.String(), m2)
	require.NoError(t, s.Close()) // flushes: the key's erasure reaches the state files

	// On disk: no plaintext of an encrypted event anywhere (the clear
	// stream's marker shows the scan works), the key nowhere but in the
	// raft log until it compacts past it.
	require.NotEmpty(t, filesHolding(t, dir, []byte(m3)))
	require.Empty(t, filesHolding(t, dir, []byte(m1)))
	require.Empty(t, filesHolding(t, dir, []byte(m2)))
	holding := filesHolding(t, dir, wrappedKey)
	t.Logf("files holding the wrapped key after the shred: %v", holding)
	for _, f := range holding {
		require.Contains(t, f, string(filepath.Separator)+"wal"+string(filepath.Separator), "the wrapped key is left only in the raft log")
	}
	require.Empty(t, filesHolding(t, filepath.Dir(backup), wrappedKey), "a backup holds no key")
	require.Empty(t, filesHolding(t, filepath.Dir(backup), []byte(m1)))

	// The backup restored: no subject is readable from it alone.
	restored := filepath.Join(t.TempDir(), "restored")
	rf, err := os.Open(backup)
	require.NoError(t, err)
	_, err = raftlog.Restore(ctx, rf, raftlog.RestoreConfig{Dir: restored})
	rf.Close()
	require.NoError(t, err)
	r := openEncrypted(t, restored)
	defer r.Close()
	for _, stream := range []string{"user-1", "user-2"} {
		evs, err := r.ReadStream(ctx, stream, 0, 10)
		require.NoError(t, err)
		require.Len(t, evs, 3)
		for _, ev := range evs {
			require.ErrorIs(t, ev.Unreadable, eventstore.ErrShredded, stream)
		}
	}
	evs, err = r.ReadStream(ctx, "order-1", 0, 10)
	require.NoError(t, err)
	require.Equal(t, m3, string(evs[0].Data))

	// With the live cluster's keys imported, what was not shredded reads
	// again; the shredded subject does not.
	n, err = r.ImportKeys(ctx, bytes.NewReader(export.Bytes()))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = r.ImportKeys(ctx, bytes.NewReader(export.Bytes()))
	require.NoError(t, err)
	require.Zero(t, n, "a key present is kept")
	evs, err = r.ReadStream(ctx, "user-2", 0, 10)
	require.NoError(t, err)
	for _, ev := range evs {
		require.Equal(t, m2, string(ev.Data))
	}
	_, err = r.Append(ctx, "user-2", eventstore.Any, []eventstore.EventData{{Type: "Noted", Data: []byte("after")}})
	require.NoError(t, err)
	evs, err = r.ReadStream(ctx, "user-2", 0, 10)
	require.NoError(t, err)
	require.Equal(t, "after", string(evs[3].Data))
	evs, err = r.ReadStream(ctx, "user-1", 0, 10)
	require.NoError(t, err)
	require.ErrorIs(t, evs[0].Unreadable, eventstore.ErrShredded)
	_, err = r.ImportKeys(ctx, strings.NewReader(`{"subject":"user-3","version":1,"key":"AAAA"}`))
	require.ErrorIs(t, err, eventstore.ErrInvalidOptions, "a key of the wrong size")
}

// A bad Encryption is refused at Open; a store without the KEK a key was
// wrapped with cannot read the subject.
func TestCryptoBadInput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, err := eventstore.Open(ctx, dir, eventstore.Encrypt(eventstore.Encryption{Subject: eventstore.SubjectPerStream("user"), KEK: []byte("short")}))
	require.ErrorIs(t, err, eventstore.ErrInvalidOptions)
	_, err = eventstore.Open(ctx, dir, eventstore.Encrypt(eventstore.Encryption{KEK: testKEK}))
	require.ErrorIs(t, err, eventstore.ErrInvalidOptions)

	s := openEncrypted(t, dir)
	_, err = s.Append(ctx, "user-9", eventstore.NoStream, []eventstore.EventData{{Type: "Noted", Data: []byte("x")}})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	other, err := eventstore.Open(ctx, dir, eventstore.Partitions(2),
		eventstore.Encrypt(eventstore.Encryption{Subject: eventstore.SubjectPerStream("user"), KEK: bytes.Repeat([]byte{8}, 32)}))
	require.NoError(t, err)
	defer other.Close()
	_, err = other.ReadStream(ctx, "user-9", 0, 10)
	require.ErrorContains(t, err, "KEK")
	require.True(t, strings.Contains(err.Error(), "user-9"))
	require.ErrorIs(t, other.Shred(ctx, ""), eventstore.ErrInvalidOptions)
	for name, in := range map[string]string{
		"not JSON":        "{",
		"no subject":      `{"version":1,"key":"AAAA"}`,
		"a line too long": `{"subject":"` + strings.Repeat("x", 70<<10) + `","version":1}`,
		"wrong KEK":       `{"subject":"user-9","version":1,"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","wrapped":"aes-256-gcm"}`,
	} {
		n, err := other.ImportKeys(ctx, strings.NewReader(in))
		require.ErrorIs(t, err, eventstore.ErrInvalidOptions, name)
		require.Zero(t, n, name)
	}
}

// On a 3-node cluster, a shred on one node makes the subject unreadable on
// every node as soon as it has applied the shred.
func TestCryptoShreddingThreeNodes(t *testing.T) {
	ctx := context.Background()
	c := eventstoretest.StartCluster(t, 3, eventstore.Encrypt(eventstore.Encryption{Subject: eventstore.SubjectPerStream("user"), KEK: testKEK}))
	res, err := c.Node(0).Append(ctx, "user-7", eventstore.NoStream, []eventstore.EventData{{Type: "Noted", Data: []byte("MARKER-user7")}})
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		require.NoError(t, c.Node(i).Sync(ctx, res.Position))
		evs, err := c.Node(i).ReadStream(ctx, "user-7", 0, 10)
		require.NoError(t, err)
		require.Equal(t, "MARKER-user7", string(evs[0].Data), "node %d", i)
	}
	require.NoError(t, c.Node(1).Shred(ctx, "user-7"))
	require.NoError(t, c.Node(1).Barrier(ctx))
	for i := 0; i < 3; i++ {
		require.NoError(t, c.Node(i).Barrier(ctx))
		evs, err := c.Node(i).ReadStream(ctx, "user-7", 0, 10)
		require.NoError(t, err)
		require.Nil(t, evs[0].Data, "node %d", i)
		require.ErrorIs(t, evs[0].Unreadable, eventstore.ErrShredded, "node %d", i)
	}
}
