// Command meridian is Meridian's single binary: every role (proxy, agent, controller, gateway, lab,
// ctl) is a subcommand. main only builds the command tree, runs it and maps the error to an exit code;
// the work lives in internal packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "meridian:", err)
	}
	os.Exit(exitCode(err))
}

// usageError marks mistakes in the command line (exit status 2, as for flag parsing errors).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}
