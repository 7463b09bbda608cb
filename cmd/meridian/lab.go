package main

import (
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

	"github.com/meridiandb/meridian/internal/lab"
	"github.com/meridiandb/meridian/internal/pgnode"
)

func newLabCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run the whole multi-region system on this machine, with emulated WAN links",
		Long: "meridian lab builds three regions on one machine — a PostgreSQL server and a proxy in each, the primary\n" +
			"in one, streaming replicas elsewhere — with every cross-region connection going through a WAN link\n" +
			"with real-sized round-trip times. Start with: meridian lab up",
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", lab.DefaultDir(), "the lab's directory")
	dirOf := func() (string, error) {
		d, err := filepath.Abs(dir)
		if err != nil {
			return "", usageError{fmt.Errorf("--dir: %w", err)}
		}
		return d, nil
	}
	cmd.AddCommand(newLabUpCmd(dirOf), newLabStatusCmd(dirOf), newLabLoadCmd(dirOf), newLabRYWCmd(dirOf), newLabLatencyCmd(dirOf),
		newLabPartitionCmd(dirOf), newLabHealCmd(dirOf), newLabPsqlCmd(dirOf), newLabDownCmd(dirOf))
	return cmd
}

func newLabUpCmd(dirOf func() (string, error)) *cobra.Command {
	var regions []string
	var primary, firstAddr string
	var detach, supervise bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a lab: in the foreground with a live status table (Ctrl-C stops it), or --detach",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dirOf()
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
				return labDetach(cmd, dir, os.Args[1:])
			}
			return labSupervise(cmd.Context(), cmd.OutOrStdout(), cfg, !supervise)
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

// labSupervise runs a lab until ctx ends or `lab down` asks it to stop. In the foreground it prints
// each step, then a live status table.
func labSupervise(ctx context.Context, out io.Writer, cfg lab.Config, foreground bool) error {
	logw := io.Writer(os.Stderr) // with --supervise, stderr is the supervisor's log file
	if foreground {
		f, err := os.OpenFile(filepath.Join(cfg.Dir, "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
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
		fmt.Fprintf(out, "Starting a lab with %s in %s (log: %s)\n", strings.Join(cfgRegions(cfg), ", "), cfg.Dir,
			filepath.Join(cfg.Dir, "supervisor.log"))
	}
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop, err := l.Serve(cancel)
	if err != nil {
		return err
	}
	defer stop()
	log.Info("lab ready", "took", time.Since(start).Round(time.Millisecond))
	if !foreground {
		<-ctx.Done()
		log.Info("lab stopping")
		return nil
	}
	fmt.Fprintf(out, "Lab ready in %.1fs. Try: meridian lab psql %s · meridian lab load --duration 20s (in another terminal)\n\n",
		time.Since(start).Seconds(), cfgRegions(cfg)[min(1, len(cfgRegions(cfg))-1)])
	tty := false
	if f, ok := out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil {
			tty = fi.Mode()&os.ModeCharDevice != 0
		}
	}
	every := time.Second
	if !tty {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "\nStopping the lab...")
			return nil
		case <-t.C:
		}
		st := l.Status(ctx)
		if tty {
			fmt.Fprint(out, "\033[H\033[2J")
			fmt.Fprintf(out, "Meridian lab in %s — up %s — Ctrl-C stops it\n\n", cfg.Dir, time.Since(start).Round(time.Second))
		}
		st.Render(out)
		fmt.Fprintln(out)
	}
}

func cfgRegions(cfg lab.Config) []string {
	if len(cfg.Regions) > 0 {
		return cfg.Regions
	}
	return lab.DefaultRegions
}

// labDetach starts the supervisor as a background process and waits until the lab is ready.
func labDetach(cmd *cobra.Command, dir string, args []string) error {
	out := cmd.OutOrStdout()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var sargs []string
	for _, a := range args {
		if a != "--detach" && a != "--detach=true" {
			sargs = append(sargs, a)
		}
	}
	sargs = append(sargs, "--supervise", "--dir", dir)
	logPath := filepath.Join(dir, "supervisor.log")
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
	fmt.Fprintf(out, "Starting a lab in %s (supervisor pid %d, log %s)...\n", dir, sup.Process.Pid, logPath)
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
	defer cancel()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("the lab supervisor exited (%v) before the lab was ready: %s\n(full log: %s)", err,
				strings.TrimPrefix(tail(logPath, 1), "meridian: "), logPath)
		case <-ctx.Done():
			_ = sup.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("the lab was not ready within 2 minutes (see %s)", logPath)
		case <-time.After(100 * time.Millisecond):
		}
		c, err := lab.Dial(ctx, dir)
		if err != nil {
			continue
		}
		st, err := c.Status(ctx)
		if err != nil {
			continue
		}
		fmt.Fprintf(out, "Lab ready in %.1fs.\n\n", time.Since(start).Seconds())
		st.Render(out)
		fmt.Fprintf(out, "\nmeridian lab psql %s · meridian lab load · meridian lab status · meridian lab down\n", st.Regions[min(1, len(st.Regions)-1)].Name)
		return nil
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func newLabStatusCmd(dirOf func() (string, error)) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running lab: servers, roles, replication lag, proxy traffic, WAN links",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dialLab(cmd, dirOf)
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), asJSON, st, st.Render)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
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
	cmd.Flags().DurationVar(&w.Duration, "duration", 30*time.Second, "how long to run")
	cmd.Flags().IntVar(&w.ClientsPerRegion, "clients-per-region", 8, "connections per region, "+clients)
	cmd.Flags().Float64Var(&w.Rate, "rate", rate, unit+" per second per region (spread over its clients); -1: as fast as they can")
	cmd.Flags().BoolVar(asJSON, "json", false, "print the report as JSON")
}

// runWorkload validates a workload's flags, runs it against the lab and prints its report.
func runWorkload[R interface{ Render(io.Writer) }](cmd *cobra.Command, dirOf func() (string, error), validate func() error, asJSON bool,
	what string, run func(context.Context, lab.State, []lab.LinkStatus) (R, error)) error {
	if err := validate(); err != nil {
		return usageError{err}
	}
	c, err := dialLab(cmd, dirOf)
	if err != nil {
		return err
	}
	st, err := c.Status(cmd.Context())
	if err != nil {
		return err
	}
	if !asJSON {
		fmt.Fprintf(cmd.OutOrStdout(), "%s through %d proxies...\n", what, len(st.Regions))
	}
	rep, err := run(cmd.Context(), c.State, st.Links)
	if err != nil {
		return err
	}
	return printResult(cmd.OutOrStdout(), asJSON, rep, rep.Render)
}

func dialLab(cmd *cobra.Command, dirOf func() (string, error)) (*lab.Client, error) {
	dir, err := dirOf()
	if err != nil {
		return nil, err
	}
	return lab.Dial(cmd.Context(), dir)
}

func newLabLoadCmd(dirOf func() (string, error)) *cobra.Command {
	var cfg lab.LoadConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Run a mixed read/write workload through every region's proxy and report what each region saw",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runWorkload(cmd, dirOf, cfg.Validate, asJSON, fmt.Sprintf("Running %v of load", cfg.Duration),
				func(ctx context.Context, st lab.State, links []lab.LinkStatus) (lab.LoadReport, error) {
					return lab.Load(ctx, st, links, cfg)
				})
		},
	}
	workloadFlags(cmd, &cfg.Workload, &asJSON, "one statement at a time each", lab.DefaultRate, "statements")
	cmd.Flags().Float64Var(&cfg.WriteRatio, "write-ratio", 0.2, "share of statements that are writes (0 to 1)")
	return cmd
}

func newLabRYWCmd(dirOf func() (string, error)) *cobra.Command {
	var cfg lab.RYWConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "read-your-writes",
		Aliases: []string{"ryw"},
		Short:   "Benchmark read-your-writes: clients insert a row and read it back at once, half in session and half in eventual consistency",
		Long: `Every region's clients insert an order and immediately read it back through their region's proxy,
half of them in session consistency (the default) and half in eventual, at the same time. The report
shows, per region and mode, write and read latency, how many reads saw the write, how many a replica
answered, and how long session reads waited in the proxy for the replica to catch up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runWorkload(cmd, dirOf, cfg.Validate, asJSON, fmt.Sprintf("Running %v of write-then-read", cfg.Duration),
				func(ctx context.Context, st lab.State, links []lab.LinkStatus) (lab.RYWReport, error) {
					return lab.ReadYourWrites(ctx, st, links, cfg)
				})
		},
	}
	workloadFlags(cmd, &cfg.Workload, &asJSON, "alternately session and eventual", lab.DefaultRYWRate, "write+read pairs")
	return cmd
}

func newLabLatencyCmd(dirOf func() (string, error)) *cobra.Command {
	return &cobra.Command{
		Use:     "latency FROM TO RTT",
		Short:   "Change the round-trip time between two regions, at run time (e.g. us-east-1 eu-west-1 90ms)",
		Example: "  meridian lab latency us-east-1 us-west-2 100ms",
		Args:    exactArgs(3, "FROM TO RTT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rtt, err := time.ParseDuration(args[2])
			if err != nil {
				return usageError{fmt.Errorf("RTT %q: use a duration such as 90ms", args[2])}
			}
			c, err := dialLab(cmd, dirOf)
			if err != nil {
				return err
			}
			if err := c.SetRTT(cmd.Context(), args[0], args[1], rtt); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s ↔ %s: round trip now %v\n", args[0], args[1], rtt)
			return nil
		},
	}
}

func newLabPartitionCmd(dirOf func() (string, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "partition REGION",
		Short: "Cut a region off from the others (its reads keep working, stale; its writes fail)",
		Args:  exactArgs(1, "REGION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dialLab(cmd, dirOf)
			if err != nil {
				return err
			}
			if err := c.Partition(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is cut off; heal it with: meridian lab heal %s\n", args[0], args[0])
			return nil
		},
	}
}

func newLabHealCmd(dirOf func() (string, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "heal [REGION]",
		Short: "End a partition (of one region, or all)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dialLab(cmd, dirOf)
			if err != nil {
				return err
			}
			region := ""
			if len(args) == 1 {
				region = args[0]
			}
			if err := c.Heal(cmd.Context(), region); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "healed")
			return nil
		},
	}
}

func newLabPsqlCmd(dirOf func() (string, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "psql REGION [-- psql args]",
		Short: "Open psql on a region's proxy (database " + lab.Database + ")",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dirOf()
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
			argv := append([]string{"psql", "-h", host, "-p", port, "-U", "postgres", "-d", lab.Database}, args[1:]...)
			return syscall.Exec(path, argv, os.Environ())
		},
	}
}

func newLabDownCmd(dirOf func() (string, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the lab and free every port (also cleans up after a supervisor that died)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dirOf()
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			err = lab.Down(cmd.Context(), dir, log)
			if errors.Is(err, lab.ErrNoLab) {
				fmt.Fprintf(cmd.OutOrStdout(), "no lab in %s\n", dir)
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab in %s stopped\n", dir)
			return nil
		},
	}
}

// exactArgs is cobra.ExactArgs with a message that shows the expected arguments.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %s", cmd.CommandPath(), names)}
		}
		return nil
	}
}
