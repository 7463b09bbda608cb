package pgnode

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// DefaultRunAs is the operating-system user the server programs run as when the caller is root.
const DefaultRunAs = "postgres"

// osUser is the unprivileged account the server programs run as. A nil *osUser means "run as the
// calling user", which is what happens whenever the caller is not root.
type osUser struct {
	name     string
	uid, gid uint32
}

// lookupRunAs resolves the account to run PostgreSQL as: nil when the process is not root (the server
// then runs as the caller), else the named account, which must exist and must not be root.
func lookupRunAs(name string) (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if name == "" {
		name = DefaultRunAs
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as an unprivileged user, but user %q does not exist "+
			"(create it with `useradd --system %s`, or set run_as to another user): %w", name, name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: gid %q: %w", name, u.Gid, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("user %q has uid 0: PostgreSQL refuses to run as root, choose an unprivileged user", name)
	}
	return &osUser{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
}

// credential returns the process credential to start a server program with (nil: as the caller).
func (u *osUser) credential() *syscall.Credential {
	if u == nil {
		return nil
	}
	return &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}
}

// String names the user for messages.
func (u *osUser) String() string {
	if u == nil {
		return strconv.Itoa(os.Geteuid())
	}
	return u.name
}

// mkdirOwned creates dir (mode perm) and hands it to u, so the server programs can write in it.
func (u *osUser) mkdirOwned(dir string, perm os.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	if err := os.Chmod(dir, perm); err != nil {
		return err
	}
	if u == nil {
		return nil
	}
	return os.Chown(dir, int(u.uid), int(u.gid))
}

// writeOwned writes a file that belongs to u, mode 0600.
func (u *osUser) writeOwned(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	if u == nil {
		return nil
	}
	return os.Chown(path, int(u.uid), int(u.gid))
}

// checkTraversable fails with an explanation when u cannot reach dir, which happens when root puts data
// under a private folder such as /root or a t.TempDir() (mode 0700, owned by root).
func (u *osUser) checkTraversable(dir string) error {
	if u == nil {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err == nil {
			sys, ok := st.Sys().(*syscall.Stat_t)
			if ok && !canSearch(st.Mode(), sys, u) {
				return fmt.Errorf("user %s cannot traverse %s (mode %v, owner uid %d): PostgreSQL runs as %s, so put data "+
					"under a directory it can reach (e.g. /var/lib/meridian or /tmp) or run `chmod o+x %s`",
					u.name, d, st.Mode().Perm(), sys.Uid, u.name, d)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// canSearch reports whether u has execute (search) permission on a directory with this mode and owner.
func canSearch(mode os.FileMode, st *syscall.Stat_t, u *osUser) bool {
	switch {
	case st.Uid == u.uid:
		return mode&0o100 != 0
	case st.Gid == u.gid:
		return mode&0o010 != 0
	default:
		return mode&0o001 != 0
	}
}
