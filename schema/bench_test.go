package schema_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/schema"
	"github.com/esraft/esraft/systemtest/rawraftbench"
)

// Benchmarks of validation at append (figures in BENCHMARKS.md):
//
//	go test -run '^$' -bench 'BenchmarkAppendValidation' -benchtime 3s -count 1 ./schema/
//
// repeated, each run giving one pair (off, then on).

const benchSchema = `{"type":"object","properties":{
	"customer":{"type":"string","minLength":1},
	"items":{"type":"array","minItems":1,"items":{"type":"object","properties":{
		"sku":{"type":"string","pattern":"^[a-z0-9-]+$"},"qty":{"type":"integer","minimum":1},"price_cents":{"type":"integer","minimum":0}},
		"required":["sku","qty","price_cents"],"additionalProperties":false}},
	"total_cents":{"type":"integer","minimum":0},
	"note":{"type":"string","maxLength":200}},
	"required":["customer","items","total_cents"],"additionalProperties":false}`

// benchEvent is about 200 bytes, like the other benchmarks' events.
var benchEvent = []byte(`{"customer":"ann-4711","items":[{"sku":"book-123","qty":2,"price_cents":1250},{"sku":"pen-9","qty":10,"price_cents":300},{"sku":"lamp-77","qty":1,"price_cents":4500}],"total_cents":10000,"note":"leave at the door"}`)

// BenchmarkAppendValidation: one event per append, 64 appenders, 4,096
// streams, on a single node; validation=off has no registry, on has the
// event's type registered (every event checked against it).
func BenchmarkAppendValidation(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("validation=%v", map[bool]string{false: "off", true: "on"}[on]), func(b *testing.B) {
			b.StopTimer()
			s := eventstoretest.Single(b).Node(0)
			ctx := context.Background()
			if on {
				benchRegistry(b, s)
			}
			names := make([]string, 4096)
			for i := range names {
				names[i] = fmt.Sprintf("order-%d", i)
			}
			var n atomic.Uint64
			rawraftbench.RunUnit(b, func() error {
				i := n.Add(1) % uint64(len(names))
				_, err := s.Append(ctx, names[i], eventstore.Any, []eventstore.EventData{{Type: "OrderPlaced", Data: benchEvent}})
				return err
			}, 64, "events/s")
		})
	}
}

// benchRegistry opens a registry over s with benchSchema registered.
func benchRegistry(b *testing.B, s *eventstore.Store) *schema.Registry {
	b.Helper()
	ctx := context.Background()
	r, err := schema.Open(ctx, s)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	if _, err := r.Register(ctx, "OrderPlaced", []byte(benchSchema)); err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkValidateEvent is the validation of one event alone (JSON
// parsing and the compiled schema), without the append.
func BenchmarkValidateEvent(b *testing.B) {
	ctx := context.Background()
	r := benchRegistry(b, eventstoretest.Single(b).Node(0))
	e := eventstore.EventData{Type: "OrderPlaced", Data: benchEvent}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.ValidateEvent(ctx, "order-1", 0, &e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendValidationInterleaved measures the same thing with the
// load of a shared machine cancelled out: one store, 64 appenders running
// throughout, and validation switched off and on (SetValidator) in phases
// of 500 ms, the order alternating; each of the b.N rounds is one phase
// of each. It reports the median of the per-round on/off ratios. The
// registry stays open in both phases (its follower runs throughout): off
// measures the append path without validation.
//
//	go test -run '^$' -bench BenchmarkAppendValidationInterleaved -benchtime 20x ./schema/
func BenchmarkAppendValidationInterleaved(b *testing.B) {
	s := eventstoretest.Single(b).Node(0)
	r := benchRegistry(b, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	names := make([]string, 4096)
	for i := range names {
		names[i] = fmt.Sprintf("order-%d", i)
	}
	var n, done atomic.Uint64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := n.Add(1) % uint64(len(names))
				if _, err := s.Append(ctx, names[i], eventstore.Any, []eventstore.EventData{{Type: "OrderPlaced", Data: benchEvent}}); err != nil {
					if ctx.Err() == nil {
						failed.Store(&err)
					}
					return
				}
				done.Add(1)
			}
		}()
	}
	phase := func(on bool) float64 {
		if on {
			s.SetValidator(r)
		} else {
			s.SetValidator(nil)
		}
		start, from := time.Now(), done.Load()
		<-time.After(500 * time.Millisecond) // a measuring window, not a wait for a condition
		return float64(done.Load()-from) / time.Since(start).Seconds()
	}
	phase(true) // warm up
	var offs, ons, ratios []float64
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		var off, on float64
		if round%2 == 0 {
			off, on = phase(false), phase(true)
		} else {
			on, off = phase(true), phase(false)
		}
		offs, ons, ratios = append(offs, off), append(ons, on), append(ratios, on/off)
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(median(offs), "off-events/s")
	b.ReportMetric(median(ons), "on-events/s")
	b.ReportMetric(median(ratios), "on/off")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
