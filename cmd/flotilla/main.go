package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "flotilla",
		Short:         "Flotilla: a multi-raft partition host",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(nodeCmd(), partitionCmd(), produceCmd(), fetchCmd(), demoCmd(), benchCmd(), storeBenchCmd(), certCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "flotilla:", err)
		os.Exit(1)
	}
}
