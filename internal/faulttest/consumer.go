package faulttest

import "context"

// ConsumerGroupWorkload is the extension point for the consumer-group part
// of issue #8, to be wired in when the projection package (consumer groups
// with generation fencing) lands; until then Config.ConsumerGroup is nil
// and the report prints both figures as "not measured".
//
// The intended workload: a group of members, one per node (through a
// /group endpoint the faultnode gains alongside the projection package),
// handling every event of every partition and recording, per event, the
// member and generation that handled it and every offset commit made with
// the generation it carried. Run drives it for the whole run, under the
// same nemesis; Check then sets, from that record and the final log:
//
//   - Report.EventsNeverHandled: events in the final log below the group's
//     last committed offset of their partition that no member handled
//     (at-least-once broken);
//   - Report.StaleCommitsAccepted: commits acknowledged although their
//     generation was older than the group's generation when they applied
//     (fencing broken), which must be 0;
//
// and adds any violation to Report.ReaderAnomalies, so that Violations
// fails the run.
type ConsumerGroupWorkload interface {
	Run(ctx context.Context, c *Cluster) error
	Check(r *Report)
}
