package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/meridiandb/meridian/internal/lab"
	"github.com/meridiandb/meridian/internal/pgnode"
)

// labCLI is what the lab's subcommands share.
type labCLI struct {
	prog string // how the user ran meridian (see progName), for commands they can copy
	dir  string // --dir as given
}

// progName is how the user ran this binary — bin/meridian, ./meridian, or meridian from the PATH —
// so that the commands it suggests can be copied as they are.
func progName() string {
	if len(os.Args) == 0 || os.Args[0] == "" {
		return "meridian"
	}
	return shellQuote(os.Args[0])
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:=,@", r))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// dirAbs is the lab's directory, absolute.
func (c *labCLI) dirAbs() (string, error) {
	d, err := filepath.Abs(c.dir)
	if err != nil {
		return "", usageError{fmt.Errorf("--dir: %w", err)}
	}
	return d, nil
}

// hint is a command line the user can copy: "bin/meridian lab [--dir DIR] args".
func (c *labCLI) hint(dir, args string) string {
	s := c.prog + " lab"
	if dir != lab.DefaultDir() {
		s += " --dir " + shellQuote(dir)
	}
	return s + " " + args
}

func (c *labCLI) dial(cmd *cobra.Command) (*lab.Client, error) {
	dir, err := c.dirAbs()
	if err != nil {
		return nil, err
	}
	return lab.Dial(cmd.Context(), dir)
}

func newLabCmd(prog string) *cobra.Command {
	c := &labCLI{prog: prog}
	cmd := asGroup(&cobra.Command{
		Use:   "lab",
		Short: "Run the whole multi-region system on this machine, with emulated WAN links",
		Long: "meridian lab builds three regions on one machine — a PostgreSQL server and a proxy in each, the primary\n" +
			"in one, streaming replicas elsewhere — with every cross-region connection going through a WAN link\n" +
			"with real-sized round-trip times. Start with: meridian lab up",
	})
	cmd.PersistentFlags().StringVar(&c.dir, "dir", lab.DefaultDir(), "the lab's directory")
	cmd.AddCommand(c.upCmd(), c.statusCmd(), c.loadCmd(), c.rywCmd(), c.latencyCmd(), c.partitionCmd(), c.healCmd(),
		c.psqlCmd(), c.downCmd())
	return cmd
}

func (c *labCLI) upCmd() *cobra.Command {
	var regions []string
	var primary, firstAddr string
	var detach, supervise bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a lab: in the foreground with a live status table (Ctrl-C stops it and removes its data), or --detach",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := c.dirAbs()
			if err != nil {
				return err
			}
			cfg := lab.Config{Dir: dir, Regions: regions, Primary: primary, FirstAddress: firstAddr}
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if detach {
				if err := lab.CheckFree(dir, slog.New(slog.DiscardHandler)); err != nil {
					return err
				}
				if err := lab.CheckPorts(cfg); err != nil {
					return err
				}
				return c.detach(cmd, cfg)
			}
			return c.supervise(cmd.Context(), cmd.OutOrStdout(), cfg, !supervise)
		},
	}
	cmd.Flags().StringSliceVar(&regions, "regions", lab.DefaultRegions, "regions, comma-separated")
	cmd.Flags().StringVar(&primary, "primary", "", "region of the primary (default: the first region)")
	cmd.Flags().StringVar(&firstAddr, "first-address", "127.0.1.1", "loopback address of the first region; the others follow (127.0.2.1, ...)")
	cmd.Flags().BoolVar(&detach, "detach", false, "return once the lab is ready; it keeps running in the background")
	cmd.Flags().BoolVar(&supervise, "supervise", false, "run as the lab's background supervisor (used by --detach)")
	_ = cmd.Flags().MarkHidden("supervise")
	return cmd
}

// supervise runs a lab until ctx ends or `lab down` asks it to stop, then stops it and removes the
// servers' data (the supervisor's log stays). In the foreground it prints each step, a hint, then a
// live status table.
func (c *labCLI) supervise(ctx context.Context, out io.Writer, cfg lab.Config, foreground bool) error {
	logw := io.Writer(os.Stderr) // with --supervise, stderr is the supervisor's log file
	logPath := filepath.Join(cfg.Dir, "supervisor.log")
	if foreground {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		logw = f
	}
	log := newJSONLogger(logw, slog.LevelInfo).With("component", "lab")
	cfg.Logger = log
	if err := lab.CheckFree(cfg.Dir, log); err != nil {
		return err
	}
	start := time.Now()
	cfg.Progress = func(step string, took time.Duration) {
		if foreground {
			fmt.Fprintf(out, "  ✓ %-58s %6.2fs\n", step, took.Seconds())
		}
	}
	if foreground {
		fmt.Fprintf(out, "Starting a lab with %s in %s (log: %s)\n", strings.Join(cfgRegions(cfg), ", "), cfg.Dir, logPath)
	}
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			// Interrupted while starting: Start stopped what it had started; nothing is worth keeping.
			_, _ = lab.CleanStale(cfg.Dir, log)
			fmt.Fprintln(out, "Interrupted before the lab was ready; removed what it had created.")
			return nil
		}
		return fmt.Errorf("the lab did not start: %w\n(what it created stays in %s for a look; %s removes it)",
			err, cfg.Dir, c.hint(cfg.Dir, "down"))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopServing, err := l.Serve(cancel)
	if err != nil {
		l.Close()
		return errors.Join(err, l.RemoveData())
	}
	// Teardown order: lab.json and the control endpoint first (no command reaches a lab going away),
	// then the proxies, links and servers, then the servers' data.
	tornDown := false
	teardown := func() error {
		if tornDown {
			return nil
		}
		tornDown = true
		stopServing()
		l.Close()
		return l.RemoveData()
	}
	defer teardown()
	log.Info("lab ready", "took", time.Since(start).Round(time.Millisecond).String())
	if !foreground {
		<-ctx.Done()
		log.Info("lab stopping")
		err := teardown()
		log.Info("lab stopped; its data removed")
		return err
	}
	regions := cfgRegions(cfg)
	region := regions[min(1, len(regions)-1)]
	fmt.Fprintf(out, "Lab ready in %.1fs. In another terminal, try:\n", time.Since(start).Seconds())
	fmt.Fprintf(out, "  %s   # psql through %s's proxy, database %s\n", c.hint(cfg.Dir, "psql "+region), region, lab.Database)
	fmt.Fprintf(out, "  %s   # reads and writes through every region\n", c.hint(cfg.Dir, "load --duration 20s"))
	fmt.Fprintf(out, "  %s   # the proxy's admin console\n", c.hint(cfg.Dir, "psql "+region+" -d meridian -c 'SHOW POOLS'"))
	fmt.Fprintf(out, "Ctrl-C here stops the lab and removes its data.\n\n")

	var scr *screen
	every := 10 * time.Second
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		scr = &screen{w: out, width: func() int {
			w, _, err := term.GetSize(int(f.Fd()))
			if err != nil {
				return 0
			}
			return w
		}}
		every = time.Second
	}
	header := func() string {
		return fmt.Sprintf("Meridian lab in %s — up %s — Ctrl-C stops it\n\n", cfg.Dir, time.Since(start).Round(time.Second))
	}
	liveTable(ctx, out, every, scr, header, l.Status)
	fmt.Fprintln(out, "\nStopping the lab...")
	if err := teardown(); err != nil {
		return fmt.Errorf("remove the lab's data: %w", err)
	}
	fmt.Fprintf(out, "Lab stopped; its servers' data is removed (the log stays: %s).\n", logPath)
	return nil
}

// liveTable shows the lab's status every interval until ctx ends. On a terminal (scr not nil) it
// redraws the table in place below what was printed before, so the start-up steps and the hint stay
// on screen; elsewhere it appends a table.
func liveTable(ctx context.Context, out io.Writer, every time.Duration, scr *screen, header func() string,
	status func(context.Context) lab.Status) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := status(ctx)
		if ctx.Err() != nil {
			// The lab is stopping: this status was taken while its queries were cancelled (or its
			// servers were going down), so every region would look down. Keep the last true frame.
			return
		}
		var b bytes.Buffer
		if scr != nil {
			b.WriteString(header())
		}
		st.Render(&b)
		if scr != nil {
			scr.draw(b.String())
			continue
		}
		b.WriteString("\n")
		_, _ = out.Write(b.Bytes())
	}
}

// screen redraws a block of lines in place on a terminal: it moves the cursor back up over the block
// it drew last and clears from there to the end of the screen. Clearing the whole screen instead
// would wipe what was printed above (the start-up steps and the hint).
type screen struct {
	w     io.Writer
	width func() int // the terminal's columns; 0 if unknown
	rows  int        // rows the last block took
}

func (s *screen) draw(block string) {
	var b strings.Builder
	if s.rows > 0 {
		fmt.Fprintf(&b, "\033[%dA", s.rows) // cursor up
	}
	b.WriteString("\r\033[J") // to the first column, clear to the end of the screen
	b.WriteString(block)
	_, _ = io.WriteString(s.w, b.String())
	s.rows = rowsOf(block, s.width())
}

// rowsOf counts the terminal rows a block ending in a newline takes: a line wider than the terminal
// wraps onto more rows. Every character of the status table is one column wide.
func rowsOf(block string, width int) int {
	n := 0
	for _, line := range strings.Split(strings.TrimSuffix(block, "\n"), "\n") {
		w := len([]rune(line))
		if width > 0 && w > width {
			n += (w + width - 1) / width
		} else {
			n++
		}
	}
	return n
}

func cfgRegions(cfg lab.Config) []string {
	if len(cfg.Regions) > 0 {
		return cfg.Regions
	}
	return lab.DefaultRegions
}

// detach starts the supervisor as a background process and waits until the lab is ready.
func (c *labCLI) detach(cmd *cobra.Command, cfg lab.Config) error {
	out := cmd.OutOrStdout()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	sargs := []string{"lab", "--dir", cfg.Dir, "up", "--supervise", "--regions", strings.Join(cfgRegions(cfg), ",")}
	if cfg.Primary != "" {
		sargs = append(sargs, "--primary", cfg.Primary)
	}
	if cfg.FirstAddress != "" {
		sargs = append(sargs, "--first-address", cfg.FirstAddress)
	}
	logPath := filepath.Join(cfg.Dir, "supervisor.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	sup := exec.Command(exe, sargs...)
	sup.Stdout, sup.Stderr = logf, logf
	sup.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := time.Now()
	if err := sup.Start(); err != nil {
		return fmt.Errorf("start the lab supervisor: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sup.Wait() }()
	fmt.Fprintf(out, "Starting a lab in %s (supervisor pid %d, log %s)...\n", cfg.Dir, sup.Process.Pid, logPath)
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
	defer cancel()
	for {
		select {
		case err := <-exited:
			last := tail(logPath, 1)
			if _, msg, ok := strings.Cut(last, ": "); ok && strings.HasPrefix(last, "meridian") {
				last = msg // the supervisor's own "meridian lab up: ..." error line
			}
			return fmt.Errorf("the lab supervisor exited (%v) before the lab was ready: %s\n(full log: %s)", err, last, logPath)
		case <-ctx.Done():
			_ = sup.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("the lab was not ready within 2 minutes (see %s)", logPath)
		case <-time.After(100 * time.Millisecond):
		}
		cl, err := lab.Dial(ctx, cfg.Dir)
		if err != nil {
			continue
		}
		st, err := cl.Status(ctx)
		if err != nil {
			continue
		}
		fmt.Fprintf(out, "Lab ready in %.1fs.\n\n", time.Since(start).Seconds())
		st.Render(out)
		region := st.Regions[min(1, len(st.Regions)-1)].Name
		fmt.Fprintf(out, "\nNext: %s · %s · %s · %s\n", c.hint(cfg.Dir, "psql "+region), c.hint(cfg.Dir, "load"),
			c.hint(cfg.Dir, "status"), c.hint(cfg.Dir, "down"))
		return nil
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (c *labCLI) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running lab: servers, roles, replication lag, proxy traffic, WAN links",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.dial(cmd)
			if err != nil {
				return err // with --json, reportError prints it as a JSON object
			}
			st, err := cl.Status(cmd.Context())
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), asJSON, st, st.Render)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (an error too: {\"error\": ..., \"code\": ...})")
	return cmd
}

// printResult writes v as JSON, or renders it for people.
func printResult(w io.Writer, asJSON bool, v any, render func(io.Writer)) error {
	if asJSON {
		return json.NewEncoder(w).Encode(v)
	}
	render(w)
	return nil
}

// workloadFlags declares the flags every lab workload has.
func workloadFlags(cmd *cobra.Command, w *lab.Workload, asJSON *bool, clients string, rate float64, unit string) {
	*w = lab.DefaultWorkload(rate)
	cmd.Flags().DurationVar(&w.Duration, "duration", w.Duration, "how long to run (1s to 24h)")
	cmd.Flags().IntVar(&w.ClientsPerRegion, "clients-per-region", w.ClientsPerRegion, "connections per region (1 to 500), "+clients)
	cmd.Flags().Float64Var(&w.Rate, "rate", w.Rate, unit+" per second per region (spread over its clients); -1: as fast as they can")
	cmd.Flags().BoolVar(asJSON, "json", false, "print the report as JSON")
}

// runWorkload validates a workload's flags, runs it against the lab and prints its report.
func runWorkload[R interface{ Render(io.Writer) }](cmd *cobra.Command, c *labCLI, validate func() error, asJSON bool,
	what string, run func(context.Context, lab.State, []lab.LinkStatus) (R, error)) error {
	if err := validate(); err != nil {
		return usageError{err}
	}
	cl, err := c.dial(cmd)
	if err != nil {
		return err
	}
	st, err := cl.Status(cmd.Context())
	if err != nil {
		return err
	}
	if !asJSON {
		fmt.Fprintf(cmd.OutOrStdout(), "%s through %d proxies...\n", what, len(st.Regions))
	}
	rep, err := run(cmd.Context(), cl.State, st.Links)
	if err != nil {
		return err
	}
	return printResult(cmd.OutOrStdout(), asJSON, rep, rep.Render)
}

func (c *labCLI) loadCmd() *cobra.Command {
	var cfg lab.LoadConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Run a mixed read/write workload through every region's proxy and report what each region saw",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runWorkload(cmd, c, cfg.Validate, asJSON, fmt.Sprintf("Running %v of load", cfg.Duration),
				func(ctx context.Context, st lab.State, links []lab.LinkStatus) (lab.LoadReport, error) {
					return lab.Load(ctx, st, links, cfg)
				})
		},
	}
	workloadFlags(cmd, &cfg.Workload, &asJSON, "one statement at a time each", lab.DefaultRate, "statements")
	cmd.Flags().Float64Var(&cfg.WriteRatio, "write-ratio", lab.DefaultWriteRatio, "share of statements that are writes (0 to 1)")
	return cmd
}

func (c *labCLI) rywCmd() *cobra.Command {
	var cfg lab.RYWConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "read-your-writes",
		Aliases: []string{"ryw"},
		Short:   "Benchmark read-your-writes: clients insert a row and read it back at once, half in session and half in eventual consistency",
		Long: `Every region's clients insert an order and immediately read it back through their region's proxy,
half of them in session consistency (the default) and half in eventual, at the same time. The report
shows, per region and mode, write and read latency, how many reads saw the write, how many a replica
answered (the primary's region has none), and how long session reads waited in the proxy for the
replica to catch up.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runWorkload(cmd, c, cfg.Validate, asJSON, fmt.Sprintf("Running %v of write-then-read", cfg.Duration),
				func(ctx context.Context, st lab.State, links []lab.LinkStatus) (lab.RYWReport, error) {
					return lab.ReadYourWrites(ctx, st, links, cfg)
				})
		},
	}
	workloadFlags(cmd, &cfg.Workload, &asJSON, "alternately session and eventual", lab.DefaultRYWRate, "write+read pairs")
	return cmd
}

// regionArgs checks that every name is one of the lab's regions.
func regionArgs(st lab.State, names ...string) error {
	for _, n := range names {
		if _, err := st.Region(n); err != nil {
			return usageError{err}
		}
	}
	return nil
}

// parseRTT reads a round-trip time argument.
func parseRTT(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > time.Minute {
		return 0, usagef("RTT %q: give a round-trip time from 0 to 1m, such as 90ms", s)
	}
	return d, nil
}

func (c *labCLI) latencyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "latency FROM TO RTT",
		Short:   "Change the round-trip time between two regions, at run time (e.g. us-east-1 eu-west-1 90ms)",
		Example: "  meridian lab latency us-east-1 us-west-2 100ms",
		Args:    exactArgs(3, "FROM TO RTT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rtt, err := parseRTT(args[2])
			if err != nil {
				return err
			}
			cl, err := c.dial(cmd)
			if err != nil {
				return err
			}
			if err := regionArgs(cl.State, args[0], args[1]); err != nil {
				return err
			}
			if args[0] == args[1] {
				return usagef("FROM and TO are both %s: traffic inside a region is direct, there is no WAN link to change", args[0])
			}
			if err := cl.SetRTT(cmd.Context(), args[0], args[1], rtt); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s ↔ %s: round trip now %v\n", args[0], args[1], rtt)
			return nil
		},
	}
	// A negative RTT (-5ms) reaches the flag parser as a cluster of one-letter flags.
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		if arg := negativeArg(err); arg != "" {
			return usagef("RTT %s: a round-trip time cannot be negative; give one from 0 to 1m, such as 90ms", arg)
		}
		return flagError(cmd, err)
	})
	return cmd
}

func (c *labCLI) partitionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "partition REGION",
		Short: "Cut a region off from the others (its reads keep working, stale; its writes fail)",
		Args:  exactArgs(1, "one REGION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.dial(cmd)
			if err != nil {
				return err
			}
			if err := regionArgs(cl.State, args[0]); err != nil {
				return err
			}
			if err := cl.Partition(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is cut off; heal it with: %s\n", args[0], c.hint(cl.State.Dir, "heal "+args[0]))
			return nil
		},
	}
}

func (c *labCLI) healCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "heal [REGION]",
		Short: "End a partition (of one region, or all)",
		Args:  maxArgs(1, "at most one REGION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.dial(cmd)
			if err != nil {
				return err
			}
			if err := regionArgs(cl.State, args...); err != nil {
				return err
			}
			region := ""
			if len(args) == 1 {
				region = args[0]
			}
			if err := cl.Heal(cmd.Context(), region); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "healed")
			return nil
		},
	}
}

func (c *labCLI) psqlCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "psql REGION [psql arguments]",
		Short: "Open psql on a region's proxy (database " + lab.Database + "); arguments after REGION go to psql",
		Long: `Runs psql on the region's proxy as the user postgres, database ` + lab.Database + `. Everything after REGION
is psql's (meridian's own flags, such as --dir, come before it):

  meridian lab psql us-west-2 -c 'SELECT count(*) FROM orders'
  meridian lab psql us-west-2 -d meridian -c 'SHOW POOLS'     # the proxy's admin console

The lab's proxies let postgres into the admin console with a password the lab generates (in
lab.json); this command passes it to psql.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("REGION is missing: name the region whose proxy psql connects to (%s lists them)", c.prog+" lab status")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := c.dirAbs()
			if err != nil {
				return err
			}
			st, err := lab.ReadState(dir)
			if err != nil {
				return err
			}
			r, err := st.Region(args[0])
			if err != nil {
				return usageError{err}
			}
			psqlArgs := args[1:]
			if len(psqlArgs) > 0 && psqlArgs[0] == "--" {
				psqlArgs = psqlArgs[1:] // the documented separator; psql would take what follows as names
			}
			psql := "psql"
			if bin, err := pgnode.FindBinaries(); err == nil {
				if _, err := os.Stat(bin.Path("psql")); err == nil {
					psql = bin.Path("psql")
				}
			}
			path, err := exec.LookPath(psql)
			if err != nil {
				return fmt.Errorf("psql is not installed (apt-get install postgresql-client): %w", err)
			}
			host, port, _ := strings.Cut(r.Proxy, ":")
			argv := append([]string{"psql", "-h", host, "-p", port, "-U", lab.AdminUser, "-d", lab.Database}, psqlArgs...)
			env := os.Environ()
			if st.AdminPassword != "" {
				env = setEnv(env, "PGPASSWORD", st.AdminPassword) // asked for by the admin console only
			}
			return syscall.Exec(path, argv, env)
		},
	}
	// Flags after REGION are psql's: `lab psql us-west-2 -c 'SELECT 1'`.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// setEnv returns env with name set to value (and no other entry for name: with duplicates, libc's
// getenv returns the first).
func setEnv(env []string, name, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return append(out, name+"="+value)
}

func (c *labCLI) downCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the lab, free every port and remove its servers' data (also cleans up after a supervisor that died)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := c.dirAbs()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			rep, err := lab.Down(cmd.Context(), dir, log)
			if errors.Is(err, lab.ErrNoLab) {
				fmt.Fprintf(out, "no lab in %s: nothing to stop\n", dir)
				return nil
			}
			if err != nil {
				return err
			}
			switch {
			case rep.Running:
				fmt.Fprintf(out, "lab in %s stopped; its servers' data removed\n", dir)
			case rep.State && rep.Servers > 0:
				fmt.Fprintf(out, "the lab in %s had lost its supervisor: stopped the %d server(s) it left running and removed their data\n", dir, rep.Servers)
			case rep.State:
				fmt.Fprintf(out, "the lab in %s had lost its supervisor and its servers had stopped with it: removed their data\n", dir)
			default:
				fmt.Fprintf(out, "no lab was running in %s: removed the data one had left\n", dir)
			}
			return nil
		},
	}
}
