// Command meridian is Meridian's single binary: every role (proxy, agent, controller, gateway, lab,
// ctl) is a subcommand. main only builds the command tree, runs it and maps the error to an exit code;
// the work lives in internal packages.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args, reports an error (see usage.go) and returns the exit status:
// 0, 1 for a failure, 2 for a mistake in the command line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(append([]string{}, args...)) // never nil: cobra would read os.Args
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil {
		reportError(stdout, stderr, cmd, err)
	}
	return exitCode(err)
}
