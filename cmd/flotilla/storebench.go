package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/internal/storeload"
	"github.com/flotilla-io/flotilla/metrics"
	"github.com/flotilla-io/flotilla/store"
)

func storeBenchCmd() *cobra.Command {
	var (
		groups, payload, entries int
		duration                 time.Duration
		dir                      string
	)
	cmd := &cobra.Command{
		Use:   "storebench",
		Short: "Drive the store's log writer with many groups on real disk",
		Long: `storebench opens one store (one Pebble instance, fsync on) in a temporary
directory, creates --groups founding groups and runs one closed-loop appender
per group for --duration: append an entry, wait until it is durable, repeat.
It prints, every second and at the end, what one fsync carried: the point of
the shared log writer is that many groups' appends share each sync.
The directory is removed at the end, also on Ctrl-C.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			root, err := os.MkdirTemp(dir, "flotilla-storebench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(root)

			cfg := store.DefaultConfig(root)
			cfg.Metrics = metrics.NewStore()
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg.MemTableSize = 32 << 20
			s, err := store.Open(cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			lc := storeload.Config{Groups: groups, Payload: payload, Entries: entries, FirstID: 1}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "creating %d groups in %s ...\n", groups, root)
			gs, err := storeload.CreateGroups(s, lc)
			if err != nil {
				return err
			}
			runCtx, cancel := context.WithTimeout(ctx, duration)
			defer cancel()
			go progress(runCtx, out, cfg)
			r, err := storeload.Run(runCtx, s, storeload.WriterBatches(cfg), gs, lc)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "\ngroups %d, payload %d B, %d entries/append\n%s\n", groups, payload, entries, r)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&groups, "groups", 1000, "groups appending concurrently, one closed-loop appender each")
	f.IntVar(&payload, "payload", 128, "bytes per entry")
	f.IntVar(&entries, "entries", 1, "entries per append")
	f.DurationVar(&duration, "duration", 10*time.Second, "how long to append")
	f.StringVar(&dir, "dir", "", "parent of the temporary data directory (default: the system temp dir)")
	return cmd
}

// progress prints one line a second: entries and syncs in the last second.
func progress(ctx context.Context, out io.Writer, cfg store.Config) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	batches := storeload.WriterBatches(cfg)
	entries := storeload.WriterEntries(cfg)
	lastB, lastE := batches(), entries()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			b, e := batches(), entries()
			per := 0.0
			if b > lastB {
				per = (e - lastE) / (b - lastB)
			}
			fmt.Fprintf(out, "  %8.0f entries/s  %6.0f syncs/s  %7.1f entries/sync\n", e-lastE, b-lastB, per)
			lastB, lastE = b, e
		}
	}
}
