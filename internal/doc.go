// Package internal is the home of machinery shared by several Flotilla
// packages that is not part of the public API. It is empty so far.
package internal
