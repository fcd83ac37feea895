package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/esraft/esraft/eventstore"
)

// Reserved streams and names.
const (
	topicsStream    = "$kafka-topics"
	producersStream = "$kafka-producers"
	offsetsPrefix   = "$kafka-offsets-"
	topicEventType  = "kafka.topic"
	// EventsTopic is the store's own events as a read-only topic: one
	// partition per log partition, offsets the log's.
	EventsTopic = "esraft.events"
	// maxTopicName is Kafka's limit on a topic name.
	maxTopicName = 249
)

// topicStream is the stream holding a topic partition's records.
func topicStream(topic string, partition int32) string {
	return "$kafka-" + topic + "-" + strconv.Itoa(int(partition))
}

// TopicConfig is a topic as recorded in "$kafka-topics".
type TopicConfig struct {
	Name       string `json:"name"`
	Partitions int32  `json:"partitions"`
	// RetentionMs drops records older than this many milliseconds of
	// log time (0: keep them all).
	RetentionMs int64 `json:"retention_ms,omitempty"`
}

// topics is this node's view of "$kafka-topics", refreshed from the
// stream when a name is missing.
type topics struct {
	store *eventstore.Store

	mu      sync.Mutex
	version uint64 // last version of topicsStream read
	byName  map[string]TopicConfig
}

func newTopics(s *eventstore.Store) *topics {
	return &topics{store: s, byName: map[string]TopicConfig{}}
}

var (
	errTopicExists  = errors.New("kafka: topic already exists")
	errInvalidTopic = errors.New("kafka: invalid topic name")
)

// validTopic reports whether name is a legal Kafka topic name:
// [a-zA-Z0-9._-], 1..249 bytes, not "." or "..".
func validTopic(name string) bool {
	if name == "" || len(name) > maxTopicName || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// refresh reads the topics appended since the last read on this replica.
func (t *topics) refresh(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refreshLocked(ctx)
}

func (t *topics) refreshLocked(ctx context.Context) error {
	for {
		evs, err := t.store.ReadStream(ctx, topicsStream, t.version+1, 1000)
		if err != nil {
			return err
		}
		for _, e := range evs {
			var tc TopicConfig
			if err := json.Unmarshal(e.Data, &tc); err != nil {
				return fmt.Errorf("kafka: %s version %d: %w", topicsStream, e.Version, err)
			}
			if _, ok := t.byName[tc.Name]; !ok { // the first record of a name wins
				t.byName[tc.Name] = tc
			}
			t.version = e.Version
		}
		if len(evs) < 1000 {
			return nil
		}
	}
}

// get returns a topic, refreshing once if this node does not know it.
func (t *topics) get(ctx context.Context, name string) (TopicConfig, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tc, ok := t.byName[name]; ok {
		return tc, true, nil
	}
	if err := t.refreshLocked(ctx); err != nil {
		return TopicConfig{}, false, err
	}
	tc, ok := t.byName[name]
	return tc, ok, nil
}

// all returns every topic this node knows, after a refresh.
func (t *topics) all(ctx context.Context) ([]TopicConfig, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.refreshLocked(ctx); err != nil {
		return nil, err
	}
	out := make([]TopicConfig, 0, len(t.byName))
	for _, tc := range t.byName {
		out = append(out, tc)
	}
	return out, nil
}

// create records a new topic. The append is conditioned on the version of
// "$kafka-topics" this node has read, so two nodes creating the same name
// at once cannot both succeed: the loser re-reads and finds it
// (errTopicExists).
func (t *topics) create(ctx context.Context, tc TopicConfig) error {
	if !validTopic(tc.Name) || tc.Name == EventsTopic {
		return errInvalidTopic
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if err := t.refreshLocked(ctx); err != nil {
			return err
		}
		if _, ok := t.byName[tc.Name]; ok {
			return errTopicExists
		}
		data, _ := json.Marshal(tc)
		_, err := t.store.Append(ctx, topicsStream, eventstore.Exact(t.version),
			[]eventstore.EventData{{Type: topicEventType, Data: data}})
		if errors.Is(err, eventstore.ErrWrongVersion) && attempt < 10 {
			// Another node recorded a topic first: read it, then decide.
			if err := t.store.Barrier(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		return t.refreshLocked(ctx)
	}
}
