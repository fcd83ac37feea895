package faulttest

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strconv"
)

// Apply digests: each node logs, per shard, a digest of what it decided
// for every window of raft indexes it applied whole
// (raftlog.Config.ApplyDigestEvery, which faultnode sets). Replicas decide
// alike, so digests of one window that differ between nodes (or between
// two lives of one node) name the first entries a replica decided
// differently, long before the damage shows in the log or in a consumer
// group.

var digestLine = regexp.MustCompile(`msg="raftlog: apply digest".* shard=(\d+) from=(\d+) to=(\d+) digest=(\d+)`)

type digestWindow struct {
	shard    int
	from, to uint64
}

// ApplyDigests is what comparing the nodes' apply digests found.
type ApplyDigests struct {
	// Windows is how many windows at least two digests were logged for
	// (by two nodes, or by one node twice).
	Windows int
	// Differ counts windows whose digests differ: must be zero.
	Differ int
	// First names the lowest differing windows, with each node's digest.
	First []string
}

// compareDigests compares the digests in the nodes' logs (logs[i] is node
// i's log, every life of it).
func compareDigests(logs [][]byte) ApplyDigests {
	seen := map[digestWindow]map[uint64][]int{} // digest -> nodes that logged it
	for node, log := range logs {
		sc := bufio.NewScanner(bytes.NewReader(log))
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			m := digestLine.FindSubmatch(sc.Bytes())
			if m == nil {
				continue
			}
			shard, _ := strconv.Atoi(string(m[1]))
			from, _ := strconv.ParseUint(string(m[2]), 10, 64)
			to, _ := strconv.ParseUint(string(m[3]), 10, 64)
			digest, _ := strconv.ParseUint(string(m[4]), 10, 64)
			w := digestWindow{shard, from, to}
			if seen[w] == nil {
				seen[w] = map[uint64][]int{}
			}
			seen[w][digest] = append(seen[w][digest], node)
		}
	}
	var out ApplyDigests
	var differ []digestWindow
	for w, ds := range seen {
		n := 0
		for _, nodes := range ds {
			n += len(nodes)
		}
		if n >= 2 {
			out.Windows++
		}
		if len(ds) > 1 {
			differ = append(differ, w)
		}
	}
	out.Differ = len(differ)
	sort.Slice(differ, func(i, j int) bool {
		if differ[i].from != differ[j].from {
			return differ[i].from < differ[j].from
		}
		return differ[i].shard < differ[j].shard
	})
	for _, w := range differ[:min(len(differ), 5)] {
		var parts []string
		for d, nodes := range seen[w] {
			for _, n := range nodes {
				parts = append(parts, fmt.Sprintf("n%d %d", n+1, d))
			}
		}
		sort.Strings(parts)
		out.First = append(out.First, fmt.Sprintf("shard %d raft indexes %d-%d: %v", w.shard, w.from, w.to, parts))
	}
	return out
}
