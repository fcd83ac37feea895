package kafka

import (
	"context"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/esraft/esraft/eventstore"
)

// clusterID is the log's cluster ID ("" for an embedded log that has not
// learned one, or a thin client).
func (s *Server) clusterID() *string {
	if l := s.store.Log(); l != nil && l.ClusterID() != "" {
		id := l.ClusterID()
		return &id
	}
	return nil
}

// metadata answers with this node as the only broker and the leader of
// every partition: any node serves any partition (appends are forwarded
// to the raft leader inside the log), so a client never needs another.
func (s *Server) metadata(req request) kmsg.Response {
	r := req.msg.(*kmsg.MetadataRequest)
	resp := r.ResponseKind().(*kmsg.MetadataResponse)
	ctx, cancel := s.requestCtx(int32(10 * time.Second / time.Millisecond))
	defer cancel()
	b := kmsg.NewMetadataResponseBroker()
	b.NodeID, b.Host, b.Port = s.cfg.BrokerID, s.host, s.port
	resp.Brokers = []kmsg.MetadataResponseBroker{b}
	// The other nodes' listeners, so that a client can reach the group
	// coordinator; partitions are all led by this node.
	for _, r := range s.brokers.all(ctx) {
		if r.BrokerID != s.cfg.BrokerID {
			ob := kmsg.NewMetadataResponseBroker()
			ob.NodeID, ob.Host, ob.Port = r.BrokerID, r.Host, r.Port
			resp.Brokers = append(resp.Brokers, ob)
		}
	}
	resp.ClusterID = s.clusterID()
	resp.ControllerID = s.cfg.BrokerID

	var names []string
	if r.Topics == nil { // every topic
		all, err := s.topics.all(ctx)
		if err != nil {
			s.log.Warn("kafka: reading topics failed", "err", err)
		}
		for _, tc := range all {
			names = append(names, tc.Name)
		}
		names = append(names, EventsTopic)
		sort.Strings(names)
	} else {
		for _, t := range r.Topics {
			if t.Topic != nil {
				names = append(names, *t.Topic)
			}
		}
	}
	autoCreate := !s.cfg.DisableAutoCreate && (req.version < 4 || r.AllowAutoTopicCreation)
	for _, name := range names {
		resp.Topics = append(resp.Topics, s.topicMetadata(ctx, name, autoCreate))
	}
	return resp
}

func (s *Server) topicMetadata(ctx context.Context, name string, autoCreate bool) kmsg.MetadataResponseTopic {
	t := kmsg.NewMetadataResponseTopic()
	t.Topic = &name
	var partitions int32
	switch {
	case name == EventsTopic:
		partitions = int32(s.store.Partitions())
	default:
		tc, ok, err := s.topics.get(ctx, name)
		if err == nil && !ok && autoCreate {
			if !validTopic(name) {
				t.ErrorCode = kerr.InvalidTopicException.Code
				return t
			}
			err = s.topics.create(ctx, TopicConfig{Name: name, Partitions: s.cfg.DefaultPartitions})
			if err == nil || err == errTopicExists {
				tc, ok, err = s.topics.get(ctx, name)
			}
		}
		if err != nil {
			t.ErrorCode = errorCode(err)
			return t
		}
		if !ok {
			t.ErrorCode = kerr.UnknownTopicOrPartition.Code
			return t
		}
		partitions = tc.Partitions
	}
	for p := int32(0); p < partitions; p++ {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = p
		mp.Leader = s.cfg.BrokerID
		mp.Replicas = []int32{s.cfg.BrokerID}
		mp.ISR = []int32{s.cfg.BrokerID}
		t.Partitions = append(t.Partitions, mp)
	}
	return t
}

func (s *Server) createTopics(req request) kmsg.Response {
	r := req.msg.(*kmsg.CreateTopicsRequest)
	resp := r.ResponseKind().(*kmsg.CreateTopicsResponse)
	ctx, cancel := s.requestCtx(r.TimeoutMillis)
	defer cancel()
	for _, rt := range r.Topics {
		t := kmsg.NewCreateTopicsResponseTopic()
		t.Topic = rt.Topic
		tc := TopicConfig{Name: rt.Topic, Partitions: rt.NumPartitions}
		if tc.Partitions == -1 {
			tc.Partitions = s.cfg.DefaultPartitions
		}
		msg := ""
		switch {
		case !validTopic(rt.Topic) || rt.Topic == EventsTopic:
			t.ErrorCode = kerr.InvalidTopicException.Code
		case tc.Partitions < 1 || tc.Partitions > maxPartitionsPerTopic:
			t.ErrorCode = kerr.InvalidPartitions.Code
			msg = "partitions must be 1..10000"
		case len(rt.ReplicaAssignment) > 0:
			t.ErrorCode = kerr.InvalidReplicaAssignment.Code
			msg = "replicas are the log's: every voter holds every partition"
		case rt.ReplicationFactor != -1 && (rt.ReplicationFactor < 1 || rt.ReplicationFactor > 5):
			t.ErrorCode = kerr.InvalidReplicationFactor.Code
			msg = "the replication factor is the log's (its voters)"
		}
		for _, c := range rt.Configs {
			if t.ErrorCode != 0 {
				break
			}
			switch {
			case c.Name == "retention.ms" && c.Value != nil:
				v, ok := parseInt64(*c.Value)
				if !ok || v < -1 {
					t.ErrorCode, msg = kerr.InvalidConfig.Code, "retention.ms must be an integer >= -1"
				} else if v > 0 {
					tc.RetentionMs = v
				}
			case c.Name == "cleanup.policy" && c.Value != nil && *c.Value == "delete":
			default:
				t.ErrorCode, msg = kerr.InvalidConfig.Code, "only retention.ms and cleanup.policy=delete are supported"
			}
		}
		if t.ErrorCode == 0 && !r.ValidateOnly {
			if err := s.topics.create(ctx, tc); err != nil {
				t.ErrorCode = errorCode(err)
				if t.ErrorCode == kerr.UnknownServerError.Code {
					msg = err.Error()
				}
			}
		}
		if t.ErrorCode == 0 {
			t.NumPartitions, t.ReplicationFactor = tc.Partitions, -1
		}
		if msg != "" {
			t.ErrorMessage = &msg
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

func parseInt64(s string) (int64, bool) {
	var v int64
	if s == "" || len(s) > 19 {
		return 0, false
	}
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		v = v*10 + int64(s[i]-'0')
	}
	if neg {
		v = -v
	}
	return v, len(s) > 0
}

func (s *Server) listOffsets(req request) kmsg.Response {
	r := req.msg.(*kmsg.ListOffsetsRequest)
	resp := r.ResponseKind().(*kmsg.ListOffsetsResponse)
	ctx, cancel := s.requestCtx(int32(10 * time.Second / time.Millisecond))
	defer cancel()
	for _, rt := range r.Topics {
		t := kmsg.NewListOffsetsResponseTopic()
		t.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			p := kmsg.NewListOffsetsResponseTopicPartition()
			p.Partition = rp.Partition
			p.Offset, p.Timestamp = -1, -1
			if code := s.checkPartition(ctx, rt.Topic, rp.Partition); code != 0 {
				p.ErrorCode = code
				t.Partitions = append(t.Partitions, p)
				continue
			}
			st, err := s.partitionInfo(ctx, rt.Topic, rp.Partition)
			switch {
			case err != nil:
				p.ErrorCode = errorCode(err)
			case rp.Timestamp == -2: // earliest
				p.Offset = st.logStart
			case rp.Timestamp == -1: // latest
				p.Offset = st.high
			case rp.Timestamp >= 0:
				p.Offset, p.Timestamp, err = s.offsetForTime(ctx, rt.Topic, rp.Partition, st, rp.Timestamp)
				p.ErrorCode = errorCode(err)
			default:
				p.ErrorCode = kerr.UnsupportedVersion.Code
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// offsetForTime finds the first offset whose log time (the leader's
// commit time, which never goes back within a partition) is at or after
// ts (Unix ms), by binary search; the high watermark and -1 if none is.
func (s *Server) offsetForTime(ctx context.Context, topic string, partition int32, st partitionState, ts int64) (int64, int64, error) {
	at := func(off int64) (int64, bool, error) {
		if topic == EventsTopic {
			evs, _, err := s.store.ReadPartition(ctx, eventstore.Partition(partition), uint64(off), 1)
			if err != nil || len(evs) == 0 {
				return 0, false, err
			}
			return evs[0].Time.UnixMilli(), int64(evs[0].Offset) == off, nil
		}
		evs, err := s.store.ReadStream(ctx, topicStream(topic, partition), uint64(off)+1, 1)
		if err != nil || len(evs) == 0 {
			return 0, false, err
		}
		return evs[0].Time.UnixMilli(), true, nil
	}
	lo, hi := st.logStart, st.high
	for lo < hi {
		mid := lo + (hi-lo)/2
		t, _, err := at(mid)
		if err != nil {
			return -1, -1, err
		}
		if t >= ts {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo >= st.high {
		return st.high, -1, nil
	}
	t, _, err := at(lo)
	return lo, t, err
}
