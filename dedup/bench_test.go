package dedup_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/dedup"
	"github.com/esraft/esraft/internal/sqlitex"
)

// benchSizes are the retained marks of one consumer: what a retention of
// MaxPerConsumer = n (or rate x MaxAge = n) keeps.
var benchSizes = []int{100_000, 1_000_000}

// fill marks n random UUIDs for consumer "billing", as the table holds
// them once the retention window is full, in transactions of 10,000.
func fill(b *testing.B, db *sqlitex.DB, n int) {
	b.Helper()
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for done := 0; done < n; {
		k := min(10_000, n-done)
		require.NoError(b, db.Update(ctx, func(tx *sql.Tx) error {
			for i := 0; i < k; i++ {
				if _, err := dedup.Mark(ctx, tx, "billing", uuid.NewString(), t0.Add(time.Duration(done+i)*time.Millisecond)); err != nil {
					return err
				}
			}
			return nil
		}))
		done += k
	}
}

var templates struct {
	sync.Mutex
	dir   string
	paths map[int]string
}

// filled opens a copy of a database filled with n marks; the filled
// original is made once per process, so that -count runs measure lookups
// and not the fill.
func filled(b *testing.B, n int) *sqlitex.DB {
	templates.Lock()
	defer templates.Unlock()
	if templates.paths == nil {
		templates.paths = map[int]string{}
	}
	src, ok := templates.paths[n]
	if !ok {
		if templates.dir == "" {
			dir, err := os.MkdirTemp("", "dedup-bench")
			require.NoError(b, err)
			templates.dir = dir
		}
		src = filepath.Join(templates.dir, fmt.Sprintf("rows%d.db", n))
		db, err := sqlitex.Open(context.Background(), src, sqlitex.Migration(dedup.Schema))
		require.NoError(b, err)
		fill(b, db, n)
		_, err = db.Write.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		require.NoError(b, err)
		require.NoError(b, db.Close())
		templates.paths[n] = src
	}
	dst := filepath.Join(b.TempDir(), "lookup.db")
	data, err := os.ReadFile(src)
	require.NoError(b, err)
	require.NoError(b, os.WriteFile(dst, data, 0o600))
	db, err := sqlitex.Open(context.Background(), dst, sqlitex.Migration(dedup.Schema))
	require.NoError(b, err)
	return db
}

func TestMain(m *testing.M) {
	code := m.Run()
	if templates.dir != "" {
		os.RemoveAll(templates.dir)
	}
	os.Exit(code)
}

// BenchmarkTableSize reports the size of a table holding n marks with
// UUID message IDs (table and both indexes), as bytes per mark.
func BenchmarkTableSize(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			var bytes int64
			for i := 0; b.Loop(); i++ {
				db := open(b, filepath.Join(b.TempDir(), fmt.Sprintf("size%d.db", i)))
				fill(b, db, n)
				bytes = usedBytes(b, db)
				db.Close()
			}
			b.ReportMetric(float64(bytes), "bytes")
			b.ReportMetric(float64(bytes)/float64(n), "bytes/row")
			b.ReportMetric(0, "ns/op") // filling time is not the figure
		})
	}
}

// BenchmarkLookup measures, on a table of n marks: the skip path of Wrap
// (Mark of a message already marked), Mark of a new message (both in
// transactions of 64, the commit shared), and Seen from the read pool for
// a kept and an unknown ID.
func BenchmarkLookup(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			db := filled(b, n)
			var kept []string
			rows, err := db.Read.Query(`SELECT message_id FROM esraft_dedup ORDER BY random() LIMIT 4096`)
			require.NoError(b, err)
			for rows.Next() {
				var id string
				require.NoError(b, rows.Scan(&id))
				kept = append(kept, id)
			}
			require.NoError(b, rows.Err())
			now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

			inTx := func(b *testing.B, id func(i int) string, wantFirst bool) {
				b.ResetTimer()
				for done := 0; done < b.N; {
					k := min(64, b.N-done)
					require.NoError(b, db.Update(ctx, func(tx *sql.Tx) error {
						for j := 0; j < k; j++ {
							first, err := dedup.Mark(ctx, tx, "billing", id(done+j), now)
							if err != nil {
								return err
							}
							if first != wantFirst {
								return fmt.Errorf("mark %d: first = %v", done+j, first)
							}
						}
						return nil
					}))
					done += k
				}
			}
			b.Run("skip-seen", func(b *testing.B) {
				inTx(b, func(i int) string { return kept[i%len(kept)] }, false)
			})
			b.Run("seen-hit", func(b *testing.B) {
				i := 0
				for b.Loop() {
					ok, err := dedup.Seen(ctx, db.Read, "billing", kept[i%len(kept)])
					if err != nil || !ok {
						b.Fatal(ok, err)
					}
					i++
				}
			})
			b.Run("seen-miss", func(b *testing.B) {
				for b.Loop() {
					ok, err := dedup.Seen(ctx, db.Read, "billing", uuid.NewString())
					if err != nil || ok {
						b.Fatal(ok, err)
					}
				}
			})
			b.Run("mark-new", func(b *testing.B) {
				inTx(b, func(int) string { return uuid.NewString() }, true)
			})
			db.Close()
		})
	}
}
