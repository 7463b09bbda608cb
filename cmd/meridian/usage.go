package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meridiandb/meridian/internal/lab"
)

// Every command reports a mistake in its command line the same way: on stderr, the command, what was
// wrong and what is valid, then the command's usage line; exit status 2. Other failures exit 1. A
// command run with --json also prints the error as a JSON object on stdout, so that a script reading
// stdout never gets text it cannot parse.

// usageError marks mistakes in the command line (exit status 2, as for flag parsing errors).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError; its message says what was wrong and what is valid.
func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

// reportError writes err for people on stderr and, when cmd was asked for --json, as a JSON object
// on stdout.
func reportError(stdout, stderr io.Writer, cmd *cobra.Command, err error) {
	if cmd == nil {
		fmt.Fprintf(stderr, "meridian: %v\n", err)
		return
	}
	fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
	if errors.As(err, new(usageError)) {
		fmt.Fprintf(stderr, "usage: %s   (%s --help tells more)\n", usageLine(cmd), cmd.CommandPath())
	}
	if f := cmd.Flags().Lookup("json"); f != nil && f.Value.String() == "true" {
		_ = json.NewEncoder(stdout).Encode(jsonError{Error: err.Error(), Code: errorCode(err), ExitCode: exitCode(err)})
	}
}

// jsonError is what a command run with --json prints on stdout when it fails.
type jsonError struct {
	Error    string `json:"error"`
	Code     string `json:"code"` // usage, no_lab or failed
	ExitCode int    `json:"exit_code"`
}

func errorCode(err error) string {
	switch {
	case errors.As(err, new(usageError)):
		return "usage"
	case errors.Is(err, lab.ErrNoLab):
		return "no_lab"
	}
	return "failed"
}

// usageLine is the command's synopsis: "meridian lab COMMAND" for a command that groups others.
func usageLine(cmd *cobra.Command) string {
	if cmd.Annotations[groupAnnotation] != "" {
		return cmd.CommandPath() + " COMMAND"
	}
	return cmd.UseLine()
}

// groupAnnotation marks the commands asGroup made.
const groupAnnotation = "meridian_group"

// asGroup makes cmd a command that only groups subcommands. Alone it prints its help; with an
// argument, which names no subcommand (cobra would have run it), it is a usage error. Without this,
// cobra prints the help and exits 0 below the top level.
func asGroup(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs // groupRunE refuses an unknown command
	cmd.RunE = groupRunE
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[groupAnnotation] = "true"
	return cmd
}

func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() && c.Name() != "help" && c.Name() != "completion" {
			names = append(names, c.Name())
		}
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's own default for its top-level suggestions
	}
	hint := ""
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		hint = fmt.Sprintf(" (did you mean %s?)", s[0])
	}
	return usagef("unknown command %q%s; the commands are %s", args[0], hint, strings.Join(names, ", "))
}

// flagError turns pflag's errors into usage errors. An argument such as -5ms is read as a cluster of
// one-letter flags and reported as "unknown shorthand flag: '5'": say instead that a negative value is
// not valid there.
func flagError(cmd *cobra.Command, err error) error {
	var ne *pflag.NotExistError
	if errors.As(err, &ne) && startsWithDigit(ne.GetSpecifiedShortnames()) {
		return usagef("-%s is not valid here: a value cannot be negative (and there is no flag -%c)",
			ne.GetSpecifiedShortnames(), ne.GetSpecifiedShortnames()[0])
	}
	return usageError{err}
}

// negativeArg returns the argument, such as -5ms, that pflag refused as a flag, or "".
func negativeArg(err error) string {
	var ne *pflag.NotExistError
	if errors.As(err, &ne) && startsWithDigit(ne.GetSpecifiedShortnames()) {
		return "-" + ne.GetSpecifiedShortnames()
	}
	return ""
}

func startsWithDigit(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }

// usageArgs makes every argument check in the tree (cobra.NoArgs, ...) fail with a usage error.
func usageArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			err := check(cmd, args)
			if err != nil && !errors.As(err, new(usageError)) {
				return usageError{err}
			}
			return err
		}
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

// noArgs refuses arguments, naming the first.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q: %s takes none", args[0], cmd.CommandPath())
	}
	return nil
}

// exactArgs is cobra.ExactArgs with a message that shows the expected arguments.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s, got %d argument%s", cmd.CommandPath(), names, len(args), plural(len(args)))
		}
		return nil
	}
}

// maxArgs is cobra.MaximumNArgs with a message that shows the expected arguments.
func maxArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usagef("%s takes %s, got %d arguments", cmd.CommandPath(), names, len(args))
		}
		return nil
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
