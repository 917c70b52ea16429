// Package scheduler drives every group of a host from a fixed pool of
// workers: per-group work flags with dedup (a group is never processed by
// two workers at once), one tick loop for the whole host, and a priority
// lane for system groups.
//
// Not built yet. It must not import multiraft, transport or store.
package scheduler
