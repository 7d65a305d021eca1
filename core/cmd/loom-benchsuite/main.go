// Command loom-benchsuite is what `make bench` runs: it starts loom-mock,
// measures the mock directly, through loom-floor (a bare reverse proxy) and
// through Loom (SQLite store, and PostgreSQL when available), and prints one
// table with the added latency, saturation throughput and streaming
// time-to-first-chunk, plus PASS/MISS against the overhead targets. For
// each Loom it also measures (d) the RSS of Loom and its plugins with
// -mem-streams slow streams open at once, and with PostgreSQL (e) the
// trace recorder's sustained write rate into it (see traceStore).
//
// Every process it starts is stopped when it returns, fails or is
// interrupted.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/loom-runtime/loom/core/internal/testpg"
)

type options struct {
	bin         string
	duration    time.Duration
	warmup      time.Duration
	rate        float64
	concurrency int
	streamRate  float64
	chunks      int
	chunkGap    time.Duration
	postgres    bool
	memStreams  int
	memChunks   int
	memGap      time.Duration
	storeWindow time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory holding loom, loom-mock, loom-bench, loom-floor and plugins/")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration of each scenario")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warmup before each scenario")
	flag.Float64Var(&o.rate, "rate", 1000, "(a) non-stream open loop: requests per second")
	flag.IntVar(&o.concurrency, "concurrency", 50, "(b) closed loop: concurrent connections")
	flag.Float64Var(&o.streamRate, "stream-rate", 100, "(c) stream open loop: requests per second")
	flag.IntVar(&o.chunks, "chunks", 20, "(c) mock: chunks per streamed response")
	flag.DurationVar(&o.chunkGap, "chunk-gap", 5*time.Millisecond, "(c) mock: delay between streamed chunks")
	flag.BoolVar(&o.postgres, "postgres", true, "also measure Loom on PostgreSQL when initdb/pg_ctl are available")
	flag.IntVar(&o.memStreams, "mem-streams", 1000, "(d) memory: concurrent slow streams through Loom (0 skips)")
	flag.IntVar(&o.memChunks, "mem-chunks", 40, "(d) memory: chunks per slow stream")
	flag.DurationVar(&o.memGap, "mem-chunk-gap", 250*time.Millisecond, "(d) memory: delay between the chunks of a slow stream")
	flag.DurationVar(&o.storeWindow, "store-window", 5*time.Second, "(e) trace store: measured window of the PostgreSQL trace throughput run (0 skips)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	procs := &registry{}
	err := run(ctx, o, procs)
	stop()
	procs.stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loom-benchsuite:", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------- results

// dist and result mirror the parts of loom-bench's -json output we use.
type dist struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

type result struct {
	Requests   int64            `json:"requests"`
	Successes  int64            `json:"successes"`
	Errors     int64            `json:"errors"`
	ErrorKinds map[string]int64 `json:"errors_by_kind"`
	Throughput float64          `json:"throughput_rps"`
	Latency    dist             `json:"latency"`
	TTFC       *dist            `json:"ttfc"`
	ChunkGap   *dist            `json:"chunk_gap"`
}

type target struct {
	name           string
	a, b, c        result
	rssKB          int64 // Loom only: loom + plugin children, after the runs
	rssDetail      string
	mem            *memResult // Loom only: (d)
	skipped, notes string
}

// ---------------------------------------------------------------- the run

func run(ctx context.Context, o options, procs *registry) error {
	for _, b := range []string{"loom", "loom-mock", "loom-bench", "loom-floor"} {
		if _, err := os.Stat(filepath.Join(o.bin, b)); err != nil {
			return fmt.Errorf("%s/%s missing: run `make bench` (it builds everything first)", o.bin, b)
		}
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	o.bin = bin

	// One mock serves everything: -latency 0 for non-stream responses; the
	// chunk settings only shape streamed responses, i.e. scenario (c).
	mock, err := procs.start(ctx, "loom-mock", "", nil, filepath.Join(bin, "loom-mock"),
		"-listen", "127.0.0.1:0", "-print-addr", "-latency", "0",
		"-chunks", strconv.Itoa(o.chunks), "-chunk-gap", o.chunkGap.String(),
		"-slow-chunks", strconv.Itoa(o.memChunks), "-slow-chunk-gap", o.memGap.String())
	if err != nil {
		return err
	}
	mockURL := "http://" + mock.addr

	var targets []*target
	measure := func(name, baseURL, key string) (*target, error) {
		fmt.Fprintf(os.Stderr, "== %s (%s)\n", name, baseURL)
		t := &target{name: name}
		var err error
		if t.a, err = bench(ctx, o, baseURL, key, "(a) open", "-mode", "open", "-rate", ftoa(o.rate)); err != nil {
			return nil, err
		}
		if t.b, err = bench(ctx, o, baseURL, key, "(b) closed", "-mode", "closed", "-concurrency", strconv.Itoa(o.concurrency)); err != nil {
			return nil, err
		}
		if t.c, err = bench(ctx, o, baseURL, key, "(c) stream", "-mode", "open", "-rate", ftoa(o.streamRate), "-stream"); err != nil {
			return nil, err
		}
		targets = append(targets, t)
		return t, nil
	}

	if _, err := measure("direct", mockURL+"/v1", ""); err != nil {
		return err
	}

	floor, err := procs.start(ctx, "loom-floor", "", nil, filepath.Join(bin, "loom-floor"),
		"-listen", "127.0.0.1:0", "-upstream", mockURL, "-print-addr")
	if err != nil {
		return err
	}
	if _, err := measure("floor", "http://"+floor.addr+"/v1", ""); err != nil {
		return err
	}
	procs.stop(floor)

	work, err := os.MkdirTemp("", "loom-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	if err := measureLoom(ctx, o, procs, work, "loom-sqlite", "sqlite", filepath.Join(work, "sqlite", "loom.db"), mockURL, measure); err != nil {
		return err
	}

	var pgNote string
	var store *storeResult
	switch {
	case !o.postgres:
		pgNote = "loom-postgres: skipped (-postgres=false)"
	default:
		fmt.Fprintln(os.Stderr, "== starting PostgreSQL")
		dsn, stopPG, err := testpg.Start(ctx)
		switch {
		case errors.Is(err, testpg.ErrNotFound):
			pgNote = "loom-postgres: skipped (" + err.Error() + ")"
		case err != nil:
			return fmt.Errorf("PostgreSQL: %w (use -postgres=false to skip it)", err)
		default:
			err = measureLoom(ctx, o, procs, work, "loom-postgres", "postgres", dsn, mockURL, measure)
			if err == nil && o.storeWindow > 0 {
				fmt.Fprintln(os.Stderr, "== (e) trace store: recorder → PostgreSQL")
				var sr storeResult
				if sr, err = traceStore(ctx, dsn, time.Second, o.storeWindow); err == nil {
					store = &sr
					fmt.Fprintf(os.Stderr, "   %.0f traces/s (%d in %s)\n", sr.rate, sr.written, sr.window.Round(time.Millisecond))
				}
			}
			if stopErr := stopPG(); stopErr != nil {
				fmt.Fprintf(os.Stderr, "loom-benchsuite: stop PostgreSQL: %v\n", stopErr)
			}
			if err != nil {
				return err
			}
		}
	}

	report(os.Stdout, o, targets, pgNote, store)
	return nil
}

func measureLoom(ctx context.Context, o options, procs *registry, work, name, driver, dsn, mockURL string,
	measure func(name, baseURL, key string) (*target, error)) error {
	dir := filepath.Join(work, driver)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`plugins_dir = %q
store {
  driver = %q
  dsn    = %q
}
provider "openai" {
  settings { base_url = "%s/v1" }
  env { api_key = "OPENAI_API_KEY" }
}
tenant "default" {
  route {
    match    = "*"
    provider = "openai"
  }
}
`, filepath.Join(o.bin, "plugins"), driver, dsn, mockURL)
	cfgPath := filepath.Join(dir, "loom.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	var mk [32]byte
	if _, err := rand.Read(mk[:]); err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	env := []string{
		"LOOM_MASTER_KEY=" + base64.StdEncoding.EncodeToString(mk[:]),
		"LOOM_PLUGINS_DIR=" + filepath.Join(o.bin, "plugins"),
		"LOOM_LISTEN=" + addr,
		"OPENAI_API_KEY=sk-bench",
		"LOOM_STORE_DRIVER=" + driver,
		"LOOM_STORE_DSN=" + dsn,
	}
	loomBin := filepath.Join(o.bin, "loom")
	if _, err := procs.output(ctx, dir, env, loomBin, "tenant", "create", "bench", "--config", cfgPath); err != nil {
		return err
	}
	out, err := procs.output(ctx, dir, env, loomBin, "key", "create", "--tenant", "bench", "--config", cfgPath)
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	key := strings.TrimSpace(lines[len(lines)-1])
	if key == "" {
		return errors.New("loom key create printed no key")
	}

	loom, err := procs.start(ctx, "loom serve ("+driver+")", dir, env, loomBin, "serve", "--config", cfgPath)
	if err != nil {
		return err
	}
	if err := waitHealthy(ctx, "http://"+addr+"/healthz", loom, 30*time.Second); err != nil {
		procs.stop(loom)
		return err
	}
	t, err := measure(name, "http://"+addr+"/v1", key)
	if err == nil {
		t.rssKB, t.rssDetail = treeRSS(loom.cmd.Process.Pid)
		if o.memStreams > 0 {
			t.mem, err = memory(ctx, o, "http://"+addr+"/v1", key, loom.cmd.Process.Pid)
		}
	}
	procs.stop(loom)
	return err
}

// bench runs one loom-bench scenario and decodes its JSON.
func bench(ctx context.Context, o options, baseURL, key, label string, args ...string) (result, error) {
	full := append([]string{"-url", baseURL, "-json", "-duration", o.duration.String(), "-warmup", o.warmup.String()}, args...)
	if key != "" {
		full = append(full, "-key", key)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(o.bin, "loom-bench"), full...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return result{}, ctx.Err()
	}
	var r result
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return result{}, fmt.Errorf("loom-bench %s: %v (%v)\n%s", label, err, runErr, tail(stderr.String(), 2000))
	}
	if r.Successes == 0 {
		return result{}, fmt.Errorf("loom-bench %s against %s: no successful request (%d errors)\n%s", label, baseURL, r.Errors, stdout.String())
	}
	fmt.Fprintf(os.Stderr, "   %-10s %7.0f req/s  p50 %.3f ms  p99 %.3f ms  errors %d", label, r.Throughput, r.Latency.P50, r.Latency.P99, r.Errors)
	if r.Errors > 0 {
		fmt.Fprintf(os.Stderr, " %v", r.ErrorKinds)
	}
	fmt.Fprintln(os.Stderr)
	return r, nil
}

// ---------------------------------------------------------------- report

func report(w io.Writer, o options, ts []*target, pgNote string, store *storeResult) {
	direct, floor := ts[0], ts[1]
	fmt.Fprintf(w, "\nLoom benchmark — %s\n", time.Now().UTC().Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(w, "machine: %s, %d cores (GOMAXPROCS %d), %s %s/%s\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), goVersion(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "scenarios: (a) non-stream open loop %s req/s; (b) closed loop %d connections; (c) stream open loop %s req/s, mock %d chunks %s apart; each %s after %s warmup; all processes on 127.0.0.1, sharing the cores\n\n",
		ftoa(o.rate), o.concurrency, ftoa(o.streamRate), o.chunks, o.chunkGap, o.duration, o.warmup)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\t(a) p50\tp90\tp99\tp99.9\t+p50\t+p90\t+p99\t+p99.9\terr\t(b) req/s\tvs direct\tvs floor\terr\t(c) ttfc p50\tttfc p99\t+ttfc p50\t+ttfc p99\tgap mean\terr\t")
	for _, t := range ts {
		a, da := t.a.Latency, direct.a.Latency
		ttfc, dttfc := orZero(t.c.TTFC), orZero(direct.c.TTFC)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.0f\t%.0f%%\t%.0f%%\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t\n",
			t.name, ms(a.P50), ms(a.P90), ms(a.P99), ms(a.P999),
			ms(a.P50-da.P50), ms(a.P90-da.P90), ms(a.P99-da.P99), ms(a.P999-da.P999), t.a.Errors,
			t.b.Throughput, pct(t.b.Throughput, direct.b.Throughput), pct(t.b.Throughput, floor.b.Throughput), t.b.Errors,
			ms(ttfc.P50), ms(ttfc.P99), ms(ttfc.P50-dttfc.P50), ms(ttfc.P99-dttfc.P99), ms(orZero(t.c.ChunkGap).Mean), t.c.Errors)
	}
	tw.Flush()
	fmt.Fprintln(w, "(latencies in ms; + = added vs direct; err = failed requests)")
	if pgNote != "" {
		fmt.Fprintln(w, pgNote)
	}

	fa := added(floor.a.Latency, direct.a.Latency)
	for _, t := range ts[2:] {
		la := added(t.a.Latency, direct.a.Latency)
		lttfc := orZero(t.c.TTFC).P50 - orZero(direct.c.TTFC).P50
		fmt.Fprintf(w, "\ntargets for %s:\n", t.name)
		check(w, la.P50 <= 1.0, "added p50 ≤ 1.0 ms", fmt.Sprintf("%.3f ms", la.P50))
		check(w, la.P50 <= 2.5*fa.P50, "added p50 ≤ 2.5× floor's", fmt.Sprintf("%.3f ms vs 2.5 × %.3f = %.3f ms", la.P50, fa.P50, 2.5*fa.P50))
		check(w, la.P99 <= 2.5*fa.P99, "added p99 ≤ 2.5× floor's", fmt.Sprintf("%.3f ms vs 2.5 × %.3f = %.3f ms", la.P99, fa.P99, 2.5*fa.P99))
		check(w, t.b.Throughput >= 0.5*floor.b.Throughput, "saturation ≥ 50% of floor's", fmt.Sprintf("%.0f vs %.0f req/s (%.1f%%)", t.b.Throughput, floor.b.Throughput, pct(t.b.Throughput, floor.b.Throughput)))
		check(w, lttfc <= 1.0, "stream added TTFC p50 ≤ 1.0 ms", fmt.Sprintf("%.3f ms", lttfc))
		fmt.Fprintf(w, "  RSS after the runs: %.1f MiB (%s)\n", float64(t.rssKB)/1024, t.rssDetail)
		if m := t.mem; m != nil {
			peakMB := float64(m.peakKB) * 1024 / 1e6
			what := fmt.Sprintf("memory ≤ 150 MB, %d slow streams", m.streams)
			ok := peakMB <= 150 && m.res.Errors == 0 && m.res.Successes == int64(m.streams)
			if m.streams != 1000 {
				// The target is stated for 1,000 streams; fewer or more is
				// a measurement, not a verdict.
				what = fmt.Sprintf("memory, %d slow streams (target at 1,000)", m.streams)
				ok = m.res.Errors == 0 && m.res.Successes == int64(m.streams)
			}
			check(w, ok, what,
				fmt.Sprintf("peak %.1f MB = %.1f MiB (%s); before %.1f MiB: +%.1f KiB/stream; %d streams ok, %d failed, ttfc p50 %s ms",
					peakMB, float64(m.peakKB)/1024, m.peakDetail, float64(m.beforeKB)/1024,
					float64(m.peakKB-m.beforeKB)/float64(m.streams), m.res.Successes, m.res.Errors, ms(orZero(m.res.TTFC).P50)))
		}
	}
	if store != nil {
		fmt.Fprintf(w, "\ntrace store (PostgreSQL; %s):\n", store.producer)
		check(w, store.rate >= 10000 && store.failed == 0, "≥ 10,000 traces/s sustained", fmt.Sprintf("%.0f traces/s (%d traces in %s; %d spooled, %d failed batches)",
			store.rate, store.written, store.window.Round(time.Millisecond), store.spooled, store.failed))
	}
}

func check(w io.Writer, ok bool, what, detail string) {
	v := "MISS"
	if ok {
		v = "PASS"
	}
	fmt.Fprintf(w, "  %s  %-32s %s\n", v, what, detail)
}

func added(x, base dist) dist {
	return dist{P50: x.P50 - base.P50, P90: x.P90 - base.P90, P99: x.P99 - base.P99, P999: x.P999 - base.P999}
}

func orZero(d *dist) dist {
	if d == nil {
		return dist{}
	}
	return *d
}

func ms(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

func pct(x, base float64) float64 {
	if base == 0 {
		return 0
	}
	return 100 * x / base
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// goVersion is the toolchain's version (`go run` builds with it anyway).
func goVersion() string {
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		if v := strings.TrimSpace(string(out)); v != "" {
			return v
		}
	}
	return runtime.Version()
}

// treeRSS sums VmRSS of pid and its descendants (Loom's plugin processes).
func treeRSS(pid int) (int64, string) {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		rest := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(rest) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(rest[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var total int64
	var parts []string
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		queue = append(queue, children[p]...)
		kb := vmRSS(p)
		total += kb
		parts = append(parts, fmt.Sprintf("%s %.1f MiB", procName(p), float64(kb)/1024))
	}
	return total, strings.Join(parts, " + ")
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

func procName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return strconv.Itoa(pid)
	}
	arg0, _, _ := bytes.Cut(b, []byte{0})
	return filepath.Base(string(arg0))
}

// ---------------------------------------------------------------- processes

type proc struct {
	name   string
	cmd    *exec.Cmd
	addr   string
	stderr *tailBuffer
	done   chan struct{}
	err    error
}

// registry tracks every long-running process so all of them are stopped on
// return, error or interrupt. Each runs in its own process group (so its
// children, e.g. Loom's plugins, go too) and dies with us (Pdeathsig) if we
// are killed outright.
type registry struct {
	mu    sync.Mutex
	procs []*proc
}

func (r *registry) start(ctx context.Context, name, dir string, env []string, bin string, args ...string) (*proc, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, stderr: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := r.launch(p); err != nil {
		return nil, err
	}
	return p, nil
}

// launch starts p; when it was given -print-addr, it waits for its
// "listening on ADDR" line.
func (r *registry) launch(p *proc) error {
	var addrc chan string
	wantAddr := slices.Contains(p.cmd.Args, "-print-addr")
	if wantAddr {
		pr, pw, err := os.Pipe()
		if err != nil {
			return err
		}
		p.cmd.Stdout = pw
		addrc = make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(pr)
			sent := false
			for sc.Scan() {
				if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok && !sent {
					addrc <- strings.TrimSpace(a)
					sent = true
				}
			}
			pr.Close()
		}()
		defer pw.Close()
	} else {
		p.cmd.Stdout = io.Discard
	}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	if !wantAddr {
		return nil
	}
	select {
	case p.addr = <-addrc:
		return nil
	case <-p.done:
		return fmt.Errorf("%s exited before listening: %v\n%s", p.name, p.err, p.stderr.String())
	case <-time.After(10 * time.Second):
		r.stop(p)
		return fmt.Errorf("%s did not print its address within 10s\n%s", p.name, p.stderr.String())
	}
}

// stop sends SIGTERM to the process group, waits up to 5s, then SIGKILLs it.
func (r *registry) stop(p *proc) {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Whatever is left of the group (e.g. a plugin that outlived its parent).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	r.mu.Lock()
	r.procs = slices.DeleteFunc(r.procs, func(q *proc) bool { return q == p })
	r.mu.Unlock()
}

func (r *registry) stopAll() {
	r.mu.Lock()
	ps := slices.Clone(r.procs)
	r.mu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		r.stop(ps[i])
	}
}

// output runs a short command to completion.
func (r *registry) output(ctx context.Context, dir string, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func waitHealthy(ctx context.Context, url string, p *proc, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited early: %v\n%s", p.name, p.err, p.stderr.String())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy after %s\n%s", p.name, limit, p.stderr.String())
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ---------------------------------------------------------------- memory

// memResult is scenario (d): many long-lived streams at once.
type memResult struct {
	streams          int
	beforeKB, peakKB int64 // loom + plugins, just before and at the peak
	peakDetail       string
	res              result
}

// memory opens o.memStreams concurrent slow streams through Loom (the
// mock's SlowModel: o.memChunks chunks o.memGap apart) and samples the RSS
// of Loom and its plugins while they run. Every connection opens one
// stream: the closed loop's window is shorter than a stream, so no
// connection starts a second one.
func memory(ctx context.Context, o options, baseURL, key string, pid int) (*memResult, error) {
	m := &memResult{streams: o.memStreams}
	m.beforeKB, _ = treeRSS(pid)
	streamTime := time.Duration(max(o.memChunks-1, 0)) * o.memGap
	fmt.Fprintf(os.Stderr, "   (d) memory: %d streams of %s\n", o.memStreams, streamTime)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if kb, detail := treeRSS(pid); kb > m.peakKB {
				m.peakKB, m.peakDetail = kb, detail
			}
		}
	}()
	var err error
	mo := o
	mo.warmup, mo.duration = 0, max(streamTime/2, 100*time.Millisecond)
	m.res, err = bench(ctx, mo, baseURL, key, "(d) memory", "-mode", "closed", "-concurrency", strconv.Itoa(o.memStreams),
		"-stream", "-model", "mock-slow", "-timeout", (streamTime + time.Minute).String())
	close(stop)
	<-sampled
	return m, err
}
