package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meridiandb/meridian/internal/buildinfo"
)

// newRootCmd builds the command tree. Only subcommands that work are registered.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := asGroup(&cobra.Command{
		Use:   "meridian",
		Short: "Read local, write global: multi-region PostgreSQL",
		Long: "Meridian runs one application in several regions on PostgreSQL: each region reads from its own\n" +
			"replica and writes go to the single global primary, through the region's proxy. Moving the\n" +
			"primary when a region fails is manual for now (docs/deploy.md); the control plane that does it\n" +
			"by itself is being built.",
		SilenceUsage:  true,
		SilenceErrors: true,
	})
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(newVersionCmd(), newProxyCmd(), newLabCmd(progName()))
	usageArgs(root)
	return root
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit of this binary",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildinfo.Get()
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(info)
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), info)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
