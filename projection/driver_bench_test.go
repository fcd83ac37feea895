//go:build cgo && !esraft_puresqlite && esraft_bench_drivers

package projection

import (
	"testing"

	_ "modernc.org/sqlite" // the pure-Go driver, linked beside mattn/go-sqlite3 to compare them

	"github.com/esraft/esraft/internal/sqlitex"
)

// BenchmarkDrivers runs the replay and end-to-end benchmarks on each SQLite
// driver in turn, in one process (figures in BENCHMARKS.md). It is behind
// the esraft_bench_drivers tag so that the package's test binary does not
// link the second driver (TestGroupZombieCommitIsRejected, timing-sensitive,
// failed 2 of 3 runs with it linked):
//
//	go test -tags esraft_bench_drivers -run '^$' -bench BenchmarkDrivers -benchtime 1x ./projection/
func BenchmarkDrivers(b *testing.B) {
	drivers := []struct{ name, driver string }{{"mattn", "sqlite3"}, {"modernc", "sqlite"}}
	benches := []struct {
		name string
		fn   func(*testing.B)
	}{{"replay", BenchmarkReplay}, {"end-to-end", BenchmarkEndToEndLatency}}
	for _, bm := range benches {
		for _, d := range drivers {
			b.Run(bm.name+"/driver="+d.name, func(b *testing.B) {
				restore, err := sqlitex.UseDriver(d.driver)
				if err != nil {
					b.Fatal(err)
				}
				defer restore()
				bm.fn(b)
			})
		}
	}
}
