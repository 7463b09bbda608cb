package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/meridiandb/meridian/internal/proxy"
	"github.com/meridiandb/meridian/internal/scram"
)

func newProxyPasswdCmd() *cobra.Command {
	var file string
	var iterations int
	cmd := &cobra.Command{
		Use:   "passwd USER --file FILE",
		Short: "Write USER's SCRAM-SHA-256 verifier (never the password) into an auth file",
		Long: `Reads the password (twice, without echo, on a terminal; else the first line of standard input) and
writes the user's SCRAM-SHA-256 verifier into the auth file (auth.file in the proxy's configuration),
replacing the user's line if there is one. The file keeps verifiers only: the password is not stored.

The proxy checks clients against the verifier. To log in to the servers as that user it reuses the
keys of the client's own exchange, which only fit a server that stores the same verifier: to share it,
copy the user's pg_authid.rolpassword into the file instead (or set server_password).`,
		Args: exactArgs(1, "USER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usageError{errors.New("--file is required")}
			}
			if iterations < 1000 || iterations > 10_000_000 {
				return usageError{fmt.Errorf("--iterations: %d is out of range (1000 to 10000000)", iterations)}
			}
			password, err := readPassword(cmd)
			if err != nil {
				return err
			}
			v, err := scram.NewVerifier(password, iterations)
			if err != nil {
				return err
			}
			if err := proxy.SetAuthFileEntry(file, args[0], v.String()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote the SCRAM-SHA-256 verifier of %s to %s (the password itself is not stored)\n", args[0], file)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "the auth file to update (created with mode 0600 if missing)")
	cmd.Flags().IntVar(&iterations, "iterations", scram.DefaultIterations, "PBKDF2 iterations of the verifier")
	return cmd
}

// readPassword asks twice on a terminal, or reads one line from a pipe.
func readPassword(cmd *cobra.Command) (string, error) {
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		ask := func(prompt string) (string, error) {
			fmt.Fprint(cmd.ErrOrStderr(), prompt)
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(cmd.ErrOrStderr())
			return string(b), err
		}
		p1, err := ask("Password: ")
		if err != nil {
			return "", err
		}
		p2, err := ask("Again: ")
		if err != nil {
			return "", err
		}
		if p1 != p2 {
			return "", errors.New("the passwords differ")
		}
		if p1 == "" {
			return "", errors.New("empty password")
		}
		return p1, nil
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password on standard input")
	}
	return line, nil
}
