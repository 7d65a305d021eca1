package gctune

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	p := Policy{Target: 64 * mib, MinPercent: 25, MaxPercent: 400}
	for _, c := range []struct {
		name                             string
		live, stacks, globals, non, want uint64
	}{
		{"nothing live", 0, 0, 0, 0, 400},
		{"small heap: the maximum", 4 * mib, 1 * mib, 1 * mib, 6 * mib, 400},
		// 64 - (20+20) = 24 MiB of headroom over a 20+10+2 MiB base: 75 %.
		{"between: the target", 20 * mib, 10 * mib, 2 * mib, 20 * mib, 75},
		{"at the target: the minimum", 40 * mib, 20 * mib, 2 * mib, 24 * mib, 25},
		{"past the target: the minimum", 200 * mib, 50 * mib, 2 * mib, 60 * mib, 25},
		{"just under: clamped up to the minimum", 50 * mib, 20 * mib, 2 * mib, 13 * mib, 25},
	} {
		if got := p.Percent(c.live, c.stacks, c.globals, c.non); uint64(got) != c.want {
			t.Errorf("%s: Percent = %d, want %d", c.name, got, c.want)
		}
	}
}

// TestStartFollowsTheLiveHeap runs the tuner in this process: a live heap
// above the target brings GOGC down to the minimum after a collection,
// and freeing it brings GOGC back up.
func TestStartFollowsTheLiveHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	const mib = 1 << 20
	stop := Start(Policy{Target: 32 * mib, MinPercent: 30, MaxPercent: 300})
	defer stop()

	waitFor := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for Current() != want {
			if time.Now().After(deadline) {
				t.Fatalf("GOGC = %d, want %d", Current(), want)
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(300)

	held := make([][]byte, 64) // 64 MiB live, twice the target
	for i := range held {
		held[i] = make([]byte, mib)
		held[i][0] = 1
	}
	waitFor(30)
	runtime.KeepAlive(held)

	held = nil
	waitFor(300)

	stop()
	if got := Current(); got != 100 {
		t.Errorf("after stop, GOGC = %d, want the 100 in effect before Start", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("after stop, memory limit = %d, want none, as before Start", got)
	}
	held = make([][]byte, 64) // past the target again: stopped, nothing changes
	for i := range held {
		held[i] = make([]byte, mib)
	}
	runtime.GC()
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
	runtime.KeepAlive(held)
	if got := Current(); got != 100 {
		t.Errorf("stopped, GOGC = %d after collections, want 100", got)
	}
}

func TestLimit(t *testing.T) {
	const mib = 1 << 20
	p := Policy{Target: 64 * mib, MinPercent: 25, MaxPercent: 400}
	if got := p.Limit(12*mib, 4*mib, 1*mib, 1*mib); got != 64*mib {
		t.Errorf("small heap: Limit = %d MiB, want the 64 MiB target", got/mib)
	}
	// 300 held + 25 % of (200+50+2): 363 MiB.
	if got := p.Limit(300*mib, 200*mib, 50*mib, 2*mib); got != 363*mib {
		t.Errorf("past the target: Limit = %d MiB, want 363", got/mib)
	}
}

func TestSetByEnvironment(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, ""},
		{map[string]string{"GOGC": ""}, ""},
		{map[string]string{"GOGC": "150"}, "GOGC"},
		{map[string]string{"GOMEMLIMIT": "1GiB"}, "GOMEMLIMIT"},
	} {
		lookup := func(k string) (string, bool) { v, ok := c.env[k]; return v, ok }
		if got := SetByEnvironment(lookup); got != c.want {
			t.Errorf("%v: SetByEnvironment = %q, want %q", c.env, got, c.want)
		}
	}
}
