package kafka

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// roundTrip sends req on c and decodes the answer into resp.
func roundTrip(t *testing.T, c net.Conn, correlation int32, req kmsg.Request) kmsg.Response {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	_, err := c.Write(frame(req, correlation))
	require.NoError(t, err)
	var size [4]byte
	_, err = io.ReadFull(c, size[:])
	require.NoError(t, err)
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	_, err = io.ReadFull(c, body)
	require.NoError(t, err)
	require.Equal(t, correlation, int32(binary.BigEndian.Uint32(body)))
	body = body[4:]
	if req.IsFlexible() {
		body = body[1:] // the response header's empty tagged fields
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	require.NoError(t, resp.ReadFrom(body))
	return resp
}

// TestGroupKeepsItsOwnCopyOfMemberBytes: a member's protocol metadata and
// the assignment its leader sent are read from the connection's buffer,
// which that connection's next request overwrites. The group must keep
// copies: DescribeGroups after another large request on the same
// connection still answers the bytes the member sent.
func TestGroupKeepsItsOwnCopyOfMemberBytes(t *testing.T) {
	srv, _ := startServer(t, func(c *Config) { c.InitialRebalanceDelay = time.Millisecond })
	c, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer c.Close()

	// A request larger than the group's, first, so that the connection
	// reads them all into the one buffer.
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(1)
	for i := 0; i < 40; i++ {
		mt := kmsg.NewMetadataRequestTopic()
		name := string(bytes.Repeat([]byte{'z'}, 20))
		mt.Topic = &name
		md.Topics = append(md.Topics, mt)
	}
	roundTrip(t, c, 0, md)

	metadata, assignment := bytes.Repeat([]byte("m"), 200), bytes.Repeat([]byte("a"), 200)
	join := kmsg.NewPtrJoinGroupRequest()
	join.SetVersion(3)
	join.Group, join.ProtocolType = "g", "consumer"
	join.SessionTimeoutMillis, join.RebalanceTimeoutMillis = 10_000, 10_000
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", metadata
	join.Protocols = append(join.Protocols, p)
	jr := roundTrip(t, c, 1, join).(*kmsg.JoinGroupResponse)
	require.Zero(t, jr.ErrorCode)
	require.Equal(t, jr.MemberID, jr.LeaderID)

	sync := kmsg.NewPtrSyncGroupRequest()
	sync.SetVersion(3)
	sync.Group, sync.Generation, sync.MemberID = "g", jr.Generation, jr.MemberID
	a := kmsg.NewSyncGroupRequestGroupAssignment()
	a.MemberID, a.MemberAssignment = jr.MemberID, assignment
	sync.GroupAssignment = append(sync.GroupAssignment, a)
	sr := roundTrip(t, c, 2, sync).(*kmsg.SyncGroupResponse)
	require.Zero(t, sr.ErrorCode)
	require.Equal(t, assignment, sr.MemberAssignment)

	// Another request over the same bytes of the buffer.
	roundTrip(t, c, 3, md)

	d := kmsg.NewPtrDescribeGroupsRequest()
	d.SetVersion(0)
	d.Groups = []string{"g"}
	dr := roundTrip(t, c, 4, d).(*kmsg.DescribeGroupsResponse)
	require.Len(t, dr.Groups, 1)
	require.Len(t, dr.Groups[0].Members, 1)
	require.Equal(t, metadata, dr.Groups[0].Members[0].ProtocolMetadata, "the member's protocol metadata")
	require.Equal(t, assignment, dr.Groups[0].Members[0].MemberAssignment, "the member's assignment")
}
