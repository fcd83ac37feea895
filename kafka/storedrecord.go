package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// recordEventType is the event type of a Kafka record in its stream.
const recordEventType = "kafka.record"

// storedFormat is the first byte of an encoded record.
const storedFormat = 1

// encodeRecord is the event data of a Kafka record:
//
//	format (1 byte, 1) | timestamp (varint, Unix ms) | key | value |
//	header count (uvarint) | per header: name length (uvarint), name, value
//
// where key, value and header values are nullable: uvarint(length+1), 0
// for null, then the bytes.
func encodeRecord(dst []byte, r *Record) []byte {
	dst = append(dst, storedFormat)
	dst = binary.AppendVarint(dst, r.Timestamp)
	dst = appendNullable(dst, r.Key)
	dst = appendNullable(dst, r.Value)
	dst = binary.AppendUvarint(dst, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		dst = binary.AppendUvarint(dst, uint64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendNullable(dst, h.Value)
	}
	return dst
}

func appendNullable(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b))+1)
	return append(dst, b...)
}

var errStoredRecord = errors.New("kafka: stored record does not decode")

// decodeRecord reads what encodeRecord wrote; the slices alias data.
func decodeRecord(data []byte) (Record, error) {
	var r Record
	if len(data) == 0 || data[0] != storedFormat {
		return r, fmt.Errorf("%w: unknown format", errStoredRecord)
	}
	d := data[1:]
	ts, n := binary.Varint(d)
	if n <= 0 {
		return r, errStoredRecord
	}
	r.Timestamp = ts
	d = d[n:]
	var ok bool
	if r.Key, d, ok = readNullable(d); !ok {
		return r, errStoredRecord
	}
	if r.Value, d, ok = readNullable(d); !ok {
		return r, errStoredRecord
	}
	count, n := binary.Uvarint(d)
	if n <= 0 || count > uint64(len(d)) {
		return r, errStoredRecord
	}
	d = d[n:]
	if count > 0 {
		r.Headers = make([]Header, count)
	}
	for i := range r.Headers {
		l, n := binary.Uvarint(d)
		if n <= 0 || l > uint64(len(d)-n) {
			return r, errStoredRecord
		}
		r.Headers[i].Key = string(d[n : n+int(l)])
		d = d[n+int(l):]
		if r.Headers[i].Value, d, ok = readNullable(d); !ok {
			return r, errStoredRecord
		}
	}
	if len(d) != 0 {
		return r, errStoredRecord
	}
	return r, nil
}

func readNullable(d []byte) (val, rest []byte, ok bool) {
	l, n := binary.Uvarint(d)
	if n <= 0 {
		return nil, nil, false
	}
	d = d[n:]
	if l == 0 {
		return nil, d, true
	}
	l--
	if l > uint64(len(d)) {
		return nil, nil, false
	}
	return d[:l:l], d[l:], true
}
