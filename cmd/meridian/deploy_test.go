package main

// The tests of docs/deploy.md: the files under deploy/ load and run as the page says, and the
// walk-through works on one machine. See the page's last section.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/pgnode"
	"github.com/meridiandb/meridian/internal/pgtest"
	"github.com/meridiandb/meridian/internal/proxy"
)

// Paths of the deployment, relative to this package's directory (go test runs in it).
const (
	repoRoot        = "../.."
	deployDoc       = "docs/deploy.md"
	proxyUnit       = "deploy/systemd/meridian-proxy@.service"
	pgSettingsFile  = "deploy/postgresql/meridian.conf"
	rolesFile       = "deploy/postgresql/roles.sql"
	etcMeridian     = "/etc/meridian/"       // where the page installs the proxy's files
	etcPostgresTLS  = "/etc/postgresql/tls/" // where the page installs the servers' TLS files
	installedBinary = "/usr/local/bin/meridian"
	privateNetworks = "10.0.0.0/8" // the page's stand-in for the private networks
)

// deployNodes are the servers of the page's example.
var deployNodes = []struct{ name, address, region, slot string }{
	{"us-east-1-a", "db-us-east-1-a.example.internal:5432", "us-east-1", "us_east_1_a"},
	{"us-west-2-a", "db-us-west-2-a.example.internal:5432", "us-west-2", "us_west_2_a"},
	{"eu-west-1-a", "db-eu-west-1-a.example.internal:5432", "eu-west-1", "eu_west_1_a"},
}

// lsnToken is the check docs/deploy.md and docs/consistency.md apply to a token from a client.
var lsnToken = regexp.MustCompile(`^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`)

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// substitute replaces each old string (pairs: old, new, old, new, ...) and fails the test when one does
// not occur: the test changes only what it says it changes, and notices when a file changes under it.
func substitute(t *testing.T, what, text string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("%s: %q not found (the test and the file disagree)", what, pairs[i])
		}
		text = strings.ReplaceAll(text, pairs[i], pairs[i+1])
	}
	return text
}

// etcFiles is a directory that stands for /etc/meridian on a proxy host, with every file the page
// puts there except the proxy configurations.
type etcFiles struct {
	dir                                          string
	proxyCA                                      *pgtest.CA // signs tls/proxy.crt: the CA applications trust
	serverCA                                     *pgtest.CA // tls/postgres-ca.pem: signs the servers' certificates
	adminPassword, monitorPassword, authPassword string
}

func newEtc(t *testing.T) *etcFiles {
	t.Helper()
	e := &etcFiles{dir: t.TempDir(), adminPassword: "admin-secret", monitorPassword: "monitor-secret", authPassword: "auth-secret"}
	tlsDir := filepath.Join(e.dir, "tls")
	if err := os.Mkdir(tlsDir, 0o750); err != nil {
		t.Fatal(err)
	}
	e.proxyCA = pgtest.NewCA(t, t.TempDir(), "proxy-ca")
	e.proxyCA.Issue(t, filepath.Join(tlsDir, "proxy.crt"), filepath.Join(tlsDir, "proxy.key"), "proxy", false)
	e.serverCA = pgtest.NewCA(t, tlsDir, "postgres-ca")
	for name, pw := range map[string]string{"monitor_password": e.monitorPassword, "auth_password": e.authPassword} {
		if err := os.WriteFile(filepath.Join(e.dir, name), []byte(pw+"\n"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// users.txt as the page writes it: `meridian proxy passwd meridian_admin --file /etc/meridian/users.txt`.
	cmd := newRootCmd(io.Discard, io.Discard)
	cmd.SetIn(strings.NewReader(e.adminPassword + "\n"))
	cmd.SetArgs([]string{"proxy", "passwd", "meridian_admin", "--file", filepath.Join(e.dir, "users.txt")})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("meridian proxy passwd: %v", err)
	}
	return e
}

// configFiles lists every YAML file under deploy/ (all are proxy configurations) by region.
func configFiles(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(filepath.Join(repoRoot, "deploy"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		region, ok := strings.CutPrefix(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), "proxy-")
		if !ok || filepath.Dir(rel) != "deploy/config" || filepath.Ext(path) != ".yaml" {
			t.Errorf("%s: proxy configurations are deploy/config/proxy-REGION.yaml (the unit runs /etc/meridian/proxy-%%i.yaml)", rel)
			return nil
		}
		files[region] = rel
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no proxy configuration under deploy/config")
	}
	return files
}

// unitFile is a systemd unit: section → key → values, in order.
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, rel string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(repoFile(t, rel)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s line %d: want key=value inside a [section], got %q", rel, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	if v := u[section][key]; len(v) == 1 {
		return v[0]
	}
	t.Fatalf("%s: want exactly one %s= in [%s], got %q", proxyUnit, key, section, u[section][key])
	return ""
}

// execStart is the unit's command line for one region's instance (%i), with /etc/meridian/ moved to etc.
func (u unitFile) execStart(t *testing.T, region, etc string) []string {
	t.Helper()
	line := strings.ReplaceAll(u.one(t, "Service", "ExecStart"), "%i", region)
	if strings.ContainsAny(line, `"'\$%`) {
		t.Fatalf("%s: ExecStart %q has quoting or specifiers this test does not expand", proxyUnit, line)
	}
	args := strings.Fields(line)
	if etc != "" {
		for i := range args {
			args[i] = strings.Replace(args[i], etcMeridian, etc+"/", 1)
		}
	}
	return args
}

// TestDeployFiles checks the files of docs/deploy.md without PostgreSQL: every proxy configuration
// under deploy/ loads with the proxy's own loader, the systemd unit's command line parses as the
// meridian command's, and the page shows the files exactly as they are.
func TestDeployFiles(t *testing.T) {
	etc := newEtc(t)
	unit := readUnit(t, proxyUnit)
	stop, err := time.ParseDuration(unit.one(t, "Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("%s: TimeoutStopSec: %v", proxyUnit, err)
	}
	if got := unit.one(t, "Service", "ExecReload"); got != "/bin/kill -HUP $MAINPID" {
		t.Errorf("%s: ExecReload = %q; the proxy reloads on SIGHUP", proxyUnit, got)
	}
	if got := unit.one(t, "Service", "User"); got != "meridian" {
		t.Errorf("%s: User = %q; docs/deploy.md creates the user meridian", proxyUnit, got)
	}
	var wantNodes []proxy.NodeConfig
	for _, n := range deployNodes {
		wantNodes = append(wantNodes, proxy.NodeConfig{Name: n.name, Address: n.address, Region: n.region})
	}

	for region, rel := range configFiles(t) {
		// The real loader, on the file as installed: only /etc/meridian/ points elsewhere, to files
		// made as the page makes them.
		text := substitute(t, rel, repoFile(t, rel), etcMeridian, etc.dir+"/")
		path := filepath.Join(t.TempDir(), filepath.Base(rel))
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := proxy.LoadConfig(path)
		if err != nil {
			t.Errorf("%s does not load: %v", rel, err)
			continue
		}
		if cfg.Region != region {
			t.Errorf("%s: region = %q, want %q (the file's name)", rel, cfg.Region, region)
		}
		if diff := cmp.Diff(wantNodes, cfg.Nodes); diff != "" {
			t.Errorf("%s: nodes differ from the page's example (-page +file):\n%s", rel, diff)
		}
		if cfg.ShutdownTimeout >= stop {
			t.Errorf("%s: shutdown_timeout %v is not below the unit's TimeoutStopSec %v: systemd would kill the proxy mid-drain", rel, cfg.ShutdownTimeout, stop)
		}

		// The unit's command line for this region, through the meridian command's own parsing.
		args := unit.execStart(t, region, "")
		if args[0] != installedBinary {
			t.Errorf("%s: ExecStart runs %s; docs/deploy.md installs %s", proxyUnit, args[0], installedBinary)
		}
		cmd, rest, err := newRootCmd(io.Discard, io.Discard).Find(args[1:])
		if err != nil || cmd.Name() != "proxy" {
			t.Fatalf("%s: ExecStart %q: not the proxy command (%v)", proxyUnit, args, err)
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Errorf("%s: ExecStart %q: %v", proxyUnit, args, err)
			continue
		}
		if extra := cmd.Flags().Args(); len(extra) > 0 {
			t.Errorf("%s: ExecStart: unexpected arguments %q", proxyUnit, extra)
		}
		if got, _ := cmd.Flags().GetString("config"); got != etcMeridian+"proxy-"+region+".yaml" {
			t.Errorf("%s: --config %s for region %s; the page installs %s as %sproxy-%s.yaml", proxyUnit, got, region, rel, etcMeridian, region)
		}
		// The level is checked as the command checks it (TestDeployWalkthrough runs the line for real).
		if level, _ := cmd.Flags().GetString("log-level"); level != "" {
			var l slog.Level
			if err := l.UnmarshalText([]byte(level)); err != nil {
				t.Errorf("%s: --log-level %s: %v", proxyUnit, level, err)
			}
		}
	}

	checkDeployDoc(t)
}

// checkDeployDoc: every file the page shows between <!-- file: PATH --> and the end of the next code
// block is exactly that file; every file under deploy/ is named on the page; every deploy/ path named
// in the docs or the README exists.
func checkDeployDoc(t *testing.T) {
	t.Helper()
	doc := repoFile(t, deployDoc)
	shown := regexp.MustCompile("(?s)<!-- file: (\\S+) -->\n```[a-z]*\n(.*?)```\n").FindAllStringSubmatch(doc, -1)
	if len(shown) == 0 {
		t.Errorf("%s shows no file between <!-- file: ... --> markers", deployDoc)
	}
	for _, m := range shown {
		if diff := cmp.Diff(repoFile(t, m[1]), m[2]); diff != "" {
			t.Errorf("%s shows %s differently from the file (-file +page):\n%s", deployDoc, m[1], diff)
		}
	}
	err := filepath.WalkDir(filepath.Join(repoRoot, "deploy"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if !strings.Contains(doc, rel) {
			t.Errorf("%s is not named in %s", rel, deployDoc)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	docs, _ := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	docs = append(docs, filepath.Join(repoRoot, "README.md"))
	named := regexp.MustCompile(`\bdeploy/[\w.@/-]*`)
	link := regexp.MustCompile(`\]\(([\w./-]*\.md)?#([\w-]+)\)`)
	for _, d := range docs {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, d)
		for _, p := range named.FindAllString(string(b), -1) {
			p = strings.TrimRight(p, ".")
			if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil {
				t.Errorf("%s names %s, which does not exist", rel, p)
			}
		}
		// Links to a section, from the deployment and design pages and into them.
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := d
			if m[1] != "" {
				target = filepath.Join(filepath.Dir(d), m[1])
			}
			from, to := filepath.Base(d), filepath.Base(target)
			if from != "deploy.md" && from != "architecture.md" && to != "deploy.md" && to != "architecture.md" {
				continue
			}
			if !slices.Contains(headingAnchors(t, target), m[2]) {
				t.Errorf("%s links to %s#%s: no such section", rel, to, m[2])
			}
		}
	}
}

// headingAnchors returns the anchors GitHub gives a Markdown file's headings.
func headingAnchors(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var anchors []string
	inFence := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var a strings.Builder
		for _, r := range title {
			switch {
			case r == ' ':
				a.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				a.WriteRune(r)
			}
		}
		anchors = append(anchors, a.String())
	}
	return anchors
}

// readPGSettings reads `key = value  # comment` lines of a postgresql.conf-style file.
func readPGSettings(t *testing.T, rel string) map[string]string {
	t.Helper()
	settings := map[string]string{}
	for n, line := range strings.Split(repoFile(t, rel), "\n") {
		inQuote := false
		for i, r := range line {
			if r == '\'' {
				inQuote = !inQuote
			}
			if r == '#' && !inQuote {
				line = line[:i]
				break
			}
		}
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s line %d: want key = value, got %q", rel, n+1, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = strings.ReplaceAll(v[1:len(v)-1], "''", "'")
		}
		settings[strings.TrimSpace(k)] = v
	}
	return settings
}

// freeAddr returns a loopback address with a port free at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDeployWalkthrough follows docs/deploy.md on one machine: the servers of the example with the
// page's settings and roles, the three proxies from deploy/config started by the systemd unit's command
// line, an application writing in one region and reading its write in another with the token, the
// monitoring of section 6, then the planned switchover as the page writes it.
func TestDeployWalkthrough(t *testing.T) {
	bin := pgtest.Binaries(t)
	psql := bin.Path("psql")
	if _, err := os.Stat(psql); err != nil {
		if psql, err = exec.LookPath("psql"); err != nil {
			t.Fatalf("psql is needed to run %s as the page does: %v", rolesFile, err)
		}
	}
	ctx := pgtest.Context(t, 4*time.Minute)
	etc := newEtc(t)

	// 1. The servers' TLS files (the page's /etc/postgresql/tls/), in a directory the server user can
	// read, and deploy/postgresql/meridian.conf with that directory. listen_addresses stays the
	// harness's: the test's servers listen on loopback only.
	pgTLS, err := os.MkdirTemp("", "meridian-deploy-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pgTLS) })
	if err := os.Chmod(pgTLS, 0o755); err != nil {
		t.Fatal(err)
	}
	// The servers inherit the test's environment. A WAL receiver connecting with sslmode=verify-full
	// looks for a client certificate in ~/.postgresql and fails when it may not look there (the
	// postgres user under root's /root); on a real host HOME is the postgres user's own directory.
	t.Setenv("HOME", pgTLS)
	serverKey := filepath.Join(pgTLS, "server.key")
	etc.serverCA.Issue(t, filepath.Join(pgTLS, "server.crt"), serverKey, "postgres-server", false)
	if os.Geteuid() == 0 { // the servers run as postgres, which must own its key
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(serverKey, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	caPEM, err := os.ReadFile(etc.serverCA.File)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pgTLS, "postgres-ca.pem"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	settings := readPGSettings(t, pgSettingsFile)
	if _, ok := settings["listen_addresses"]; !ok {
		t.Fatalf("%s: no listen_addresses", pgSettingsFile)
	}
	delete(settings, "listen_addresses")
	for _, k := range []string{"ssl_cert_file", "ssl_key_file"} {
		settings[k] = substitute(t, pgSettingsFile+" "+k, settings[k], etcPostgresTLS, pgTLS+"/")
	}
	const superPassword = "postgres-secret"
	c := pgtest.NewEmpty(t, pgtest.Options{Settings: settings, Password: superPassword})
	nodes := map[string]*pgnode.Node{}
	primary := c.NewNode(t, deployNodes[0].name, nil)
	nodes[primary.Name()] = primary
	if err := primary.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var ssl bool
	pgtest.QueryRow(t, primary, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl)
	if !ssl {
		t.Fatalf("%s: the primary does not speak TLS", pgSettingsFile)
	}

	// 2. The roles, with psql -f as the page runs it, then the passwords (the page uses \password,
	// which sends the same kind of SCRAM verifier as ALTER ROLE ... PASSWORD under
	// password_encryption = scram-sha-256).
	if out, err := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", filepath.Join(repoRoot, rolesFile),
		"-d", primary.ConnString("postgres")).CombinedOutput(); err != nil {
		t.Fatalf("psql -f %s: %v\n%s", rolesFile, err, out)
	}
	const replicatorPassword, shopPassword = "replicator-secret", "shop-secret"
	for role, pw := range map[string]string{"replicator": replicatorPassword, "meridian_monitor": etc.monitorPassword,
		"meridian_auth": etc.authPassword, "shop": shopPassword} {
		pgtest.Exec(t, primary, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", role, pw))
	}

	// 3. The replicas: pg_basebackup (through pgnode), each with a slot on the primary named after it,
	// as `pg_basebackup -C -S` makes it. eu-west-1-a applies commits 2 s late, so that a read there
	// right after a write is stale unless the token makes it wait.
	for _, n := range deployNodes[1:] {
		pgtest.Exec(t, primary, "SELECT pg_create_physical_replication_slot($1, true)", n.slot)
		var extra map[string]string
		if n.name == "eu-west-1-a" {
			extra = map[string]string{"recovery_min_apply_delay": "2s"}
		}
		r := c.NewNode(t, n.name, extra)
		nodes[n.name] = r
		if err := r.Clone(ctx, primary.Endpoint()); err != nil {
			t.Fatal(err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		pgtest.Exec(t, r, "ALTER SYSTEM SET primary_slot_name = '"+n.slot+"'")
		pgtest.Exec(t, r, "SELECT pg_reload_conf()")
	}
	waitRow(t, primary, "both replicas stream through their slots",
		"SELECT count(*) = 2 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE r.state = 'streaming'")

	// 4. The proxies: deploy/config/proxy-REGION.yaml with the test's addresses, in the directory that
	// stands for /etc/meridian, each run by the systemd unit's ExecStart.
	unit := readUnit(t, proxyUnit)
	type proxyAddrs struct{ listen, http string }
	addrs := map[string]proxyAddrs{}
	pctx, stopProxies := context.WithCancel(context.Background())
	var running []chan error
	t.Cleanup(func() {
		stopProxies()
		for _, done := range running {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("meridian proxy: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("a proxy did not stop")
			}
		}
	})
	for region, rel := range configFiles(t) {
		a := proxyAddrs{listen: freeAddr(t), http: freeAddr(t)}
		addrs[region] = a
		pairs := []string{etcMeridian, etc.dir + "/", "0.0.0.0:6432", a.listen, "0.0.0.0:9187", a.http, privateNetworks, "127.0.0.0/8"}
		for _, n := range deployNodes {
			pairs = append(pairs, n.address, nodes[n.name].Endpoint().String())
		}
		text := substitute(t, rel, repoFile(t, rel), pairs...)
		if err := os.WriteFile(filepath.Join(etc.dir, filepath.Base(rel)), []byte(text), 0o640); err != nil {
			t.Fatal(err)
		}
		args := unit.execStart(t, region, etc.dir)
		done := make(chan error, 1)
		running = append(running, done)
		go func() {
			cmd := newRootCmd(io.Discard, io.Discard)
			cmd.SetArgs(args[1:])
			done <- cmd.ExecuteContext(pctx)
		}()
	}
	for region, a := range addrs {
		if err := pgtest.WaitFor(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
			code, _, err := httpGet(ctx, "http://"+a.http+"/readyz")
			return code == http.StatusOK, err
		}); err != nil {
			t.Fatalf("the proxy of %s is not ready: %v", region, err)
		}
	}

	// 5. Applications: TLS verified against the proxies' CA, SCRAM as shop (looked up with auth_query).
	appConnString := func(region, user, password, database string) string {
		host, port, _ := net.SplitHostPort(addrs[region].listen)
		return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=verify-full sslrootcert=%s",
			host, port, user, password, database, etc.proxyCA.File)
	}
	connect := func(region string) *pgx.Conn {
		t.Helper()
		conn, err := pgx.Connect(ctx, appConnString(region, "shop", shopPassword, "shop"))
		if err != nil {
			t.Fatalf("connect to the proxy of %s as shop: %v", region, err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	west, east, eu := connect("us-west-2"), connect("us-east-1"), connect("eu-west-1")
	if _, err := west.Exec(ctx, "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL, item text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	lsn := pgtest.CurrentLSN(t, primary)
	for _, n := range deployNodes[1:] {
		if err := pgtest.WaitReplayed(ctx, nodes[n.name], lsn); err != nil {
			t.Fatal(err)
		}
	}
	// What the page refuses: plaintext, and superusers (meridian.user_secret never returns them).
	if conn, err := pgx.Connect(ctx, strings.Replace(appConnString("us-west-2", "shop", shopPassword, "shop"), "sslmode=verify-full", "sslmode=disable", 1)); err == nil {
		conn.Close(ctx)
		t.Error("a plaintext client was admitted; client_tls.mode is require")
	}
	if conn, err := pgx.Connect(ctx, appConnString("us-west-2", "postgres", superPassword, "postgres")); err == nil {
		conn.Close(ctx)
		t.Error("the superuser logged in through the proxy; meridian.user_secret excludes superusers")
	}

	// The token across regions, as section 5's code: a write through us-west-2, its commit position...
	var id int64
	var wrote string
	if err := west.QueryRow(ctx, "INSERT INTO orders (customer_id, item) VALUES (1, 'deploy') RETURNING id, current_setting('cluster_name')").Scan(&id, &wrote); err != nil {
		t.Fatal(err)
	}
	token := west.PgConn().ParameterStatus("meridian.commit_lsn")
	if wrote != "us-east-1-a" || !lsnToken.MatchString(token) {
		t.Fatalf("write through us-west-2: ran on %s, token %q; want the primary us-east-1-a and a WAL position", wrote, token)
	}
	// ...is not yet on eu-west-1's replica without the token...
	var count int
	if err := eu.QueryRow(ctx, "SELECT count(*) FROM orders WHERE id = $1", id).Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != 0 {
		t.Errorf("a read through eu-west-1 without the token saw the write at once; the replica applies commits 2 s late, so the token is not what is tested")
	}
	// ...and with it the read sees the write, on a replica: eu-west-1-a once it has replayed the write,
	// or us-west-2-a if it has and the local one has not (docs/consistency.md: the local replica first,
	// then the nearest other one, else wait). The session's max_wait is raised above eu-west-1-a's 2 s
	// delay so that the read does not give up and use the primary, which would hide where it ran.
	if _, err := eu.Exec(ctx, "SET meridian.max_wait = '10s'"); err != nil {
		t.Fatal(err)
	}
	if _, err := eu.Exec(ctx, "SET meridian.min_lsn = '"+token+"'"); err != nil {
		t.Fatal(err)
	}
	var item, server string
	if err := eu.QueryRow(ctx, "SELECT item, current_setting('cluster_name') FROM orders WHERE id = $1", id).Scan(&item, &server); err != nil {
		t.Fatalf("read with the token through eu-west-1: %v", err)
	}
	if item != "deploy" || (server != "eu-west-1-a" && server != "us-west-2-a") {
		t.Errorf("read with the token through eu-west-1: item %q from %s; want the write, from a replica", item, server)
	}
	t.Logf("the read with the token through eu-west-1 ran on %s", server)

	// 6. Monitoring: /metrics counts that read as served by eu-west-1's own replica; the admin console
	// (meridian_admin from users.txt) shows the nodes' roles.
	_, metrics, err := httpGet(ctx, "http://"+addrs["eu-west-1"].http+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^meridian_proxy_reads_total\{node="eu-west-1-a",route="local_replica"\} [1-9]`).MatchString(metrics) {
		t.Errorf("eu-west-1's /metrics does not count reads served by its local replica:\n%s", grepLines(metrics, "meridian_proxy_reads_total"))
	}
	admins := map[string]*pgconn.PgConn{}
	for region := range addrs {
		a, err := pgconn.Connect(ctx, appConnString(region, "meridian_admin", etc.adminPassword, "meridian"))
		if err != nil {
			t.Fatalf("admin console of %s: %v", region, err)
		}
		t.Cleanup(func() { a.Close(context.Background()) })
		admins[region] = a
	}
	waitRoles := func(what string, want map[string]string) {
		t.Helper()
		for region, a := range admins {
			var got map[string]string
			err := pgtest.WaitFor(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
				var err error
				got, err = showNodes(ctx, a)
				return cmp.Equal(want, got), err
			})
			if err != nil {
				t.Fatalf("%s: SHOW NODES in %s: %v (-want +got):\n%s", what, region, err, cmp.Diff(want, got))
			}
		}
	}
	waitRoles("at the start", map[string]string{"us-east-1-a": "primary", "us-west-2-a": "replica", "eu-west-1-a": "replica"})

	// The planned switchover, step by step, from us-east-1-a to us-west-2-a.
	old, target, other := nodes["us-east-1-a"], nodes["us-west-2-a"], nodes["eu-west-1-a"]
	// Step 2: stop the old primary cleanly and note its shutdown checkpoint with pg_controldata.
	if err := old.Stop(ctx, pgnode.Fast); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, bin.Path("pg_controldata"), "-D", old.DataDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_controldata: %v\n%s", err, out)
	}
	ckpt := regexp.MustCompile(`(?m)^Latest checkpoint location:\s+(\S+)$`).FindStringSubmatch(string(out))
	if ckpt == nil {
		t.Fatalf("pg_controldata: no latest checkpoint location:\n%s", out)
	}
	// From here writes are refused with 57P03 once the proxies see no primary; reads go on.
	waitRoles("old primary stopped", map[string]string{"us-east-1-a": "unknown", "us-west-2-a": "replica", "eu-west-1-a": "replica"})
	_, err = west.Exec(ctx, "INSERT INTO orders (customer_id, item) VALUES (2, 'during the switchover')")
	if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "57P03" {
		t.Errorf("a write with no primary: %v; want SQLSTATE 57P03", err)
	}
	if err := eu.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&count); err != nil || count != 1 {
		t.Errorf("a read with no primary: %d rows, %v; want the one order", count, err)
	}
	// Step 4: the target has replayed past that checkpoint; promote it.
	waitRow(t, target, "the target replayed the old primary's shutdown checkpoint",
		fmt.Sprintf("SELECT pg_last_wal_replay_lsn() > '%s'::pg_lsn", ckpt[1]))
	var promoted bool
	pgtest.QueryRow(t, target, "SELECT pg_promote()").Scan(&promoted)
	if !promoted {
		t.Fatal("pg_promote() returned false")
	}
	// Step 5: slots for the others on the new primary.
	pgtest.Exec(t, target, "SELECT pg_create_physical_replication_slot('us_east_1_a')")
	pgtest.Exec(t, target, "SELECT pg_create_physical_replication_slot('eu_west_1_a')")
	// Step 6: re-point the other replica at the new primary; its slot name stays.
	conninfo := fmt.Sprintf("host=%s port=%d user=replicator password=%s sslmode=verify-full sslrootcert=%s",
		target.Endpoint().Host, target.Endpoint().Port, replicatorPassword, filepath.Join(pgTLS, "postgres-ca.pem"))
	pgtest.Exec(t, other, "ALTER SYSTEM SET primary_conninfo = '"+conninfo+"'")
	pgtest.Exec(t, other, "SELECT pg_reload_conf()")
	waitRow(t, target, "eu-west-1-a streams from the new primary",
		"SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = 'eu-west-1-a' AND usename = 'replicator'")
	// Step 7: the old primary as a replica of the new one. pgnode's Demote of the stopped server
	// writes standby.signal and starts it (the page: touch standby.signal, systemctl start); then the
	// page's ALTER SYSTEM points it at the new primary as replicator, through its slot, and its old
	// slots are dropped.
	if _, err := old.Demote(ctx, target.Endpoint()); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, old, "ALTER SYSTEM SET primary_conninfo = '"+conninfo+"'")
	pgtest.Exec(t, old, "ALTER SYSTEM SET primary_slot_name = 'us_east_1_a'")
	pgtest.Exec(t, old, "SELECT pg_reload_conf()")
	pgtest.Exec(t, old, "SELECT pg_drop_replication_slot('us_west_2_a')")
	pgtest.Exec(t, old, "SELECT pg_drop_replication_slot('eu_west_1_a')")
	// Step 8: the new primary streams to both, and every proxy sees the new primary.
	waitRow(t, target, "both servers stream from the new primary as replicator, through their slots",
		"SELECT count(*) = 2 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE r.state = 'streaming' AND r.usename = 'replicator'")
	// Writes from every region land on the new primary.
	waitRoles("after the switchover", map[string]string{"us-east-1-a": "replica", "us-west-2-a": "primary", "eu-west-1-a": "replica"})
	for region, conn := range map[string]*pgx.Conn{"us-west-2": west, "us-east-1": east, "eu-west-1": eu} {
		if err := conn.QueryRow(ctx, "INSERT INTO orders (customer_id, item) VALUES (3, $1) RETURNING current_setting('cluster_name')", region).Scan(&server); err != nil || server != "us-west-2-a" {
			t.Errorf("a write through %s after the switchover: ran on %q, %v; want us-west-2-a", region, server, err)
		}
	}
	// The token still carries read-your-writes across regions: a write through eu-west-1, read from
	// us-east-1-a (now a replica) through us-east-1's proxy on a new connection.
	if err := eu.QueryRow(ctx, "INSERT INTO orders (customer_id, item) VALUES (4, 'after') RETURNING id").Scan(&id); err != nil {
		t.Fatal(err)
	}
	token = eu.PgConn().ParameterStatus("meridian.commit_lsn")
	// The proxy's auth-query connection to the old primary was ended by its shutdown: the first
	// lookup after the move runs again on a new connection, and the login works at once.
	reader, err := pgx.Connect(ctx, appConnString("us-east-1", "shop", shopPassword, "shop"))
	if err != nil {
		t.Fatalf("login through us-east-1 after the switchover: %v", err)
	}
	defer reader.Close(context.Background())
	if _, err := reader.Exec(ctx, "SET meridian.min_lsn = '"+token+"'"); err != nil {
		t.Fatal(err)
	}
	if err := reader.QueryRow(ctx, "SELECT item, current_setting('cluster_name') FROM orders WHERE id = $1", id).Scan(&item, &server); err != nil || item != "after" {
		t.Errorf("read with the token through us-east-1 after the switchover: %q from %s, %v", item, server, err)
	}
}

// waitRow waits until sql, run on node, returns true.
func waitRow(t *testing.T, node *pgnode.Node, what, sql string) {
	t.Helper()
	ctx := pgtest.Context(t, time.Minute)
	err := pgtest.WaitFor(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		conn, err := node.Connect(ctx, "")
		if err != nil {
			return false, err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		var ok bool
		err = conn.QueryRow(ctx, sql).Scan(&ok)
		return ok, err
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// showNodes runs SHOW NODES on an admin console connection and returns each node's role.
func showNodes(ctx context.Context, conn *pgconn.PgConn) (map[string]string, error) {
	res, err := conn.Exec(ctx, "SHOW NODES").ReadAll()
	if err != nil {
		return nil, err
	}
	if len(res) != 1 {
		return nil, fmt.Errorf("SHOW NODES: %d results", len(res))
	}
	col := map[string]int{}
	for i, f := range res[0].FieldDescriptions {
		col[f.Name] = i
	}
	name, okName := col["name"]
	role, okRole := col["role"]
	if !okName || !okRole {
		return nil, fmt.Errorf("SHOW NODES: no name or role column in %v", col)
	}
	roles := map[string]string{}
	for _, row := range res[0].Rows {
		roles[string(row[name])] = string(row[role])
	}
	return roles, nil
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
