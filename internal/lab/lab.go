package lab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/meridiandb/meridian/internal/pgnode"
	"github.com/meridiandb/meridian/internal/proxy"
	"github.com/meridiandb/meridian/internal/scram"
	"github.com/meridiandb/meridian/internal/topology"
	"github.com/meridiandb/meridian/internal/wan"
)

// nodeSettings are the lab servers' settings on top of pgnode's replication-ready defaults.
var nodeSettings = map[string]string{
	"max_connections":             "200",
	"shared_buffers":              "64MB",
	"wal_retrieve_retry_interval": "1s", // a replica cut off by a partition reconnects soon after heal
	"log_min_messages":            "warning",
}

// Lab is a running lab. Its methods may be called concurrently.
type Lab struct {
	cfg     Config
	log     *slog.Logger
	regions []*region
	primary int // index of the primary's region

	mu          sync.Mutex // guards links, rtt, partitioned
	links       map[[2]int]*wan.Link
	rtt         map[[2]int]time.Duration // by unordered pair (low index first)
	partitioned map[int]time.Time        // region index → when it was cut off

	// adminPassword opens the proxies' admin console to AdminUser (in lab.json for `lab psql`).
	adminPassword string

	sampler *sampler
	started time.Time
}

// region is one emulated region.
type region struct {
	index int
	name  string
	addr  string
	node  *pgnode.Node
	proxy *proxy.Proxy
}

func (r *region) endpoint() pgnode.Endpoint { return pgnode.Endpoint{Host: r.addr, Port: PostgresPort} }

// Start builds the lab: it checks that every address and port is free, creates the primary and loads
// the sample data, starts the WAN links, clones and starts the replicas (streaming through the links),
// and starts one proxy per region. On error everything started so far is stopped.
func Start(ctx context.Context, cfg Config) (l *Lab, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	l = &Lab{cfg: cfg, log: cfg.Logger, links: map[[2]int]*wan.Link{}, rtt: map[[2]int]time.Duration{},
		partitioned: map[int]time.Time{}, started: time.Now(), adminPassword: rand.Text()}
	for i, name := range cfg.Regions {
		l.regions = append(l.regions, &region{index: i, name: name, addr: regionAddress(cfg.FirstAddress, i)})
		if name == cfg.Primary {
			l.primary = i
		}
	}
	for i := range l.regions {
		for j := i + 1; j < len(l.regions); j++ {
			l.rtt[[2]int{i, j}] = DefaultRTT(l.regions[i].name, l.regions[j].name)
		}
	}
	defer func() {
		if err != nil {
			l.Close()
			l = nil
		}
	}()
	step := func(name string, f func() error) error {
		start := time.Now()
		if err := f(); err != nil {
			return err
		}
		if cfg.Progress != nil {
			cfg.Progress(name, time.Since(start))
		}
		l.log.Info("lab step done", "step", name, "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	var bin pgnode.Binaries
	steps := []struct {
		name string
		f    func() error
	}{
		{"checked addresses and ports", l.checkPorts},
		{"found PostgreSQL", func() (err error) { bin, err = pgnode.FindBinaries(); return err }},
		{"created " + nodeName(cfg.Primary) + " (primary, " + cfg.Primary + ")", func() error { return l.createPrimary(ctx, bin) }},
		{"loaded the sample data set (database " + Database + ")", func() error { return l.loadSample(ctx) }},
		{"started the WAN links", l.startLinks},
		{"cloned and started the replicas", func() error { return l.createReplicas(ctx, bin) }},
		{"started the proxies", func() error { return l.startProxies(ctx) }},
	}
	for _, s := range steps {
		if err := step(s.name, s.f); err != nil {
			return l, err
		}
	}
	l.sampler = newSampler(l)
	return l, nil
}

// CheckPorts fails with a clear message when an address or port the lab described by cfg needs is
// taken. Start checks too; callers that start the lab in another process call it first for a quick
// answer.
func CheckPorts(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	l := &Lab{cfg: cfg}
	for i, name := range cfg.Regions {
		l.regions = append(l.regions, &region{index: i, name: name, addr: regionAddress(cfg.FirstAddress, i)})
	}
	return l.checkPorts()
}

// checkPorts fails with a clear message when an address or port the lab needs is taken.
func (l *Lab) checkPorts() error {
	for _, r := range l.regions {
		need := []struct {
			port int
			what string
		}{{PostgresPort, "PostgreSQL"}, {ProxyPort, "the proxy"}, {MetricsPort, "the proxy's metrics"}}
		for j := range l.regions {
			if j != r.index {
				need = append(need, struct {
					port int
					what string
				}{LinkPortBase + j, "the WAN link to " + l.regions[j].name})
			}
		}
		for _, n := range need {
			addr := net.JoinHostPort(r.addr, strconv.Itoa(n.port))
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("%s, for %s of region %s, is not free (%v); stop what uses it (ss -ltnp 'sport = :%d' shows it) "+
					"or give the lab other addresses, e.g. --first-address 127.0.%d.1", addr, n.what, r.name, errors.Unwrap(err), n.port,
					(int(netip.MustParseAddr(l.cfg.FirstAddress).As4()[2])+10)%200+10)
			}
			ln.Close()
		}
	}
	return nil
}

func (l *Lab) nodeConfig(r *region, bin pgnode.Binaries) pgnode.Config {
	return pgnode.Config{
		Name: nodeName(r.name), Dir: filepath.Join(l.cfg.Dir, r.name, "postgres"), Host: r.addr, Port: PostgresPort,
		Bin: bin, AllowCIDRs: []string{"127.0.0.0/8"}, Settings: nodeSettings,
		Logger: l.log.With("region", r.name),
	}
}

// newNode creates region r's server folder and node (not the server itself).
func (l *Lab) newNode(r *region, bin pgnode.Binaries) (*pgnode.Node, error) {
	if err := os.MkdirAll(filepath.Join(l.cfg.Dir, r.name), 0o755); err != nil {
		return nil, err
	}
	n, err := pgnode.New(l.nodeConfig(r, bin))
	if err != nil {
		return nil, err
	}
	r.node = n
	return n, nil
}

func (l *Lab) createPrimary(ctx context.Context, bin pgnode.Binaries) error {
	n, err := l.newNode(l.regions[l.primary], bin)
	if err != nil {
		return err
	}
	if err := n.Init(ctx); err != nil {
		return err
	}
	return n.Start(ctx)
}

// createReplicas clones every other region's server from the primary (directly: the copy is not what
// the lab shows), points it at its WAN link to the primary, and starts it; then waits until each
// streams and has replayed everything.
func (l *Lab) createReplicas(ctx context.Context, bin pgnode.Binaries) error {
	p := l.regions[l.primary]
	var wg sync.WaitGroup
	errs := make([]error, len(l.regions))
	for _, r := range l.regions {
		if r.index == l.primary {
			continue
		}
		n, err := l.newNode(r, bin)
		if err != nil {
			return err
		}
		wg.Go(func() {
			if errs[r.index] = n.Clone(ctx, p.node.Endpoint()); errs[r.index] != nil {
				return
			}
			if errs[r.index] = n.Repoint(ctx, l.linkEndpoint(r.index, l.primary)); errs[r.index] != nil {
				return
			}
			errs[r.index] = n.Start(ctx)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	target, err := l.primaryLSN(ctx)
	if err != nil {
		return err
	}
	for _, r := range l.regions {
		if r.index != l.primary {
			if err := waitReplayed(ctx, r.node, target, time.Minute); err != nil {
				return err
			}
		}
	}
	return nil
}

// linkEndpoint is where region from reaches region to's server: the WAN link's listener on from's
// address.
func (l *Lab) linkEndpoint(from, to int) pgnode.Endpoint {
	return pgnode.Endpoint{Host: l.regions[from].addr, Port: LinkPortBase + to}
}

func (l *Lab) startLinks() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, from := range l.regions {
		for _, to := range l.regions {
			if from == to {
				continue
			}
			lk, err := wan.New(wan.Config{
				Name:    from.name + ">" + to.name,
				Listen:  l.linkEndpoint(from.index, to.index).String(),
				Target:  to.endpoint().String(),
				Latency: wan.OneWay(l.rtt[pair(from.index, to.index)]),
				Logger:  l.log,
			})
			if err != nil {
				return fmt.Errorf("WAN link %s>%s: %w", from.name, to.name, err)
			}
			l.links[[2]int{from.index, to.index}] = lk
		}
	}
	return nil
}

func pair(a, b int) [2]int {
	if a > b {
		a, b = b, a
	}
	return [2]int{a, b}
}

// AdminUser is the user that may open the lab's proxies' admin console (database meridian), with the
// password the lab generates (State.AdminPassword; `meridian lab psql REGION -d meridian` uses it).
const AdminUser = "postgres"

// authFile is region r's proxy's auth file: AdminUser's SCRAM verifier.
func (l *Lab) authFile(r *region) string { return filepath.Join(l.cfg.Dir, r.name, "proxy-users.txt") }

// proxyConfig is region r's proxy: its own server directly, every other through r's WAN link to it.
func (l *Lab) proxyConfig(r *region) proxy.Config {
	cfg := proxy.DefaultConfig()
	cfg.Listen = net.JoinHostPort(r.addr, strconv.Itoa(ProxyPort))
	cfg.HTTPListen = net.JoinHostPort(r.addr, strconv.Itoa(MetricsPort))
	cfg.Region = r.name
	// The lab runs on one machine, on loopback addresses only, and its servers trust loopback too
	// (pgnode's default): its proxies trust loopback clients explicitly, so that `meridian lab psql`
	// and `lab load` need no password. The proxy's own default is SCRAM for everyone; never copy this
	// rule to a proxy that other processes or machines can reach.
	// The admin console never accepts trust (its trust rules are skipped), so AdminUser logs in to it
	// with SCRAM and the lab's generated password, whose verifier is in the region's auth file.
	cfg.Auth.Rules = []proxy.AuthRule{
		{Address: "127.0.0.0/8", Method: proxy.AuthTrust},
		{Address: "::1/128", Method: proxy.AuthTrust},
		{Database: []string{proxy.AdminDatabase}, User: []string{AdminUser}, Method: proxy.AuthSCRAM},
	}
	cfg.Auth.File = l.authFile(r)
	cfg.AdminUsers = []string{AdminUser}
	cfg.PoolSize = 20
	cfg.MaxClientConn = 2000
	// Notice a cut-off primary within about two seconds, so writes fail fast and clearly.
	cfg.ServerConnectTimeout = 2 * time.Second
	for _, o := range l.regions {
		addr := o.endpoint().String()
		if o != r {
			addr = l.linkEndpoint(r.index, o.index).String()
		}
		cfg.Nodes = append(cfg.Nodes, proxy.NodeConfig{Name: nodeName(o.name), Address: addr, Region: o.name})
	}
	return cfg
}

func (l *Lab) startProxies(ctx context.Context) error {
	v, err := scram.NewVerifier(l.adminPassword, scram.DefaultIterations)
	if err != nil {
		return err
	}
	for _, r := range l.regions {
		if err := proxy.SetAuthFileEntry(l.authFile(r), AdminUser, v.String()); err != nil {
			return fmt.Errorf("proxy of %s: %w", r.name, err)
		}
		cfg := l.proxyConfig(r)
		if b, err := yaml.Marshal(cfg); err == nil {
			// For reference and for running the same proxy by hand (meridian proxy --config).
			_ = os.WriteFile(filepath.Join(l.cfg.Dir, r.name, "proxy.yaml"), b, 0o644)
		}
		p, err := proxy.New(cfg, l.log.With("component", "proxy", "region", r.name))
		if err != nil {
			return err
		}
		if err := p.Start(); err != nil {
			return fmt.Errorf("proxy of %s: %w", r.name, err)
		}
		r.proxy = p
	}
	for _, r := range l.regions {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := r.proxy.WaitReady(wctx)
		cancel()
		if err != nil {
			return fmt.Errorf("proxy of %s did not become ready: %w", r.name, err)
		}
	}
	return nil
}

// Close stops everything in reverse order of starting: the status sampler, the proxies, the links,
// the replicas, the primary. It waits for the servers to exit. It is idempotent.
func (l *Lab) Close() {
	if l.sampler != nil {
		l.sampler.close()
	}
	for _, r := range l.regions {
		if r.proxy != nil {
			r.proxy.Close()
			r.proxy = nil
		}
	}
	l.mu.Lock()
	for k, lk := range l.links {
		lk.Close()
		delete(l.links, k)
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := len(l.regions) - 1; i >= 0; i-- {
		r := l.regions[i]
		if r.node == nil || !r.node.Running() {
			continue
		}
		if err := r.node.Stop(ctx, pgnode.Fast); err != nil {
			l.log.Warn("stop failed; killing", "node", r.node.Name(), "err", err)
			r.node.Kill()
		}
	}
}

// RemoveData removes what the lab wrote into its directory except the supervisor's log: each region's
// folder (the server's data and log, the proxy's configuration). Call it after Close.
func (l *Lab) RemoveData() error {
	var errs []error
	for _, r := range l.regions {
		if r.node != nil && r.node.Running() {
			errs = append(errs, fmt.Errorf("the server of %s is still running", r.name))
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(l.cfg.Dir, r.name)))
	}
	return errors.Join(errs...)
}

// SetRTT changes the round-trip time between two regions, in both directions, at once.
func (l *Lab) SetRTT(a, b string, rtt time.Duration) error {
	i, j := l.regionIndex(a), l.regionIndex(b)
	switch {
	case i < 0:
		return unknownRegion(a, l.regionNames())
	case j < 0:
		return unknownRegion(b, l.regionNames())
	case i == j:
		return fmt.Errorf("%s to itself has no WAN link: traffic inside a region is direct", a)
	case rtt < 0 || rtt > time.Minute:
		return fmt.Errorf("round-trip time %v is out of range (0 to 1m)", rtt)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rtt[pair(i, j)] = rtt
	l.links[[2]int{i, j}].SetLatency(wan.OneWay(rtt), 0)
	l.links[[2]int{j, i}].SetLatency(wan.OneWay(rtt), 0)
	l.log.Info("lab latency changed", "from", a, "to", b, "rtt", rtt)
	return nil
}

// Partition cuts a region off: nothing passes between it and any other region (connections hang, as
// in a real partition) until Heal.
func (l *Lab) Partition(name string) error {
	i := l.regionIndex(name)
	if i < 0 {
		return unknownRegion(name, l.regionNames())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.partitioned[i]; !ok {
		l.partitioned[i] = time.Now()
	}
	for k, lk := range l.links {
		if k[0] == i || k[1] == i {
			lk.Partition()
		}
	}
	l.log.Info("lab region partitioned", "region", name)
	return nil
}

// Heal reconnects a partitioned region, or every region when name is empty.
func (l *Lab) Heal(name string) error {
	i := -1
	if name != "" {
		if i = l.regionIndex(name); i < 0 {
			return unknownRegion(name, l.regionNames())
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < 0 {
		clear(l.partitioned)
	} else {
		delete(l.partitioned, i)
	}
	for k, lk := range l.links {
		_, cut0 := l.partitioned[k[0]]
		_, cut1 := l.partitioned[k[1]]
		if !cut0 && !cut1 {
			lk.Heal()
		}
	}
	l.log.Info("lab healed", "region", name)
	return nil
}

func (l *Lab) regionIndex(name string) int {
	for _, r := range l.regions {
		if r.name == name {
			return r.index
		}
	}
	return -1
}

func (l *Lab) regionNames() []string {
	names := make([]string, len(l.regions))
	for i, r := range l.regions {
		names[i] = r.name
	}
	return names
}

// unknownRegion is the error for a region name that is not the lab's: what was wrong, what is valid.
func unknownRegion(name string, regions []string) error {
	return fmt.Errorf("unknown region %q; the lab's regions are %s", name, strings.Join(regions, ", "))
}

// primaryLSN returns the primary's current WAL position.
func (l *Lab) primaryLSN(ctx context.Context) (topology.LSN, error) {
	st, err := l.regions[l.primary].node.Status(ctx)
	if err != nil {
		return 0, err
	}
	return st.Current, nil
}

// waitReplayed waits until node has replayed lsn.
func waitReplayed(ctx context.Context, n *pgnode.Node, lsn topology.LSN, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		st, err := n.Status(ctx)
		if err == nil && st.Replayed >= lsn {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not replay %s within %v (last status: %+v, err %v)", n.Name(), lsn, limit, st, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// connect opens a pgx connection to the lab database on a server.
func connect(ctx context.Context, addr string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, "postgres://postgres@"+addr+"/"+Database+"?sslmode=disable&connect_timeout=5")
}
