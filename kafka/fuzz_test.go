package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/esraft/esraft/eventstore"
)

// frame encodes req as a client sends it: size, request header (v2 with
// tagged fields for flexible versions) and body.
func frame(req kmsg.Request, correlation int32) []byte {
	b := []byte{0, 0, 0, 0}
	b = binary.BigEndian.AppendUint16(b, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, uint32(correlation))
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, "fuzz"...)
	if req.IsFlexible() {
		b = append(b, 0)
	}
	b = req.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// seedRequests are one valid request of every served API at its lowest
// and highest version, framed.
func seedRequests() [][]byte {
	var out [][]byte
	batch := appendBatch(nil, 0, 0, []batchRecord{{Record: Record{Timestamp: 1, Key: []byte("k"), Value: []byte("v"),
		Headers: []Header{{Key: "h", Value: []byte("x")}}}}})
	for key, v := range versions {
		for _, ver := range []int16{v[0], v[1]} {
			req := kmsg.RequestForKey(key)
			req.SetVersion(ver)
			switch r := req.(type) {
			case *kmsg.ProduceRequest:
				r.Acks, r.TimeoutMillis = -1, 1000
				rt := kmsg.NewProduceRequestTopic()
				rt.Topic = "fuzz"
				rp := kmsg.NewProduceRequestTopicPartition()
				rp.Records = batch
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
			case *kmsg.FetchRequest:
				r.MaxWaitMillis, r.MinBytes, r.MaxBytes = 10, 1, 1<<20
				rt := kmsg.NewFetchRequestTopic()
				rt.Topic = "fuzz"
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.PartitionMaxBytes = 1 << 20
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
			case *kmsg.MetadataRequest:
				mt := kmsg.NewMetadataRequestTopic()
				mt.Topic = kmsg.StringPtr("fuzz")
				r.Topics = append(r.Topics, mt)
				r.AllowAutoTopicCreation = true
			case *kmsg.CreateTopicsRequest:
				rt := kmsg.NewCreateTopicsRequestTopic()
				rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "fuzz2", 2, -1
				r.Topics = append(r.Topics, rt)
			case *kmsg.JoinGroupRequest:
				r.Group, r.ProtocolType = "g", "consumer"
				r.SessionTimeoutMillis, r.RebalanceTimeoutMillis = 1000, 1000
				p := kmsg.NewJoinGroupRequestProtocol()
				p.Name = "range"
				r.Protocols = append(r.Protocols, p)
			case *kmsg.OffsetCommitRequest:
				r.Group, r.Generation = "g", -1
				rt := kmsg.NewOffsetCommitRequestTopic()
				rt.Topic = "fuzz"
				rp := kmsg.NewOffsetCommitRequestTopicPartition()
				rp.Offset = 1
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
			case *kmsg.OffsetFetchRequest:
				r.Group = "g"
			case *kmsg.ListOffsetsRequest:
				rt := kmsg.NewListOffsetsRequestTopic()
				rt.Topic = "fuzz"
				rp := kmsg.NewListOffsetsRequestTopicPartition()
				rp.Timestamp = -2
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
			}
			out = append(out, frame(req, 7))
		}
	}
	return out
}

// openFuzzStore opens one store for every input of a fuzz target:
// opening one per input would dominate the run.
func openFuzzStore(f *testing.F) *eventstore.Store {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := eventstore.Open(ctx, f.TempDir())
	require.NoError(f, err)
	f.Cleanup(func() { store.Close() })
	return store
}

// FuzzServeConn sends arbitrary bytes to a connection of the listener:
// every request is framed, decoded and handled, or the connection is
// closed; nothing panics and the handler always returns.
func FuzzServeConn(f *testing.F) {
	store := openFuzzStore(f)
	seeds := seedRequests()
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add(bytes.Join(seeds, nil))
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		srv, err := Listen(Config{Store: store, Addr: "127.0.0.1:0", MaxRequestBytes: 1 << 20})
		require.NoError(t, err)
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.serveConn(server)
			server.Close()
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(data)
		client.Close()
		select {
		case <-done:
		case <-time.After(500 * time.Millisecond):
			// A handler waits (a join, a long poll): Close ends it.
		}
		srv.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection's handler did not return after Close")
		}
	})
}

// FuzzParseRequest decodes arbitrary bytes as a request: the header and
// the body of every served API and version, through kmsg.
func FuzzParseRequest(f *testing.F) {
	for _, s := range seedRequests() {
		f.Add(s[4:])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := parseRequest(data)
		if err == nil {
			require.True(t, supported(req.key, req.version))
			require.NotNil(t, req.msg)
		}
	})
}

func compressed(codec int, data []byte) []byte {
	var buf bytes.Buffer
	switch codec {
	case codecGzip:
		w := gzip.NewWriter(&buf)
		w.Write(data)
		w.Close()
	case codecSnappy:
		return s2.EncodeSnappy(nil, data)
	case codecLZ4:
		w := lz4.NewWriter(&buf)
		w.Write(data)
		w.Close()
	case codecZstd:
		w, _ := zstd.NewWriter(&buf)
		w.Write(data)
		w.Close()
	default:
		return data
	}
	return buf.Bytes()
}

// compressedBatch re-encodes an uncompressed batch's records with codec.
func compressedBatch(codec int, b []byte) []byte {
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(b); err != nil {
		panic(err)
	}
	rb.Records = compressed(codec, rb.Records)
	rb.Attributes = int16(codec)
	out := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crcOf(out))
	return out
}

// FuzzDecodeBatch decodes arbitrary bytes as a produced record batch
// (CRC, decompression with every codec, records): an error or records,
// never a panic, and never more than the bound decompressed.
func FuzzDecodeBatch(f *testing.F) {
	recs := []batchRecord{
		{Offset: 0, Record: Record{Timestamp: 5, Key: []byte("key"), Value: bytes.Repeat([]byte("v"), 100)}},
		{Offset: 1, Record: Record{Timestamp: 6, Value: nil, Headers: []Header{{Key: "a", Value: nil}}}},
	}
	plain := appendBatch(nil, 0, 1, recs)
	for codec := codecNone; codec <= codecZstd; codec++ {
		f.Add(compressedBatch(codec, plain))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeBatches(data, 1<<16)
		if err == nil {
			size := 0
			for _, r := range b.Records {
				size += len(r.Key) + len(r.Value)
			}
			require.LessOrEqual(t, size, 1<<16)
		}
	})
}

// FuzzDecodeRecord decodes arbitrary bytes as a stored record; what
// decodes encodes to bytes that decode to the same record.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(nil, &Record{Timestamp: -3, Key: []byte("k"), Value: []byte{}, Headers: []Header{{Key: "h", Value: []byte("v")}, {Key: "n"}}}))
	f.Add(encodeRecord(nil, &Record{}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		if err == nil {
			again, err := decodeRecord(encodeRecord(nil, &r))
			require.NoError(t, err)
			require.Equal(t, r, again)
		}
	})
}
