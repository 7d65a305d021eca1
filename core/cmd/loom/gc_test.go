package main

import (
	"io"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/sdk/gctune"
)

// TestPaceGC: server.memory_target_bytes starts the pacing (GOGC at its
// maximum while far below the target) and stop restores the previous
// GOGC; GOGC or GOMEMLIMIT in the environment, or a 0 target, leave the
// collector alone.
func TestPaceGC(t *testing.T) {
	before := gctune.Current()
	log := hclog.NewNullLogger()
	cfg := &config.Config{Server: config.Server{MemoryTargetBytes: 1 << 40}}
	for _, c := range []struct {
		name   string
		env    map[string]string
		target int64
		paced  bool
	}{
		{"default", nil, 1 << 40, true},
		{"GOGC set", map[string]string{"GOGC": "150"}, 1 << 40, false},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "1GiB"}, 1 << 40, false},
		{"target 0", nil, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := &cli{stdout: io.Discard, stderr: io.Discard, env: func(k string) (string, bool) {
				v, ok := c.env[k]
				return v, ok
			}}
			cfg.Server.MemoryTargetBytes = c.target
			stop := cl.paceGC(cfg, log)
			want := before
			if c.paced {
				want = gcMaxPercent
			}
			if got := gctune.Current(); got != want {
				t.Errorf("while paced: GOGC = %d, want %d", got, want)
			}
			stop()
			if got := gctune.Current(); got != before {
				t.Errorf("after stop: GOGC = %d, want %d as before", got, before)
			}
		})
	}
}
