package raftlog

import (
	"fmt"
	"testing"
)

// BenchmarkAppendTLS is BenchmarkAppend's nodes=3/appenders=64 shape with
// the cluster port in plaintext and in mutual TLS, one after the other in
// each run, for paired comparisons (BENCHMARKS.md):
//
//	for i in 1 2 3; do go test -run '^$' -bench 'BenchmarkAppendTLS' -benchtime 3s -count 1 ./raftlog/; done
func BenchmarkAppendTLS(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("nodes=3/appenders=64/tls=%s", map[bool]string{false: "off", true: "on"}[on]), func(b *testing.B) {
			b.StopTimer()
			var c *testCluster
			if on {
				c, _ = newTLSCluster(b, 3, benchConfig)
			} else {
				c = newCluster(b, 3, benchConfig)
			}
			benchAppends(b, leaderFirst(c), 64, 1)
		})
	}
}
