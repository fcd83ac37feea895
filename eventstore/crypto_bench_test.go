package eventstore_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
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

// hundredSubjects spreads the benchmark's 10,000 streams over 100 keys.
var hundredSubjects = eventstore.Encrypt(eventstore.Encryption{
	Subject: func(stream string) string {
		n, err := strconv.Atoi(strings.TrimPrefix(stream, "account-"))
		if err != nil {
			return ""
		}
		return "s" + strconv.Itoa(n%100)
	},
	KEK: bytes.Repeat([]byte{5}, 32)})

// BenchmarkEncryptionAppend: BenchmarkAppendExpectedVersion's load (one
// event per append, 10,000 streams, 64 goroutines), encrypted with each
// stream its own key (the first append of each makes it: an append more)
// or under 100 keys.
func BenchmarkEncryptionAppend(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []eventstore.Option
	}{{"clear", nil}, {"encrypted", []eventstore.Option{benchEncryption}}, {"encrypted-100-keys", []eventstore.Option{hundredSubjects}}} {
		b.Run(c.name, func(b *testing.B) {
			b.StopTimer()
			eventstoretest.BenchAppendExact(b, eventstoretest.Single(b, c.opts...).Node(0), 64, 1)
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
			fillStream(b, s, "account-1")
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
