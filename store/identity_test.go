package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestIdentityChecked: a data directory remembers the cluster and node it
// was first opened for, and refuses to open as anything else, saying what
// it holds and what was asked.
func TestIdentityChecked(t *testing.T) {
	fs := vfs.NewMem()
	as := func(cluster, node uint64) Config {
		cfg := testConfig(fs)
		cfg.ClusterID, cfg.NodeID = cluster, node
		return cfg
	}
	s, err := Open(as(1, 3))
	if err != nil {
		t.Fatal(err)
	}
	createGroup(t, s, 7, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ cluster, node uint64 }{{2, 3}, {1, 4}} {
		s, err := Open(as(c.cluster, c.node))
		if err == nil {
			_ = s.Close()
			t.Fatalf("opened node 3 of cluster 1's data as node %d of cluster %d", c.node, c.cluster)
		}
		want := []string{"node 3 of cluster 1", fmt.Sprintf("started as node %d of cluster %d", c.node, c.cluster)}
		if !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), want[0]) || !strings.Contains(err.Error(), want[1]) {
			t.Fatalf("open as node %d of cluster %d: %v, want ErrIdentity naming %q", c.node, c.cluster, err, want)
		}
	}
	s = openTest(t, as(1, 3))
	if _, ok := s.Group(7); !ok {
		t.Fatal("the rightful node lost its group")
	}
}

// TestDataDirInUse: a second store on a data directory in use says so in
// words, and touches nothing there (on an in-memory FS and on disk).
func TestDataDirInUse(t *testing.T) {
	for name, fs := range map[string]vfs.FS{"mem": vfs.NewMem(), "disk": vfs.Default} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(fs)
			if fs == vfs.Default {
				cfg.Dir = t.TempDir()
			}
			first := openTest(t, cfg)
			g := createGroup(t, first, 1, 1)
			s, err := Open(cfg)
			if err == nil {
				_ = s.Close()
				t.Fatal("two stores opened one data directory")
			}
			if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "used by another running node") {
				t.Fatalf("second open: %v, want ErrLocked in words", err)
			}
			appendSync(t, g, ents(11, 12, 5), nil)
		})
	}
}

// TestFormatUpgrade: a version 1 store opens and is marked version 2 (it
// needs no rewrite); a version from a newer build is refused in words.
func TestFormatUpgrade(t *testing.T) {
	fs := vfs.NewMem()
	s := openTest(t, testConfig(fs))
	createGroup(t, s, 7, 1)
	setFormat := func(v uint64) {
		t.Helper()
		if err := s.db.Set(hostFormatKey, encodeUint64(v), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	setFormat(1)
	s = openTest(t, testConfig(fs))
	if _, ok := s.Group(7); !ok {
		t.Fatal("the upgrade lost a group")
	}
	if v, ok, err := s.get(hostFormatKey); err != nil || !ok || decodeUint64Must(v) != formatVersion {
		t.Fatalf("format after the upgrade: %x %t %v", v, ok, err)
	}
	setFormat(formatVersion + 1)
	s2, err := Open(testConfig(fs))
	if err == nil {
		_ = s2.Close()
		t.Fatal("opened a store of a newer format")
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "newer build") {
		t.Fatalf("open of a newer format: %v", err)
	}
}

func decodeUint64Must(b []byte) uint64 {
	v, _ := decodeUint64(b)
	return v
}
