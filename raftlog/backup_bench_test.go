package raftlog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// BenchmarkBackupRestore measures Backup of a single node holding
// ESRAFT_BENCH_BACKUP_RECORDS records of 200 bytes (default 200,000) to a
// file, and Restore of that file into a new directory; bytes/s is the
// backup's size over the time.
func BenchmarkBackupRestore(b *testing.B) {
	ctx := context.Background()
	n := 200_000
	if v := os.Getenv("ESRAFT_BENCH_BACKUP_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	l, err := Open(ctx, Config{Dir: b.TempDir(), Partitions: 8})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const writers, batch = 16, 100
	value := make([]byte, 200)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * batch; i < n; i += writers * batch {
				recs := make([]NewRecord, min(batch, n-i))
				for j := range recs {
					recs[j] = NewRecord{ID: uuid.New(), Value: value}
				}
				if _, err := l.Append(ctx, fmt.Sprintf("k%d", i%1000), recs); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	dir := b.TempDir()
	file := filepath.Join(dir, "backup")
	var size int64
	b.Run("backup", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			f, err := os.Create(file)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := l.Backup(ctx, f, BackupOptions{}); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			st, _ := f.Stat()
			size = st.Size()
			f.Close()
		}
		b.SetBytes(size)
	})
	b.Run("restore", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			f, err := os.Open(file)
			if err != nil {
				b.Fatal(err)
			}
			into, err := os.MkdirTemp(dir, "restored")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Restore(ctx, f, RestoreConfig{Dir: into}); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}
