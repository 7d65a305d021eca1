// Package gctune paces a process's garbage collector from a memory target
// instead of a fixed GOGC. Loom and its plugin processes both use it.
//
// A fixed GOGC lets the heap grow in proportion to what is live. That is
// cheap when little is live (a gateway relaying short requests), and
// wasteful when much is (the same gateway holding thousands of open
// streams, each with its buffers and goroutine stacks). A memory limit
// (GOMEMLIMIT) caps the total instead, but once what is live approaches
// the limit the collector runs back to back: at 2,000 open streams a
// plugin with a 64 MiB limit spent 1.5 cores collecting.
//
// gctune does neither. After every collection it sets GOGC so that the
// next one starts when the process's Go memory (heap, goroutine stacks,
// runtime metadata) reaches Policy.Target, clamped to [MinPercent,
// MaxPercent], and a soft memory limit at the target that rises with what
// is live. Far below the target the collector runs rarely (MaxPercent);
// past it, the heap may still grow by MinPercent of what is live, so
// collecting never becomes continuous: its cost stays proportional to
// what the process allocates.
package gctune

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Policy is what Start keeps the collector to.
type Policy struct {
	// Target is the Go memory, in bytes, at which the next collection
	// should start. A soft target: when more than that is live, the
	// process grows past it by MinPercent.
	Target uint64
	// MinPercent and MaxPercent bound the GOGC that Start sets.
	MinPercent, MaxPercent int
}

// Limit is the soft memory limit that goes with Percent: p.Target, or,
// once the process holds more, what it holds plus MinPercent of what is
// live. GOGC takes effect at the next collection only, so a burst of
// allocation after a quiet period (when GOGC is at its maximum) could
// grow the heap far past the target; the limit bounds it meanwhile.
// inUse is all the Go memory the process holds (not returned to the OS),
// including fragmentation and the garbage of the last cycle: a limit
// below it would make the collector run back to back.
func (p Policy) Limit(inUse, live, scanStacks, globals uint64) uint64 {
	return max(p.Target, inUse+(live+scanStacks+globals)*uint64(p.MinPercent)/100)
}

// Percent is the GOGC that starts the next collection at p.Target, given
// the state after a collection: live heap bytes, the stack and global
// bytes the collector scans (with the live heap, what GOGC is a percentage
// of), and the Go memory that is not heap (stacks, runtime metadata).
func (p Policy) Percent(live, scanStacks, globals, nonHeap uint64) int {
	base := live + scanStacks + globals
	if base == 0 {
		return p.MaxPercent
	}
	used := live + nonHeap
	if used >= p.Target {
		return p.MinPercent
	}
	pct := (p.Target - used) * 100 / base
	return int(min(max(pct, uint64(p.MinPercent)), uint64(p.MaxPercent)))
}

// SetByEnvironment returns the name of the first of GOGC and GOMEMLIMIT
// that lookup finds set to a non-empty value, or "": an operator's own
// setting, which callers leave alone instead of calling Start.
func SetByEnvironment(lookup func(string) (string, bool)) string {
	for _, name := range []string{"GOGC", "GOMEMLIMIT"} {
		if v, ok := lookup(name); ok && v != "" {
			return name
		}
	}
	return ""
}

// Start sets GOGC and the soft memory limit from p now and after every
// garbage collection until stop is called; stop restores the GOGC and the
// limit in effect before Start. Start
// ignores the GOGC and GOMEMLIMIT environment variables; callers that
// honour them check before calling.
func Start(p Policy) (stop func()) {
	before, beforeLimit := Current(), debug.SetMemoryLimit(-1)
	t := &tuner{p: p, samples: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}}
	t.mu.Lock()
	t.tune()
	t.arm()
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.stopped {
			t.stopped = true
			debug.SetGCPercent(before)
			debug.SetMemoryLimit(beforeLimit)
		}
	}
}

// Current is the GOGC in effect.
func Current() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

type tuner struct {
	p Policy
	// mu orders a cleanup's tuning against stop, so that stop's restore
	// is the last word.
	mu      sync.Mutex
	stopped bool
	samples []metrics.Sample // under mu
}

// sentinel is garbage from the moment it is allocated; its cleanup runs
// once the collection that finds it has finished marking, which is when
// the live heap is known. It holds a pointer so that it is never packed
// into a shared tiny-allocator block that could outlive it.
type sentinel struct{ _ *byte }

func (t *tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *tuner) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.stopped {
			return
		}
		t.tune()
		t.arm()
	}, t)
}

func (t *tuner) tune() {
	metrics.Read(t.samples)
	v := func(i int) uint64 {
		if t.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return t.samples[i].Value.Uint64()
	}
	live, stacks, globals := v(0), v(1), v(2)
	total, released, objects, free, unused := v(3), v(4), v(5), v(6), v(7)
	heap := released + objects + free + unused
	var nonHeap uint64
	if total > heap {
		nonHeap = total - heap
	}
	var inUse uint64
	if total > released+free {
		inUse = total - released - free
	}
	debug.SetMemoryLimit(int64(min(t.p.Limit(inUse, live, stacks, globals), math.MaxInt64)))
	debug.SetGCPercent(t.p.Percent(live, stacks, globals, nonHeap))
}
