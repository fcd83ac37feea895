package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/eventstore"
)

const (
	brokersStream   = "$kafka-brokers"
	brokerEventType = "kafka.broker"
)

// brokerRecord is a node's Kafka listener as recorded in "$kafka-brokers":
// the last record of a node wins.
type brokerRecord struct {
	NodeID   string `json:"node_id"`
	BrokerID int32  `json:"broker_id"`
	Host     string `json:"host"`
	Port     int32  `json:"port"`
}

// brokers is this node's view of "$kafka-brokers".
type brokers struct {
	store   *eventstore.Store
	mu      sync.Mutex
	version uint64
	byNode  map[string]brokerRecord
}

func newBrokers(s *eventstore.Store) *brokers {
	return &brokers{store: s, byNode: map[string]brokerRecord{}}
}

// register records this node's listener, retrying until it is recorded
// or ctx ends. The event ID is derived from the record, so a restart at
// the same address appends nothing new (within the log's ID retention).
func (b *brokers) register(ctx context.Context, rec brokerRecord) {
	data, _ := json.Marshal(rec)
	id := uuid.NewSHA1(producerIDSpace, append([]byte("broker:"), data...))
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := b.store.Append(actx, brokersStream, eventstore.Any,
			[]eventstore.EventData{{ID: id, Type: brokerEventType, Data: data}})
		cancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// refreshLocked reads the records appended since the last read.
func (b *brokers) refreshLocked(ctx context.Context) error {
	for {
		evs, err := b.store.ReadStream(ctx, brokersStream, b.version+1, 1000)
		if err != nil {
			return err
		}
		for _, e := range evs {
			var r brokerRecord
			if err := json.Unmarshal(e.Data, &r); err != nil {
				return fmt.Errorf("kafka: %s version %d: %w", brokersStream, e.Version, err)
			}
			b.byNode[r.NodeID] = r
			b.version = e.Version
		}
		if len(evs) < 1000 {
			return nil
		}
	}
}

// get returns the listener of node, refreshing once if unknown.
func (b *brokers) get(ctx context.Context, node string) (brokerRecord, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r, ok := b.byNode[node]; ok {
		return r, true
	}
	if b.refreshLocked(ctx) != nil {
		return brokerRecord{}, false
	}
	r, ok := b.byNode[node]
	return r, ok
}

// all returns every listener recorded, after a refresh.
func (b *brokers) all(ctx context.Context) []brokerRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refreshLocked(ctx)
	out := make([]brokerRecord, 0, len(b.byNode))
	for _, r := range b.byNode {
		out = append(out, r)
	}
	return out
}

// coordinator returns the listener that coordinates every consumer group:
// the one of the node leading the log's first shard (where the log keeps
// its own consumer groups), so that all nodes name the same one. It is
// this node's when the leader is this node, unknown (an election), has no
// listener recorded, or the store is a thin client.
func (s *Server) coordinator(ctx context.Context) (brokerRecord, bool) {
	self := brokerRecord{BrokerID: s.cfg.BrokerID, Host: s.host, Port: s.port}
	l := s.store.Log()
	if l == nil {
		return self, true
	}
	st := l.Status()
	if len(st.Shards) == 0 || st.Shards[0].LeaderID == "" || st.Shards[0].LeaderID == l.NodeID() {
		return self, true
	}
	if r, ok := s.brokers.get(ctx, st.Shards[0].LeaderID); ok {
		return r, r.BrokerID == s.cfg.BrokerID
	}
	return self, true
}
