package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Record is one Kafka record as a topic stores it.
type Record struct {
	// Timestamp is the record's time in Unix milliseconds (the producer's
	// CreateTime).
	Timestamp int64
	Key       []byte // nil: a null key
	Value     []byte // nil: a null value (a tombstone)
	Headers   []Header
}

// Header is one record header; a nil Value is a null value.
type Header struct {
	Key   string
	Value []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Compression codecs, the low three bits of a batch's attributes.
const (
	codecNone   = 0
	codecGzip   = 1
	codecSnappy = 2
	codecLZ4    = 3
	codecZstd   = 4

	attrTransactional = 0x10
	attrControl       = 0x20

	// batchHeaderLen is the record batch v2 header up to its records:
	// the CRC covers the bytes from crcStart (attributes) to the end.
	batchHeaderLen = 61
	crcStart       = 21
)

// errCorrupt marks a batch that does not decode: Kafka's CORRUPT_MESSAGE.
var errCorrupt = errors.New("kafka: corrupt record batch")

// errTooLarge marks a batch whose records, decompressed, exceed the bound:
// Kafka's MESSAGE_TOO_LARGE.
var errTooLarge = errors.New("kafka: record batch too large")

// decodedBatch is a produced batch: its producer fields and its records.
type decodedBatch struct {
	ProducerID    int64
	ProducerEpoch int16
	FirstSequence int32
	Transactional bool
	Records       []Record
}

// decodeBatches reads the record batches of one partition of a produce
// request: exactly one batch of magic 2 (what Produce v3+ requires), its
// CRC-32C checked, its records decompressed into at most maxBytes.
func decodeBatches(raw []byte, maxBytes int) (decodedBatch, error) {
	var b decodedBatch
	if len(raw) < batchHeaderLen {
		return b, fmt.Errorf("%w: %d bytes, shorter than a batch header", errCorrupt, len(raw))
	}
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(raw); err != nil {
		return b, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	if rb.Magic != 2 {
		return b, fmt.Errorf("%w: magic %d, only record batch v2 is accepted", errCorrupt, rb.Magic)
	}
	if int(rb.Length)+12 != len(raw) {
		return b, fmt.Errorf("%w: batch length %d does not match the %d bytes sent (one batch per partition)", errCorrupt, rb.Length, len(raw)-12)
	}
	if got := crc32.Checksum(raw[crcStart:], castagnoli); int32(got) != rb.CRC {
		return b, fmt.Errorf("%w: CRC-32C %08x, batch says %08x", errCorrupt, got, uint32(rb.CRC))
	}
	if rb.Attributes&attrControl != 0 {
		return b, fmt.Errorf("%w: control batches are not accepted", errCorrupt)
	}
	if rb.NumRecords < 0 || int(rb.NumRecords) > maxBytes/7 {
		return b, fmt.Errorf("%w: %d records", errCorrupt, rb.NumRecords)
	}
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = rb.ProducerID, rb.ProducerEpoch, rb.FirstSequence
	b.Transactional = rb.Attributes&attrTransactional != 0
	data, err := decompress(int(rb.Attributes&7), rb.Records, maxBytes)
	if err != nil {
		return b, err
	}
	b.Records = make([]Record, 0, rb.NumRecords)
	for i := 0; i < int(rb.NumRecords); i++ {
		l, n := binary.Varint(data)
		if n <= 0 || l < 0 || int64(len(data)-n) < l {
			return b, fmt.Errorf("%w: record %d: bad length", errCorrupt, i)
		}
		var r kmsg.Record
		if err := r.ReadFrom(data[:n+int(l)]); err != nil {
			return b, fmt.Errorf("%w: record %d: %v", errCorrupt, i, err)
		}
		data = data[n+int(l):]
		rec := Record{Timestamp: rb.FirstTimestamp + r.TimestampDelta64, Key: r.Key, Value: r.Value}
		if len(r.Headers) > 0 {
			rec.Headers = make([]Header, len(r.Headers))
			for j, h := range r.Headers {
				rec.Headers[j] = Header{Key: h.Key, Value: h.Value}
			}
		}
		b.Records = append(b.Records, rec)
	}
	if len(data) != 0 {
		return b, fmt.Errorf("%w: %d bytes after the last record", errCorrupt, len(data))
	}
	return b, nil
}

var zstdDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		panic(err) // only options are checked, and these are valid
	}
	return d
}}

// xerialMagic starts the framed snappy that Java clients write.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// decompress returns the records of a batch compressed with codec, at
// most max bytes of them (errTooLarge past that).
func decompress(codec int, in []byte, max int) ([]byte, error) {
	var r io.Reader
	switch codec {
	case codecNone:
		if len(in) > max {
			return nil, errTooLarge
		}
		return in, nil
	case codecGzip:
		zr, err := gzip.NewReader(bytes.NewReader(in))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", errCorrupt, err)
		}
		defer zr.Close()
		r = zr
	case codecSnappy:
		if bytes.HasPrefix(in, xerialMagic) {
			return unxerial(in[len(xerialMagic):], max)
		}
		return unsnappy(in, max)
	case codecLZ4:
		r = lz4.NewReader(bytes.NewReader(in))
	case codecZstd:
		d := zstdDecoders.Get().(*zstd.Decoder)
		defer zstdDecoders.Put(d)
		if err := d.Reset(bytes.NewReader(in)); err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", errCorrupt, err)
		}
		r = d
	default:
		return nil, fmt.Errorf("%w: unknown compression codec %d", errCorrupt, codec)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: codec %d: %v", errCorrupt, codec, err)
	}
	if len(out) > max {
		return nil, errTooLarge
	}
	return out, nil
}

func unsnappy(in []byte, max int) ([]byte, error) {
	n, err := s2.DecodedLen(in)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", errCorrupt, err)
	}
	if n > max {
		return nil, errTooLarge
	}
	out, err := s2.Decode(nil, in)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", errCorrupt, err)
	}
	return out, nil
}

// unxerial decodes xerial's framing: after the magic, two 4-byte versions,
// then chunks, each a 4-byte big-endian length and a snappy block.
func unxerial(in []byte, max int) ([]byte, error) {
	if len(in) < 8 {
		return nil, fmt.Errorf("%w: snappy: short xerial header", errCorrupt)
	}
	in = in[8:]
	var out []byte
	for len(in) > 0 {
		if len(in) < 4 {
			return nil, fmt.Errorf("%w: snappy: short xerial chunk", errCorrupt)
		}
		l := binary.BigEndian.Uint32(in)
		in = in[4:]
		if uint64(l) > uint64(len(in)) {
			return nil, fmt.Errorf("%w: snappy: xerial chunk past the end", errCorrupt)
		}
		chunk, err := unsnappy(in[:l], max-len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, chunk...)
		in = in[l:]
	}
	return out, nil
}

// batchRecord is a record to encode in a fetch response.
type batchRecord struct {
	Offset int64
	Record
}

// appendBatch appends one uncompressed record batch v2 covering offsets
// first..last and holding recs (in offset order, within that range, maybe
// none: offsets with no record are skipped by the client, as after
// compaction) to dst. kmsg encodes the header and each record; the batch
// length and CRC-32C, which depend on the encoded bytes, are set in place
// afterwards.
func appendBatch(dst []byte, first, last int64, recs []batchRecord) []byte {
	rb := kmsg.NewRecordBatch()
	rb.FirstOffset = first
	rb.Magic = 2
	rb.LastOffsetDelta = int32(last - first)
	rb.FirstTimestamp, rb.MaxTimestamp = -1, -1
	if len(recs) > 0 {
		rb.FirstTimestamp = recs[0].Timestamp
		rb.MaxTimestamp = recs[0].Timestamp
	}
	rb.ProducerID = -1
	rb.ProducerEpoch = -1
	rb.FirstSequence = -1
	rb.NumRecords = int32(len(recs))
	// The records' size, to allocate the body once: each field's bytes and
	// at most 10 bytes of each length and varint.
	size := 0
	for i := range recs {
		r := &recs[i]
		size += len(r.Key) + len(r.Value) + 50
		for _, h := range r.Headers {
			size += len(h.Key) + len(h.Value) + 20
		}
	}
	body := make([]byte, 0, size)
	var kr kmsg.Record
	var headers []kmsg.Header // reused: AppendTo keeps nothing of kr
	for i := range recs {
		r := &recs[i]
		if r.Timestamp > rb.MaxTimestamp {
			rb.MaxTimestamp = r.Timestamp
		}
		headers = headers[:0]
		for _, h := range r.Headers {
			headers = append(headers, kmsg.Header{Key: h.Key, Value: h.Value})
		}
		kr = kmsg.Record{
			TimestampDelta64: r.Timestamp - rb.FirstTimestamp,
			OffsetDelta:      int32(r.Offset - first),
			Key:              r.Key,
			Value:            r.Value,
			Headers:          headers,
		}
		kr.Length = int32(recordBodyLen(&kr))
		body = kr.AppendTo(body)
	}
	rb.Records = body
	start := len(dst)
	dst = slices.Grow(dst, batchHeaderLen+len(body))
	dst = rb.AppendTo(dst)
	batch := dst[start:]
	binary.BigEndian.PutUint32(batch[8:12], uint32(len(batch)-12))
	binary.BigEndian.PutUint32(batch[17:21], crc32.Checksum(batch[crcStart:], castagnoli))
	return dst
}

// recordBodyLen is the encoded length of r after its own length field.
func recordBodyLen(r *kmsg.Record) int {
	n := 1 + varintLen(r.TimestampDelta64) + varintLen(int64(r.OffsetDelta))
	n += nullableLen(r.Key) + nullableLen(r.Value) + varintLen(int64(len(r.Headers)))
	for _, h := range r.Headers {
		n += varintLen(int64(len(h.Key))) + len(h.Key) + nullableLen(h.Value)
	}
	return n
}

func nullableLen(b []byte) int {
	if b == nil {
		return varintLen(-1)
	}
	return varintLen(int64(len(b))) + len(b)
}

func varintLen(v int64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutVarint(buf[:], v)
}
