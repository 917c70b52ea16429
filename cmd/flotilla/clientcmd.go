package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// clientFlags are the flags every client subcommand shares.
type clientFlags struct {
	endpoints              string
	clusterID              uint64
	tlsCert, tlsKey, tlsCA string
	timeout                time.Duration
}

func (f *clientFlags) register(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	p.StringVar(&f.endpoints, "endpoints", "127.0.0.1:7101", "comma-separated client addresses of nodes; calls follow the partition's leader from any of them")
	p.Uint64Var(&f.clusterID, "cluster-id", 1, "cluster ID (checked against the nodes' certificates with TLS)")
	p.StringVar(&f.tlsCert, "tls-cert", "", "client PEM certificate signed by the cluster's CA (mutual TLS)")
	p.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	p.StringVar(&f.tlsCA, "tls-ca", "", "PEM certificate of the cluster's CA")
	p.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long a command may take")
}

// run connects and runs fn with a context bounded by --timeout.
func (f *clientFlags) run(fn func(ctx context.Context, c *client.Client) error) error {
	tlsCfg, err := loadTLS(f.tlsCert, f.tlsKey, f.tlsCA)
	if err != nil {
		return err
	}
	var eps []string
	for _, e := range strings.Split(f.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	var c *client.Client
	if tlsCfg != nil {
		c, err = client.New(eps, tlsCfg.ClientCredentials(f.clusterID))
	} else {
		c, err = client.New(eps, nil)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	return fn(ctx, c)
}

func parseNodeList(s string) ([]uint64, error) {
	var ids []uint64
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		id, err := strconv.ParseUint(p, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("%q is not a node ID", p)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func partitionCmd() *cobra.Command {
	f := &clientFlags{}
	cmd := &cobra.Command{Use: "partition", Short: "Create, delete, describe and list partitions"}
	f.register(cmd)
	var id uint64
	var replicas string
	ret := &clientpb.Retention{}
	retentionFlags := func(c *cobra.Command) {
		c.Flags().Uint64Var(&ret.RetentionBytes, "retention-bytes", 0, "trim the log, oldest segments first, while it still holds this many bytes without them (0: no size limit)")
		c.Flags().Uint64Var(&ret.RetentionMs, "retention-ms", 0, "drop segments whose newest record is older than this many milliseconds (0: no age limit)")
		c.Flags().Uint64Var(&ret.SegmentBytes, "segment-bytes", 0, "close a segment at this many bytes of records (0: 64 MiB)")
		c.Flags().Uint64Var(&ret.SegmentMs, "segment-ms", 0, "close a segment once its first record is this old, in milliseconds (0: a quarter of --retention-ms, at most an hour)")
	}
	create := &cobra.Command{
		Use:     "create",
		Short:   "Create a partition with replicas on the given nodes",
		Example: "  flotilla partition create --id 7 --replicas 1,2,3 --retention-bytes 1073741824 --retention-ms 604800000",
		RunE: func(cmd *cobra.Command, _ []string) error {
			nodes, err := parseNodeList(replicas)
			if err != nil {
				return fmt.Errorf("--replicas: %w", err)
			}
			var r *clientpb.Retention
			if ret.RetentionBytes|ret.RetentionMs|ret.SegmentBytes|ret.SegmentMs != 0 {
				r = ret
			}
			return f.run(func(ctx context.Context, c *client.Client) error {
				if err := c.CreatePartitionRetained(ctx, id, nodes, r); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "partition %d created on nodes %v\n", id, nodes)
				return nil
			})
		},
	}
	create.Flags().Uint64Var(&id, "id", 0, "partition ID (non-zero; a deleted partition's ID cannot be used again)")
	create.Flags().StringVar(&replicas, "replicas", "", "comma-separated node IDs of the replicas")
	retentionFlags(create)
	_ = create.MarkFlagRequired("id")
	_ = create.MarkFlagRequired("replicas")

	alter := &cobra.Command{
		Use:     "alter",
		Short:   "Change a partition's retention (flags not given keep their current values)",
		Example: "  flotilla partition alter --id 7 --retention-ms 86400000",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(func(ctx context.Context, c *client.Client) error {
				info, err := c.Describe(ctx, id)
				if err != nil {
					return err
				}
				r := info.GetRetention()
				if r == nil {
					r = &clientpb.Retention{}
				}
				for name, v := range map[string]*uint64{"retention-bytes": &r.RetentionBytes, "retention-ms": &r.RetentionMs,
					"segment-bytes": &r.SegmentBytes, "segment-ms": &r.SegmentMs} {
					if cmd.Flags().Changed(name) {
						*v, _ = cmd.Flags().GetUint64(name)
					}
				}
				if err := c.AlterPartition(ctx, id, r); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "partition %d: retention %d bytes, %d ms; segments %d bytes, %d ms\n", id,
					r.GetRetentionBytes(), r.GetRetentionMs(), r.GetSegmentBytes(), r.GetSegmentMs())
				return nil
			})
		},
	}
	alter.Flags().Uint64Var(&id, "id", 0, "partition ID")
	retentionFlags(alter)
	_ = alter.MarkFlagRequired("id")

	del := &cobra.Command{
		Use:   "delete",
		Short: "Delete a partition on every node",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(func(ctx context.Context, c *client.Client) error {
				if err := c.DeletePartition(ctx, id); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "partition %d deleted\n", id)
				return nil
			})
		},
	}
	del.Flags().Uint64Var(&id, "id", 0, "partition ID")
	_ = del.MarkFlagRequired("id")

	describe := &cobra.Command{
		Use:   "describe",
		Short: "Show a partition as its leader sees it: term, commit, replicas, follower lag",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(func(ctx context.Context, c *client.Client) error {
				info, err := c.Describe(ctx, id)
				if err != nil {
					return err
				}
				printInfos(cmd.OutOrStdout(), []*clientpb.PartitionInfo{info})
				r := info.GetRetention()
				fmt.Fprintf(cmd.OutOrStdout(), "  log start offset %d, %d bytes kept; retention %d bytes, %d ms (0: none)\n",
					info.GetLogStartOffset(), info.GetSizeBytes(), r.GetRetentionBytes(), r.GetRetentionMs())
				for _, fl := range info.GetFollowers() {
					fmt.Fprintf(cmd.OutOrStdout(), "  follower node %d: match %d, %d entries behind, %s", fl.GetNodeId(), fl.GetMatchIndex(), fl.GetLagEntries(), fl.GetState())
					if fl.GetState() == "snapshot" {
						fmt.Fprint(cmd.OutOrStdout(), " (behind the leader's log: catching up by snapshot)")
					}
					if n := fl.GetSnapshotFailures(); n > 0 {
						fmt.Fprintf(cmd.OutOrStdout(), "; %d snapshots failed in a row, last: %s", n, fl.GetLastSnapshotError())
					}
					fmt.Fprintln(cmd.OutOrStdout())
				}
				return nil
			})
		},
	}
	describe.Flags().Uint64Var(&id, "id", 0, "partition ID")
	_ = describe.MarkFlagRequired("id")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the partitions of the first node that answers",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(func(ctx context.Context, c *client.Client) error {
				infos, err := c.List(ctx)
				if err != nil {
					return err
				}
				printInfos(cmd.OutOrStdout(), infos)
				return nil
			})
		},
	}
	cmd.AddCommand(create, alter, del, describe, list)
	return cmd
}

func printInfos(w io.Writer, infos []*clientpb.PartitionInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tNODE\tROLE\tLEADER\tTERM\tCOMMIT\tAPPLIED\tLOG START\tHIGH WATERMARK\tBYTES\tREPLICAS")
	for _, i := range infos {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%v\n", i.GetPartitionId(), i.GetNodeId(), i.GetRole(), i.GetLeaderNodeId(),
			i.GetTerm(), i.GetCommitIndex(), i.GetAppliedIndex(), i.GetLogStartOffset(), i.GetHighWatermark(), i.GetSizeBytes(), i.GetReplicaNodeIds())
	}
	_ = tw.Flush()
}

func produceCmd() *cobra.Command {
	f := &clientFlags{}
	var id, producer, seq uint64
	cmd := &cobra.Command{
		Use:   "produce [RECORD...]",
		Short: "Append records to a partition (from the arguments, or one per line of stdin)",
		Example: `  flotilla produce --partition 7 hello world
  seq 1 100 | flotilla produce --partition 7 --producer-id 9 --sequence 0`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var records [][]byte
			for _, a := range args {
				records = append(records, []byte(a))
			}
			if len(args) == 0 {
				sc := bufio.NewScanner(cmd.InOrStdin())
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					records = append(records, append([]byte(nil), sc.Bytes()...))
				}
				if err := sc.Err(); err != nil {
					return err
				}
			}
			return f.run(func(ctx context.Context, c *client.Client) error {
				resp, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: id, Records: records, ProducerId: producer, Sequence: seq})
				if err != nil {
					return err
				}
				dup := ""
				if resp.GetDuplicate() {
					dup = " (a retry: already there)"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d records at offsets %d..%d%s\n", resp.GetCount(), resp.GetBaseOffset(),
					resp.GetBaseOffset()+resp.GetCount()-1, dup)
				return nil
			})
		},
	}
	f.register(cmd)
	cmd.Flags().Uint64Var(&id, "partition", 0, "partition ID")
	cmd.Flags().Uint64Var(&producer, "producer-id", 0, "idempotent producer ID (0: not idempotent)")
	cmd.Flags().Uint64Var(&seq, "sequence", 0, "sequence number of the first record (with --producer-id)")
	_ = cmd.MarkFlagRequired("partition")
	return cmd
}

func fetchCmd() *cobra.Command {
	f := &clientFlags{}
	var id, offset uint64
	var maxRecords, maxBytes uint32
	var linearizable bool
	cmd := &cobra.Command{
		Use:     "fetch",
		Short:   "Read records of a partition from an offset",
		Example: "  flotilla fetch --partition 7 --offset 0 --max 10 --linearizable",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(func(ctx context.Context, c *client.Client) error {
				resp, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: id, Offset: offset, MaxRecords: maxRecords,
					MaxBytes: maxBytes, Linearizable: linearizable})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				for i, r := range resp.GetRecords() {
					fmt.Fprintf(out, "%d\t%s\n", resp.GetBaseOffset()+uint64(i), r)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "high watermark %d\n", resp.GetHighWatermark())
				return nil
			})
		},
	}
	f.register(cmd)
	cmd.Flags().Uint64Var(&id, "partition", 0, "partition ID")
	cmd.Flags().Uint64Var(&offset, "offset", 0, "first offset to read")
	cmd.Flags().Uint32Var(&maxRecords, "max", 100, "most records to return")
	cmd.Flags().Uint32Var(&maxBytes, "max-bytes", 0, fmt.Sprintf("most bytes of encoded response (0: the node's default, 4 MiB; at most %d); at least one record is returned",
		clientpb.MaxFetchResponseBytes))
	cmd.Flags().BoolVar(&linearizable, "linearizable", false, "read after a ReadIndex round: sees every write acknowledged before the call")
	_ = cmd.MarkFlagRequired("partition")
	return cmd
}
