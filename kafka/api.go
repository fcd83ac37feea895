package kafka

import (
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const apiVersionsKey = 18

// handler answers one decoded request; nil means no answer (acks=0).
type handler func(s *Server, req request) kmsg.Response

// versions are the API versions served: only these are advertised and
// accepted; the tests with kcat, franz-go and kafkajs run through them.
var versions = map[int16][2]int16{
	0:  {3, 9},  // Produce (v3+: record batch v2 only)
	1:  {4, 12}, // Fetch (no topic IDs: v13 is not served)
	2:  {1, 6},  // ListOffsets
	3:  {1, 9},  // Metadata
	8:  {2, 8},  // OffsetCommit
	9:  {1, 7},  // OffsetFetch
	10: {0, 4},  // FindCoordinator
	11: {0, 7},  // JoinGroup
	12: {0, 4},  // Heartbeat
	13: {0, 4},  // LeaveGroup
	14: {0, 5},  // SyncGroup
	15: {0, 5},  // DescribeGroups
	16: {0, 4},  // ListGroups
	18: {0, 3},  // ApiVersions
	19: {0, 5},  // CreateTopics
	22: {0, 4},  // InitProducerId
}

var handlers map[int16]handler

func init() {
	handlers = map[int16]handler{
		0:  (*Server).produce,
		1:  (*Server).fetch,
		2:  (*Server).listOffsets,
		3:  (*Server).metadata,
		8:  (*Server).offsetCommit,
		9:  (*Server).offsetFetch,
		10: (*Server).findCoordinator,
		11: (*Server).joinGroup,
		12: (*Server).heartbeat,
		13: (*Server).leaveGroup,
		14: (*Server).syncGroup,
		15: (*Server).describeGroups,
		16: (*Server).listGroups,
		18: (*Server).apiVersions,
		19: (*Server).createTopics,
		22: (*Server).initProducerID,
	}
}

func supported(key, version int16) bool {
	v, ok := versions[key]
	return ok && version >= v[0] && version <= v[1]
}

func apiKeys() []kmsg.ApiVersionsResponseApiKey {
	keys := make([]kmsg.ApiVersionsResponseApiKey, 0, len(versions))
	for k, v := range versions {
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, v[0], v[1]
		keys = append(keys, ak)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].ApiKey < keys[j].ApiKey })
	return keys
}

func (s *Server) apiVersions(req request) kmsg.Response {
	resp := req.msg.ResponseKind().(*kmsg.ApiVersionsResponse)
	resp.ApiKeys = apiKeys()
	return resp
}

// apiVersionsUnsupported is the answer to ApiVersions at a version this
// server does not know: v0, UNSUPPORTED_VERSION and the versions served.
func (s *Server) apiVersionsUnsupported() kmsg.Response {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(0)
	resp.ErrorCode = kerr.UnsupportedVersion.Code
	resp.ApiKeys = apiKeys()
	return resp
}
