// Package proto holds the .proto files of Flotilla's peer and client
// protocols and their generated Go code, checked in; `make proto`
// regenerates it.
//
// Not built yet: the peer protocol arrives with the transport.
package proto
