package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridiandb/meridian/internal/proxy"
)

func newProxyCmd() *cobra.Command {
	var configPath, logLevel string
	cmd := &cobra.Command{
		Use:   "proxy --config FILE",
		Short: "Run the PostgreSQL proxy: pooling, read/write split, follows the primary",
		Long: "meridian proxy is what applications connect to instead of PostgreSQL. Reads go to a replica in the\n" +
			"proxy's region, writes to the primary wherever it is. See docs/proxy.md for the configuration.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return usageError{fmt.Errorf("--config is required")}
			}
			cfg, err := proxy.LoadConfig(configPath)
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return usageError{err}
			}
			p, err := proxy.New(cfg, log.With("component", "proxy"))
			if err != nil {
				return err
			}
			// SIGHUP reloads the configuration file (certificates, auth rules and file; see docs/proxy.md).
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					next, err := proxy.LoadConfig(configPath)
					if err == nil {
						_, err = p.Reload(next)
					}
					if err != nil {
						log.Error("reload failed; the running configuration stays", "err", err)
					}
				}
			}()
			p.SetReloadSource(func() (proxy.Config, error) { return proxy.LoadConfig(configPath) })
			// SIGTERM: stop accepting, let transactions finish for shutdown_timeout, then end the rest
			// with 57P01. SIGINT: the same, with at most a second's grace.
			stopSigs := make(chan os.Signal, 2)
			signal.Notify(stopSigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(stopSigs)
			grace := func() time.Duration {
				select {
				case s := <-stopSigs:
					if s == os.Interrupt {
						return min(time.Second, cfg.ShutdownTimeout)
					}
				case <-time.After(100 * time.Millisecond):
				}
				return cfg.ShutdownTimeout
			}
			return p.RunUntil(cmd.Context(), grace)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML configuration file (required)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.AddCommand(newProxyPasswdCmd())
	return cmd
}
