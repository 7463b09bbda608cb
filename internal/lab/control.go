package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// StateFile is the file, in the lab directory, that tells other processes how to reach the lab.
const StateFile = "lab.json"

// State is the content of lab.json. It is written when the lab is ready and removed by Close.
type State struct {
	PID     int           `json:"pid"`     // the supervisor
	Control string        `json:"control"` // loopback address of the control endpoint
	Token   string        `json:"token"`   // required by the control endpoint (the file is 0600)
	Dir     string        `json:"dir"`
	Started time.Time     `json:"started"`
	Primary string        `json:"primary_region"`
	Regions []RegionState `json:"regions"`
	// AdminPassword opens the proxies' admin console (database meridian) to AdminUser.
	AdminPassword string `json:"admin_password"`
}

// RegionState is where a region's pieces listen.
type RegionState struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Postgres string `json:"postgres"`
	Proxy    string `json:"proxy"`
	Metrics  string `json:"metrics"`
	DataDir  string `json:"data_dir"`
}

// ErrNoLab means the directory holds no lab.
var ErrNoLab = errors.New("no lab is running there")

// ReadState reads dir/lab.json.
func ReadState(dir string) (State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, fmt.Errorf("%s: %w (start one with: meridian lab up)", dir, ErrNoLab)
	}
	if err != nil {
		return State{}, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return s, nil
}

// Region returns the named region's state.
func (s State) Region(name string) (RegionState, error) {
	for _, r := range s.Regions {
		if r.Name == name {
			return r, nil
		}
	}
	names := make([]string, len(s.Regions))
	for i, r := range s.Regions {
		names[i] = r.Name
	}
	return RegionState{}, unknownRegion(name, names)
}

// Serve starts the control endpoint on a loopback port and writes lab.json. down is called (once, in
// its own goroutine) when a client asks the lab to stop. The returned function stops serving and
// removes lab.json.
func (l *Lab) Serve(down func()) (stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("control endpoint: %w", err)
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	st := State{PID: os.Getpid(), Control: ln.Addr().String(), Token: hex.EncodeToString(tok), Dir: l.cfg.Dir,
		Started: l.started, Primary: l.regions[l.primary].name, AdminPassword: l.adminPassword}
	for _, r := range l.regions {
		st.Regions = append(st.Regions, RegionState{Name: r.name, Address: r.addr,
			Postgres: r.endpoint().String(), Proxy: net.JoinHostPort(r.addr, strconv.Itoa(ProxyPort)),
			Metrics: net.JoinHostPort(r.addr, strconv.Itoa(MetricsPort)), DataDir: r.node.DataDir()})
	}
	srv := &http.Server{Handler: l.controlHandler(st.Token, down), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b, _ := json.MarshalIndent(st, "", "  ")
	path := filepath.Join(l.cfg.Dir, StateFile)
	if err := writeFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		srv.Close()
		return nil, err
	}
	return func() {
		_ = os.Remove(path)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// controlRequest is the body of the control endpoint's POST requests.
type controlRequest struct {
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	RTT    string `json:"rtt,omitempty"`
	Region string `json:"region,omitempty"`
}

func (l *Lab) controlHandler(token string, down func()) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, l.Status(r.Context()))
	})
	post := func(path string, f func(controlRequest) error) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			var req controlRequest
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad request: " + err.Error()})
				return
			}
			if err := f(req); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"ok": "true"})
		})
	}
	post("/latency", func(req controlRequest) error {
		d, err := time.ParseDuration(req.RTT)
		if err != nil {
			return fmt.Errorf("round-trip time %q: use a duration such as 90ms", req.RTT)
		}
		return l.SetRTT(req.From, req.To, d)
	})
	post("/partition", func(req controlRequest) error { return l.Partition(req.Region) })
	post("/heal", func(req controlRequest) error { return l.Heal(req.Region) })
	post("/down", func(controlRequest) error {
		go down()
		return nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong token (read it from lab.json)"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Client drives a running lab through its control endpoint.
type Client struct {
	State State
	http  *http.Client
}

// Dial reads dir/lab.json and checks that the supervisor answers.
func Dial(ctx context.Context, dir string) (*Client, error) {
	st, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	c := &Client{State: st, http: newHTTPClient()}
	if _, err := c.Status(ctx); err != nil {
		return nil, fmt.Errorf("the lab in %s does not answer (its supervisor, pid %d, may have died; "+
			"`meridian lab down --dir %s` cleans up): %w", dir, st.PID, dir, err)
	}
	return c, nil
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.State.Control+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.State.Token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return errors.New(e.Error)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func newHTTPClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

// Status returns the lab's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/status", nil, &s)
	return s, err
}

// SetRTT changes the round-trip time between two regions.
func (c *Client) SetRTT(ctx context.Context, from, to string, rtt time.Duration) error {
	return c.do(ctx, http.MethodPost, "/latency", controlRequest{From: from, To: to, RTT: rtt.String()}, nil)
}

// Partition cuts a region off.
func (c *Client) Partition(ctx context.Context, region string) error {
	return c.do(ctx, http.MethodPost, "/partition", controlRequest{Region: region}, nil)
}

// Heal reconnects a region, or all when region is empty.
func (c *Client) Heal(ctx context.Context, region string) error {
	return c.do(ctx, http.MethodPost, "/heal", controlRequest{Region: region}, nil)
}

// Down asks the supervisor to stop the lab and waits until it has exited.
func (c *Client) Down(ctx context.Context) error {
	if err := c.do(ctx, http.MethodPost, "/down", nil, nil); err != nil {
		return err
	}
	return waitExit(ctx, c.State.PID, time.Minute)
}
