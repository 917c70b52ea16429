// Package multiraft is Flotilla's public API: a Host that runs thousands of
// Raft groups in one process over one store, one scheduler and one
// transport.
//
// Not built yet: the host arrives with the scheduler (see DESIGN.md, "The
// life of a proposal"). It will own Config, group lifecycle, Propose,
// ReadIndex, leadership and membership calls, the StateMachine contracts,
// errors and events.
package multiraft
