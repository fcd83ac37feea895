package eventstore

import (
	"math/rand"
	"slices"
	"strings"
	"testing"
)

// The subscription filter's stream selection agrees with InCategory and
// exact stream names on random names made of a few parts joined by '-'.
func TestFilterSelectsAsInCategory(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	name := func() string {
		parts := make([]string, 1+rng.Intn(3))
		for i := range parts {
			parts[i] = []string{"a", "ab", "b", ""}[rng.Intn(4)]
		}
		return strings.Join(parts, "-")
	}
	for i := 0; i < 5000; i++ {
		cats, streams := []string{name(), name()}, []string{name()}
		f := newFilter(SubscribeOptions{Categories: cats, Streams: streams})
		s := name()
		want := slices.Contains(streams, s) || InCategory(s, cats[0]) || InCategory(s, cats[1])
		if got := f.selects(s); got != want {
			t.Fatalf("stream %q, categories %q, streams %q: selects %v, want %v", s, cats, streams, got, want)
		}
	}
}
