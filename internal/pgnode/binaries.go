package pgnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EnvBinDir names the environment variable that, when set, is the folder of the PostgreSQL server
// programs (initdb, postgres, pg_basebackup, pg_rewind, ...). It takes precedence over every other way
// of finding them.
const EnvBinDir = "MERIDIAN_PG_BINDIR"

// ErrNoBinaries is returned (wrapped) by [FindBinaries] when no PostgreSQL server programs are found.
var ErrNoBinaries = errors.New("PostgreSQL server programs not found")

// programs are the server programs Meridian runs; a folder is accepted only if it has all of them.
var programs = []string{"initdb", "postgres", "pg_basebackup", "pg_rewind", "pg_controldata"}

// Binaries is a folder of PostgreSQL server programs of one major version.
type Binaries struct {
	Dir     string // absolute folder holding initdb, postgres, pg_basebackup, pg_rewind, ...
	Version int    // major version, e.g. 15
}

// Path returns the full path of the named program.
func (b Binaries) Path(program string) string { return filepath.Join(b.Dir, program) }

// FindBinaries finds the PostgreSQL server programs: the folder named by $MERIDIAN_PG_BINDIR, then
// `pg_config --bindir`, then the highest-versioned /usr/lib/postgresql/*/bin, then $PATH. When none
// qualifies the error wraps [ErrNoBinaries] and says how to install them.
func FindBinaries() (Binaries, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		b, err := inspect(dir)
		if err != nil {
			return Binaries{}, fmt.Errorf("%s=%s: %w", EnvBinDir, dir, err)
		}
		return b, nil
	}
	var candidates []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	candidates = append(candidates, debianBinDirs("/usr/lib/postgresql")...)
	if p, err := exec.LookPath("postgres"); err == nil {
		candidates = append(candidates, filepath.Dir(p))
	}
	var tried []string
	for _, dir := range candidates {
		b, err := inspect(dir)
		if err == nil {
			return b, nil
		}
		tried = append(tried, err.Error())
	}
	detail := ""
	if len(tried) > 0 {
		detail = " (tried: " + strings.Join(tried, "; ") + ")"
	}
	return Binaries{}, fmt.Errorf("%w%s: install them with `apt-get install postgresql` (Debian/Ubuntu) "+
		"or `dnf install postgresql-server` (Fedora/RHEL), or set %s to the folder holding initdb and postgres",
		ErrNoBinaries, detail, EnvBinDir)
}

// debianBinDirs lists /usr/lib/postgresql/<major>/bin folders, highest major first.
func debianBinDirs(root string) []string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var majors []int
	for _, e := range entries {
		if v, err := strconv.Atoi(e.Name()); err == nil {
			majors = append(majors, v)
		}
	}
	slices.Sort(majors)
	slices.Reverse(majors)
	dirs := make([]string, 0, len(majors))
	for _, v := range majors {
		dirs = append(dirs, filepath.Join(root, strconv.Itoa(v), "bin"))
	}
	return dirs
}

// inspect checks that dir holds every program Meridian needs and reads the major version.
func inspect(dir string) (Binaries, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Binaries{}, err
	}
	for _, p := range programs {
		st, err := os.Stat(filepath.Join(abs, p))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return Binaries{}, fmt.Errorf("%s has no executable %s", abs, p)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(abs, "postgres"), "--version").Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("%s/postgres --version: %w", abs, err)
	}
	v, err := parseMajor(string(out))
	if err != nil {
		return Binaries{}, fmt.Errorf("%s/postgres --version: %w", abs, err)
	}
	return Binaries{Dir: abs, Version: v}, nil
}

// parseMajor reads the major version from `postgres --version` output such as
// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
func parseMajor(s string) (int, error) {
	const marker = "(PostgreSQL) "
	_, rest, ok := strings.Cut(s, marker)
	if !ok {
		return 0, fmt.Errorf("unrecognised version output %q", strings.TrimSpace(s))
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end <= 0 {
		return 0, fmt.Errorf("unrecognised version output %q", strings.TrimSpace(s))
	}
	v, err := strconv.Atoi(rest[:end])
	if err != nil {
		return 0, err
	}
	if v < 13 {
		return 0, fmt.Errorf("PostgreSQL %d is too old: Meridian needs 13 or newer (pg_rewind crash recovery, reloadable primary_conninfo)", v)
	}
	return v, nil
}
