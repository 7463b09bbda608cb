package pgnode

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// confFile is the file Meridian owns in the data directory; postgresql.conf includes it.
const confFile = "meridian.conf"

// includeLine is appended to postgresql.conf so that meridian.conf is read after the defaults.
const includeLine = "include_if_exists = '" + confFile + "'\t# written by Meridian"

// defaultSettings make every node replication-ready and rewindable. Values are plain strings; they are
// written quoted, which PostgreSQL accepts for every type.
var defaultSettings = map[string]string{
	"wal_level":                    "replica",
	"max_wal_senders":              "16",
	"max_replication_slots":        "16",
	"wal_keep_size":                "512MB", // lets a replica or a rewound node catch up without a slot
	"hot_standby":                  "on",
	"hot_standby_feedback":         "on",
	"wal_log_hints":                "on", // pg_rewind needs hint-bit changes in WAL (or data checksums)
	"full_page_writes":             "on",
	"wal_receiver_status_interval": "1s",
	"wal_sender_timeout":           "10s",
	"wal_receiver_timeout":         "10s",
	"recovery_target_timeline":     "latest", // follow the upstream across promotions
	"unix_socket_directories":      "",       // TCP only: socket paths collide and have length limits
	"logging_collector":            "off",    // the server's stderr goes to postgres.log
	"log_line_prefix":              "%m [%p] %q%u@%d ",
	"log_checkpoints":              "on",
}

// writeBaseConfig writes pg_hba.conf and makes postgresql.conf include meridian.conf. It runs after
// initdb, pg_basebackup and pg_rewind, all of which leave someone else's version of these files.
func (n *Node) writeBaseConfig() error {
	var hba strings.Builder
	hba.WriteString("# Written by Meridian; regenerated when the node is created, cloned or rewound.\n")
	hba.WriteString("# TYPE\tDATABASE\tUSER\tADDRESS\tMETHOD\n")
	hba.WriteString("local\tall\tall\t\ttrust\n")
	for _, cidr := range n.cfg.AllowCIDRs {
		fmt.Fprintf(&hba, "host\tall\tall\t%s\t%s\n", cidr, n.authMethod())
		fmt.Fprintf(&hba, "host\treplication\tall\t%s\t%s\n", cidr, n.authMethod())
	}
	if err := n.user.writeOwned(filepath.Join(n.DataDir(), "pg_hba.conf"), []byte(hba.String())); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	pgconf := filepath.Join(n.DataDir(), "postgresql.conf")
	b, err := os.ReadFile(pgconf)
	if err != nil {
		return fmt.Errorf("read postgresql.conf: %w", err)
	}
	if !bytes.Contains(b, []byte(includeLine)) {
		b = append(b, []byte("\n"+includeLine+"\n")...)
		if err := n.user.writeOwned(pgconf, b); err != nil {
			return fmt.Errorf("write postgresql.conf: %w", err)
		}
	}
	return nil
}

// writeRunConfig regenerates meridian.conf and standby.signal from the node's current role.
func (n *Node) writeRunConfig() error {
	settings := maps.Clone(defaultSettings)
	settings["listen_addresses"] = n.cfg.Host
	settings["port"] = strconv.Itoa(n.cfg.Port)
	settings["cluster_name"] = n.cfg.Name
	up, standby := n.Upstream()
	if standby {
		settings["primary_conninfo"] = n.conninfo(up, "application_name="+quoteConnValue(n.cfg.Name),
			"keepalives_idle=5", "keepalives_interval=2", "keepalives_count=3")
	}
	maps.Copy(settings, n.cfg.Settings)

	var b strings.Builder
	b.WriteString("# Written by Meridian before every start and re-point; edits here are lost.\n")
	b.WriteString("# Put your own settings in postgresql.conf above the include, or in Meridian's config.\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteSetting(settings[k]))
	}
	if err := n.user.writeOwned(filepath.Join(n.DataDir(), confFile), []byte(b.String())); err != nil {
		return fmt.Errorf("write %s: %w", confFile, err)
	}
	signal := filepath.Join(n.DataDir(), "standby.signal")
	if standby {
		if err := n.user.writeOwned(signal, nil); err != nil {
			return fmt.Errorf("write standby.signal: %w", err)
		}
	} else if err := os.Remove(signal); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove standby.signal: %w", err)
	}
	return nil
}

// quoteSetting quotes a configuration value as a string literal
// (https://www.postgresql.org/docs/15/config-setting.html#CONFIG-SETTING-CONFIGURATION-FILE).
func quoteSetting(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`, "\n", " ").Replace(v) + "'"
}
