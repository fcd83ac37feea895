package eventstore_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
)

// What crypto-shredding costs (figures in BENCHMARKS.md), clear and
// encrypted alike on one node:
//
//	go test -run '^$' -bench 'Encryption' -benchtime 3s -count 5 ./eventstore/

var benchEncryption = eventstore.Encrypt(eventstore.Encryption{
	Subject: eventstore.SubjectPerStream("account"), KEK: bytes.Repeat([]byte{5}, 32)})

// BenchmarkEncryptionAppend: BenchmarkAppendExpectedVersion's load (one
// event per append, 10,000 streams, 64 goroutines), each stream its own
// key when encrypted.
func BenchmarkEncryptionAppend(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []eventstore.Option
	}{{"clear", nil}, {"encrypted", []eventstore.Option{benchEncryption}}} {
		b.Run(c.name, func(b *testing.B) {
			b.StopTimer()
			eventstoretest.BenchAppendExact(b, eventstoretest.Single(b, c.opts...).Node(0), 64)
		})
	}
}

// BenchmarkEncryptionReadStream reads a whole 10,000-event stream.
func BenchmarkEncryptionReadStream(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []eventstore.Option
	}{{"clear", nil}, {"encrypted", []eventstore.Option{benchEncryption}}} {
		b.Run(c.name, func(b *testing.B) {
			s := eventstoretest.Single(b, c.opts...).Node(0)
			ctx := context.Background()
			data := make([]byte, 200)
			for v := uint64(0); v < 10000; v += 1000 {
				evs := make([]eventstore.EventData, 1000)
				for i := range evs {
					evs[i] = eventstore.EventData{Type: "Deposited", Data: data}
				}
				if _, err := s.Append(ctx, "account-1", eventstore.Exact(v), evs); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				evs, err := s.ReadStream(ctx, "account-1", 1, 10000)
				if err != nil || len(evs) != 10000 || evs[0].Unreadable != nil {
					b.Fatal(len(evs), err)
				}
			}
			b.ReportMetric(float64(b.N*10000)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
