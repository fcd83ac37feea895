package esraftwatermill_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"

	esraftwatermill "github.com/esraft/esraft/contrib/watermill"
)

// constructors build publishers and subscribers over the nodes of c, in
// turn, so that on a cluster a message is published through one node and
// consumed through another. group, if set, is the consumer group of the
// subscribers the suite builds without naming one.
func constructors(c eventstoretest.Cluster, group string) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	var next atomic.Int64
	withGroup := func(t *testing.T, g string) (message.Publisher, message.Subscriber) {
		i := int(next.Add(1))
		pub := esraftwatermill.NewPublisher(c.Node(i%c.Size), esraftwatermill.PublisherConfig{})
		sub := esraftwatermill.NewSubscriber(c.Node((i+1)%c.Size), esraftwatermill.SubscriberConfig{
			ConsumerGroup:  g,
			SessionTimeout: 3 * time.Second,
			NackDelay:      10 * time.Millisecond,
		})
		return pub, sub
	}
	return func(t *testing.T) (message.Publisher, message.Subscriber) { return withGroup(t, group) }, withGroup
}

// features are what this adapter offers; the README explains each flag.
func features(newSubscriberReceivesOldMessages bool) tests.Features {
	return tests.Features{
		ConsumerGroups:                      true,
		ExactlyOnceDelivery:                 false,
		GuaranteedOrder:                     true,
		GuaranteedOrderWithSingleSubscriber: true,
		Persistent:                          true,
		NewSubscriberReceivesOldMessages:    newSubscriberReceivesOldMessages,
	}
}

// TestPubSubSingleNode runs watermill's universal suite on an embedded
// single node, subscribers without a consumer group unless the suite asks
// for one: each reads its topic from the start.
func TestPubSubSingleNode(t *testing.T) {
	c := eventstoretest.Single(t)
	pub, group := constructors(c, "")
	tests.TestPubSub(t, features(true), pub, group)
}

// TestPubSubThreeNodes runs the suite on a 3-node cluster in one process
// (real TCP on 127.0.0.1), every subscriber in a consumer group, so the
// suite's concurrent subscribers share partitions across nodes.
func TestPubSubThreeNodes(t *testing.T) {
	c := eventstoretest.StartCluster(t, 3, eventstore.Partitions(4))
	pub, group := constructors(c, "test")
	tests.TestPubSub(t, features(false), pub, group)
}
