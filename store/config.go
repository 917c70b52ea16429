package store

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/flotilla-io/flotilla/metrics"
)

// Config configures a Store. Start from DefaultConfig.
type Config struct {
	// Dir is the Pebble directory inside FS. Required.
	Dir string
	// FS is the filesystem every Pebble I/O goes through. Default vfs.Default;
	// tests pass vfs.NewCrashableMem() or an errorfs wrapper.
	FS vfs.FS
	// Logger receives the store's and Pebble's messages. Default slog.Default().
	Logger *slog.Logger
	// Metrics receives the store's figures. Default: a private, unregistered set.
	Metrics *metrics.Store
	// ClusterID and NodeID are the identity recorded in the data directory
	// at its first open and checked at every later one (ErrIdentity on a
	// mismatch). Both 0: none is recorded or checked.
	ClusterID, NodeID uint64
	// OnDiskFull, if set, is called when a write to FS fails for lack of
	// space (ENOSPC), before Pebble retries the write once. It must be
	// quick: every write waits for it. A WAL write or sync that still
	// fails fails the store as any other.
	OnDiskFull func()
	// OnFailure, if set, is called once, from the goroutine that saw it,
	// when the store fails (fail-stop). It must not block or call the store.
	OnFailure func(error)

	// EntryCacheBytes is the global byte budget of the entry cache shared by
	// every group. 0 disables the cache. Default 64 MiB.
	EntryCacheBytes int64
	// MaxBatchBytes bounds one log writer batch in bytes (an item larger than
	// this gets a batch to itself). Default 4 MiB.
	MaxBatchBytes int
	// MaxBatchItems bounds one log writer batch in items. Default 4096.
	MaxBatchItems int
	// MaxQueueBytes bounds the bytes waiting for the log writer; beyond it
	// new items are refused with ErrBusy. Default 64 MiB.
	MaxQueueBytes int64
	// MaxQueueItems bounds the items waiting for the log writer. Default 65536.
	MaxQueueItems int

	// DiskStallThreshold fails the store when one disk write or sync takes
	// longer. 0 disables the check. Default 20 s. Pebble's health checker
	// looks at in-flight operations every 2 s, so a stall is noticed between
	// the threshold and the threshold plus 2 s.
	DiskStallThreshold time.Duration

	// MemTableSize is Pebble's memtable size in bytes; each WAL is
	// preallocated near this size. Default 64 MiB.
	MemTableSize uint64
	// MemTableStopWritesThreshold is how many memtables may queue for flush
	// before Pebble stalls writes. Default 4.
	MemTableStopWritesThreshold int
	// BlockCacheBytes is Pebble's block cache size. Default 128 MiB.
	BlockCacheBytes int64
}

// DefaultConfig returns the defaults, with Dir set.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:                         dir,
		EntryCacheBytes:             64 << 20,
		MaxBatchBytes:               4 << 20,
		MaxBatchItems:               4096,
		MaxQueueBytes:               64 << 20,
		MaxQueueItems:               1 << 16,
		DiskStallThreshold:          20 * time.Second,
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 4,
		BlockCacheBytes:             128 << 20,
	}
}

// Validate fills the defaults of unset optional fields and rejects unsafe
// or inconsistent settings.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("store: Config.Dir is required")
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewStore()
	}
	d := DefaultConfig(c.Dir)
	setDefault(&c.MaxBatchBytes, d.MaxBatchBytes)
	setDefault(&c.MaxBatchItems, d.MaxBatchItems)
	setDefault(&c.MaxQueueBytes, d.MaxQueueBytes)
	setDefault(&c.MaxQueueItems, d.MaxQueueItems)
	setDefault(&c.MemTableSize, d.MemTableSize)
	setDefault(&c.MemTableStopWritesThreshold, d.MemTableStopWritesThreshold)
	setDefault(&c.BlockCacheBytes, d.BlockCacheBytes)
	switch {
	case c.EntryCacheBytes < 0:
		return fmt.Errorf("store: EntryCacheBytes %d is negative", c.EntryCacheBytes)
	case c.MaxBatchBytes < 0, c.MaxBatchItems < 0, c.MaxQueueBytes < 0, c.MaxQueueItems < 0:
		return errors.New("store: log writer bounds must be positive")
	case c.MaxQueueItems < c.MaxBatchItems:
		return fmt.Errorf("store: MaxQueueItems %d is below MaxBatchItems %d", c.MaxQueueItems, c.MaxBatchItems)
	case c.MaxQueueBytes < int64(c.MaxBatchBytes):
		return fmt.Errorf("store: MaxQueueBytes %d is below MaxBatchBytes %d", c.MaxQueueBytes, c.MaxBatchBytes)
	case c.DiskStallThreshold < 0:
		return errors.New("store: DiskStallThreshold is negative")
	case c.MemTableStopWritesThreshold < 2:
		return errors.New("store: MemTableStopWritesThreshold must be at least 2")
	}
	return nil
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}
