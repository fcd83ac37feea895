package state

import (
	"github.com/google/uuid"
)

// The cluster's identity (DESIGN.md, "Bootstrap, identity and rejoin"): the
// first leader of shard 0 proposes a UUID in a CmdClusterID entry, and
// every replica keeps the first such entry it applies. Entries are applied
// in log order on every replica, so all of them keep the same one; later
// proposals (a second leader that had not applied the first yet) change
// nothing. The ID is stored in the meta bucket with the table it was
// applied in, so full copies carry it to joiners.

// ClusterID applies a proposal of id as the cluster's identity and returns
// the identity in force afterwards: id if none was set, else the one set
// before.
func (b *Batch) ClusterID(id uuid.UUID) uuid.UUID {
	f := b.a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.appliedClusterID() == (uuid.UUID{}) && id != (uuid.UUID{}) {
		f.setClusterID(id)
		f.mem.clusterID = id
	}
	return f.appliedClusterID()
}

// ClusterID returns the cluster's identity as applied on this replica, ""
// until an entry setting it is applied.
func (f *Engine) ClusterID() string {
	if id := f.appliedClusterID(); id != (uuid.UUID{}) {
		return id.String()
	}
	return ""
}

// appliedClusterID is the cluster ID applied, the zero UUID for none.
func (f *Engine) appliedClusterID() uuid.UUID {
	if id := f.clusterID.Load(); id != nil {
		return *id
	}
	return uuid.UUID{}
}

// setClusterID sets the cluster ID; the caller holds f.mu (or has the
// engine to itself, at open).
func (f *Engine) setClusterID(id uuid.UUID) { f.clusterID.Store(&id) }
