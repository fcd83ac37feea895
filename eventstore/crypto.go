package eventstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/esraft/esraft/raftlog"
)

// Crypto-shredding (opt-in, Encrypt): the data of events of an encrypted
// stream is sealed with AES-256-GCM under its subject's key, a random
// 256-bit key kept in the replicated log itself, in the system stream
// KeyStreamPrefix + subject (one event per key, its data the key wrapped
// by the operator's key-encryption key, Encryption.KEK). Shred deletes that
// stream: every node stops decrypting the subject's events as soon as it
// applies the delete, and erases the key from its state files at its next
// flush. Backups (Store.Backup) leave the key streams out, so no backup
// ever holds a key: a restored node reads encrypted events as shredded
// until keys are imported from a live cluster's export (ExportKeys,
// ImportKeys), which holds no key of a subject shredded before it was
// made. SECURITY.md states the guarantee and its limits.

// KeyStreamPrefix starts the name of the stream holding a subject's key.
const KeyStreamPrefix = "$key-"

// Record headers of an encrypted event and of a key.
const (
	hdrSealed  = "$e"      // on an encrypted event: "<key version>:<subject>"
	hdrWrapped = "wrapped" // on a key event: "aes-256-gcm" when the key is wrapped by the KEK
	// on an imported key event: the version of the key event it stands for
	hdrImported = "imported"
	keyType     = "key"
	keyBytes    = 32
)

// Encryption configures crypto-shredding (see Encrypt).
type Encryption struct {
	// Subject returns the subject whose key encrypts the data of stream's
	// events, or "" for a stream that is not encrypted. Every node and
	// client of a store must use the same function. SubjectPerStream
	// gives each stream of some categories its own key.
	Subject func(stream string) string
	// KEK, the key-encryption key (32 bytes), wraps every subject key
	// (AES-256-GCM) before it is written to the log, so the raft log and
	// state files never hold a key in clear. Keep it outside the data
	// directories, the same on every node. Nil: keys are stored as
	// generated.
	KEK []byte
}

// SubjectPerStream encrypts each stream of the given categories (see
// InCategory) under a key of its own, named by the stream, and an
// aggregate's snapshots ("$snapshot-" + stream) under its stream's key, so
// that shredding a stream shreds its snapshots too.
func SubjectPerStream(categories ...string) func(stream string) string {
	return func(stream string) string {
		s := strings.TrimPrefix(stream, "$snapshot-")
		for _, c := range categories {
			if InCategory(s, c) {
				return s
			}
		}
		return ""
	}
}

// Encrypt turns crypto-shredding on for the streams e.Subject names (see
// Encryption and Shred). The data of their events is stored encrypted;
// type, metadata, stream name and times are not. Reads decrypt: each read
// (a stream page, a partition page, a subscription batch) reads the key of
// each subject it meets once. A shredded event comes with Data nil and
// Unreadable set, in reads and subscriptions alike: a projection handler
// must expect it (package aggregate skips them).
func Encrypt(e Encryption) Option {
	return optionFunc(func(s *settings) { s.enc = &e })
}

// ShreddedError is the Unreadable error of an event whose subject key was
// deleted (Shred), or is not on this cluster (a restored backup without
// its keys imported); appending to a shredded subject fails with it too.
type ShreddedError struct {
	Stream  string
	Version uint64 // 0 for an append
	Subject string
}

func (e *ShreddedError) Error() string {
	if e.Version == 0 {
		return fmt.Sprintf("eventstore: the key of subject %q was shredded: %q takes no more encrypted events", e.Subject, e.Stream)
	}
	return fmt.Sprintf("eventstore: %s version %d is unreadable: the key of subject %q was shredded", e.Stream, e.Version, e.Subject)
}

// Is makes errors.Is(err, ErrShredded) true.
func (e *ShreddedError) Is(target error) bool { return target == ErrShredded }

// crypt is a store's encryption.
type crypt struct {
	subject func(string) string
	kek     cipher.AEAD // nil: keys are not wrapped

	// keys caches unwrapped keys by tag ("<version>:<subject>"), at most
	// keyCacheSize. A cached key is used only after a look at its key
	// stream on this node (in memory on a replica) says it is not
	// shredded.
	mu   sync.Mutex
	keys map[string]subjectKey
}

const keyCacheSize = 4096

func keyTag(version uint64, subject string) string {
	return strconv.FormatUint(version, 10) + ":" + subject
}

func (c *crypt) cached(tag string) (subjectKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.keys[tag]
	return k, ok
}

func (c *crypt) remember(tag string, k subjectKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = make(map[string]subjectKey)
	}
	if len(c.keys) >= keyCacheSize {
		for t := range c.keys { // any one: the cache only saves reads
			delete(c.keys, t)
			break
		}
	}
	c.keys[tag] = k
}

func newCrypt(e *Encryption) (*crypt, error) {
	if e.Subject == nil {
		return nil, fmt.Errorf("%w: Encryption.Subject is required", ErrInvalidOptions)
	}
	c := &crypt{subject: e.Subject}
	if e.KEK != nil {
		var err error
		if c.kek, err = newGCM(e.KEK); err != nil {
			return nil, fmt.Errorf("%w: Encryption.KEK: %v", ErrInvalidOptions, err)
		}
	}
	return c, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != keyBytes {
		return nil, fmt.Errorf("a key of %d bytes; AES-256 takes %d", len(key), keyBytes)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// seal encrypts b with aead, a random nonce first, bound to aad.
func seal(aead cipher.AEAD, b, aad []byte) []byte {
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(b)+aead.Overhead())
	rand.Read(out)
	return aead.Seal(out, out, b, aad)
}

func open(aead cipher.AEAD, b, aad []byte) ([]byte, error) {
	n := aead.NonceSize()
	if len(b) < n {
		return nil, errors.New("ciphertext too short")
	}
	return aead.Open(nil, b[:n], b[n:], aad)
}

// KeyStream returns the name of the stream holding subject's key.
func KeyStream(subject string) string { return KeyStreamPrefix + subject }

// subjectKey is a subject's key and the version of its key event.
type subjectKey struct {
	aead    cipher.AEAD
	version uint64
}

// currentKey returns subject's key for an append to stream: its latest
// key event, created if the subject has none readable.
func (s *Store) currentKey(ctx context.Context, stream, subject string) (subjectKey, error) {
	ks := KeyStream(subject)
	for attempt := 0; attempt < 3; attempt++ {
		info, err := s.Stream(ctx, ks)
		if err != nil {
			return subjectKey{}, err
		}
		if info.Deleted {
			return subjectKey{}, &ShreddedError{Stream: stream, Subject: subject}
		}
		if k, ok := s.enc.cached(keyTag(info.Version, subject)); ok {
			return k, nil
		}
		evs, err := s.ReadStreamBackward(ctx, ks, 0, 1)
		if err != nil {
			return subjectKey{}, err
		}
		if len(evs) == 1 {
			k, err := s.enc.unwrap(subject, &evs[0])
			if err == nil {
				s.enc.remember(keyTag(k.version, subject), k)
			}
			return k, err
		}
		// None, or none readable (a restored backup whose keys were not
		// imported): a new key; the events sealed before stay
		// unreadable.
		key := make([]byte, keyBytes)
		rand.Read(key)
		_, err = s.Append(ctx, ks, Exact(info.Version), []EventData{s.enc.keyEvent(subject, key, 0)})
		var wv *WrongVersionError
		if errors.As(err, &wv) {
			continue // another writer made the key first: use that one
		}
		if err != nil {
			return subjectKey{}, fmt.Errorf("eventstore: store the key of subject %q: %w", subject, err)
		}
	}
	return subjectKey{}, fmt.Errorf("eventstore: the key of subject %q could not be read back", subject)
}

// keyEvent is the event storing key, wrapped if there is a KEK; imported
// (not 0) is the version of the key event it stands for, in the cluster
// it was exported from.
func (c *crypt) keyEvent(subject string, key []byte, imported uint64) EventData {
	ev := EventData{ID: uuid.Must(uuid.NewV7()), Type: keyType, Data: key, Metadata: Metadata{Headers: map[string]string{}}}
	if c.kek != nil {
		ev.Data = seal(c.kek, key, []byte(subject))
		ev.Metadata.Headers[hdrWrapped] = "aes-256-gcm"
	}
	if imported != 0 {
		ev.Metadata.Headers[hdrImported] = strconv.FormatUint(imported, 10)
	}
	return ev
}

// unwrap returns the key a key event holds.
func (c *crypt) unwrap(subject string, ev *Event) (subjectKey, error) {
	key, err := c.unwrapRaw(subject, ev.Data, ev.Metadata.Headers[hdrWrapped] != "")
	if err != nil {
		return subjectKey{}, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return subjectKey{}, fmt.Errorf("eventstore: the key of subject %q: %w", subject, err)
	}
	return subjectKey{aead: aead, version: ev.Version}, nil
}

// unwrapRaw returns the key stored as b (wrapped or not).
func (c *crypt) unwrapRaw(subject string, b []byte, wrapped bool) ([]byte, error) {
	if !wrapped {
		if len(b) != keyBytes {
			return nil, fmt.Errorf("eventstore: the key of subject %q has %d bytes", subject, len(b))
		}
		return b, nil
	}
	if c.kek == nil {
		return nil, fmt.Errorf("eventstore: the key of subject %q is wrapped: open the store with Encryption.KEK", subject)
	}
	key, err := open(c.kek, b, []byte(subject))
	if err != nil {
		return nil, fmt.Errorf("eventstore: unwrap the key of subject %q (is Encryption.KEK the one it was wrapped with?): %w", subject, err)
	}
	return key, nil
}

// encryptRecords seals the values of recs, appended to stream, under its
// subject's key, if it has one.
func (s *Store) encryptRecords(ctx context.Context, stream string, recs []raftlog.NewRecord) error {
	if s.encErr != nil {
		return s.encErr
	}
	if s.enc == nil || strings.HasPrefix(stream, KeyStreamPrefix) {
		return nil
	}
	subject := s.enc.subject(stream)
	if subject == "" {
		return nil
	}
	k, err := s.currentKey(ctx, stream, subject)
	if err != nil {
		return err
	}
	tag := []byte(keyTag(k.version, subject))
	for i := range recs {
		r := &recs[i]
		if r.ID == (uuid.UUID{}) {
			r.ID = uuid.Must(uuid.NewV7()) // the ciphertext is bound to it
		}
		r.Value = seal(k.aead, r.Value, sealAAD(stream, r.ID))
		r.Headers = append(r.Headers, raftlog.Header{Key: hdrSealed, Value: tag})
	}
	return nil
}

func sealAAD(stream string, id uuid.UUID) []byte { return append([]byte(stream), id[:]...) }

// decrypt opens the data of the encrypted events among evs in place; an
// event whose key is gone gets Unreadable set and no data. Keys are read
// once per call and subject, so a shred applied on this node takes effect
// at the next read.
func (s *Store) decrypt(ctx context.Context, evs []Event) error {
	var keys map[string]subjectKey
	for i := range evs {
		ev := &evs[i]
		if ev.sealed == "" {
			continue
		}
		if keys == nil {
			keys = map[string]subjectKey{}
		}
		k, ok := keys[ev.sealed]
		if !ok {
			var err error
			if k, err = s.keyOf(ctx, ev.sealed); err != nil {
				return err
			}
			keys[ev.sealed] = k
		}
		_, subject, _ := strings.Cut(ev.sealed, ":")
		if k.aead == nil {
			ev.Data, ev.Unreadable = nil, &ShreddedError{Stream: ev.Stream, Version: ev.Version, Subject: subject}
			continue
		}
		data, err := open(k.aead, ev.Data, sealAAD(ev.Stream, ev.ID))
		if err != nil {
			return fmt.Errorf("eventstore: %s version %d: decrypt under the key of subject %q: %w", ev.Stream, ev.Version, subject, err)
		}
		ev.Data = data
	}
	return nil
}

// keyOf returns the key a sealed tag names ("<version>:<subject>"): the
// key event of that version, or one imported for it (ImportKeys); without
// aead if there is neither (shredded, or a restored backup's key not
// imported).
func (s *Store) keyOf(ctx context.Context, tag string) (subjectKey, error) {
	v, subject, ok := strings.Cut(tag, ":")
	version, err := strconv.ParseUint(v, 10, 64)
	if !ok || err != nil || version == 0 {
		return subjectKey{}, fmt.Errorf("eventstore: an encrypted event tagged %q, which names no key", tag)
	}
	if s.enc == nil {
		if s.encErr != nil {
			return subjectKey{}, s.encErr
		}
		return subjectKey{}, fmt.Errorf("eventstore: an encrypted event of subject %q: open the store with Encrypt", subject)
	}
	if k, ok := s.enc.cached(tag); ok {
		// Still there? A shred applied here since it was cached ends it.
		info, err := s.Stream(ctx, KeyStream(subject))
		if err != nil {
			return subjectKey{}, err
		}
		if info.Deleted {
			return subjectKey{}, nil
		}
		return k, nil
	}
	for barrier := false; ; barrier = true {
		// A key stream holds a key event per key made or imported: a few.
		evs, err := s.ReadStream(ctx, KeyStream(subject), 0, maxKeyEvents)
		if errors.Is(err, ErrStreamDeleted) {
			return subjectKey{}, nil
		}
		if err != nil {
			return subjectKey{}, err
		}
		for i := range evs {
			if evs[i].Version == version || evs[i].Metadata.Headers[hdrImported] == v {
				k, err := s.enc.unwrap(subject, &evs[i])
				if err == nil {
					s.enc.remember(tag, k)
				}
				return k, err
			}
		}
		info, err := s.Stream(ctx, KeyStream(subject))
		if err != nil {
			return subjectKey{}, err
		}
		if barrier || info.Version >= version {
			return subjectKey{}, nil // erased: a restored backup's, not imported
		}
		// The key stream may live on another shard, which this replica
		// has applied less far than the event's: catch up once.
		if err := s.Barrier(ctx); err != nil {
			return subjectKey{}, err
		}
	}
}

// maxKeyEvents bounds the key events read for one subject.
const maxKeyEvents = 1000

// Shred deletes subject's key: on every node, as soon as it applies the
// delete, the data of the subject's events reads as unreadable
// (Event.Unreadable, a *ShreddedError) and appends to its streams fail
// with one; each node erases the key from its state files at its next
// flush (the raft log keeps the wrapped key until it compacts past the
// delete, SECURITY.md). Shredding a subject with no key, or shredded, is
// allowed.
func (s *Store) Shred(ctx context.Context, subject string) error {
	if subject == "" {
		return fmt.Errorf("%w: empty subject", ErrInvalidOptions)
	}
	_, err := s.DeleteStream(ctx, KeyStream(subject), Any)
	return err
}

// ExportedKey is a line of a key export (ExportKeys): a subject's key
// event as stored (wrapped by the KEK if the store has one).
type ExportedKey struct {
	Subject string `json:"subject"`
	// Version is the version of the key event in the exporting cluster,
	// which the subject's encrypted events name.
	Version uint64 `json:"version"`
	Key     []byte `json:"key"`
	Wrapped string `json:"wrapped,omitempty"`
}

// ExportKeys writes every subject key this node holds, as JSON lines of
// ExportedKey, and returns how many: what a restore of a backup (which
// holds no key) imports with ImportKeys. Shredded subjects are not in it.
// An export is key material: keep it only as long as the restore needs it,
// since a subject shredded after the export stays readable with it
// (SECURITY.md). Needs this node's replica (not a thin client).
func (s *Store) ExportKeys(ctx context.Context, w io.Writer) (int, error) {
	enc := json.NewEncoder(w)
	n := 0
	after := ""
	for {
		page, err := s.ListStreams(ctx, ListStreamsOptions{Prefix: KeyStreamPrefix, After: after, Limit: MaxListStreams})
		if err != nil {
			return n, err
		}
		for _, ls := range page {
			if ls.Deleted {
				continue
			}
			subject := strings.TrimPrefix(ls.Stream, KeyStreamPrefix)
			evs, err := s.ReadStream(ctx, ls.Stream, 0, maxKeyEvents)
			if errors.Is(err, ErrStreamDeleted) {
				continue // shredded since it was listed
			}
			if err != nil {
				return n, err
			}
			for _, ev := range evs {
				k := ExportedKey{Subject: subject, Version: ev.Version, Key: ev.Data, Wrapped: ev.Metadata.Headers[hdrWrapped]}
				if iv := ev.Metadata.Headers[hdrImported]; iv != "" {
					k.Version, _ = strconv.ParseUint(iv, 10, 64)
				}
				if err := enc.Encode(k); err != nil {
					return n, err
				}
				n++
			}
		}
		if len(page) < MaxListStreams {
			return n, nil
		}
		after = page[len(page)-1].Stream
	}
}

// ImportKeys adds the keys of an export (ExportKeys) to this store, so
// that the events they sealed read again: meant for a cluster restored
// from a backup, before it takes appends. A key of a subject shredded
// here is skipped; a key already present is kept. Every key must unwrap
// with this store's KEK. It returns how many keys it added.
func (s *Store) ImportKeys(ctx context.Context, r io.Reader) (int, error) {
	if s.encErr != nil {
		return 0, s.encErr
	}
	if s.enc == nil {
		return 0, fmt.Errorf("%w: importing keys needs a store opened with Encrypt", ErrInvalidOptions)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, maxKeyLine)
	n := 0
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var k ExportedKey
		if err := json.Unmarshal(sc.Bytes(), &k); err != nil {
			return n, fmt.Errorf("%w: key export, line %d: %v", ErrInvalidOptions, line, err)
		}
		if k.Subject == "" || k.Version == 0 {
			return n, fmt.Errorf("%w: key export, line %d: no subject or version", ErrInvalidOptions, line)
		}
		raw, err := s.enc.unwrapRaw(k.Subject, k.Key, k.Wrapped != "")
		if err != nil {
			return n, fmt.Errorf("%w: key export, line %d: %w", ErrInvalidOptions, line, err)
		}
		if have, err := s.keyOf(ctx, keyTag(k.Version, k.Subject)); err != nil {
			return n, err
		} else if have.aead != nil {
			continue
		}
		_, err = s.Append(ctx, KeyStream(k.Subject), Any, []EventData{s.enc.keyEvent(k.Subject, raw, k.Version)})
		if errors.Is(err, ErrStreamDeleted) {
			continue // shredded here
		}
		if err != nil {
			return n, fmt.Errorf("eventstore: import the key of subject %q: %w", k.Subject, err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("%w: key export: %v", ErrInvalidOptions, err)
	}
	return n, nil
}

// maxKeyLine bounds one line of a key export (a key takes about 150
// bytes), and so what ImportKeys holds in memory.
const maxKeyLine = 64 << 10
