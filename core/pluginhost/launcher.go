package pluginhost

import (
	"runtime"

	"github.com/hashicorp/go-hclog"
)

// launcher starts plugin processes from one goroutine locked to its OS
// thread for the host's lifetime. On Linux each plugin gets a parent-death
// signal, which the kernel sends when the thread that started it exits:
// keeping that thread alive means the signal fires exactly when loom itself
// dies, even by SIGKILL, so no plugin outlives it. The thread also carries
// no_new_privs, which every plugin inherits (see restrictLauncher).
type launcher struct {
	jobs chan func()
	done chan struct{}
}

func newLauncher(log hclog.Logger) *launcher {
	l := &launcher{jobs: make(chan func()), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the host
		defer close(l.done)
		restrictLauncher(log)
		for job := range l.jobs {
			job()
		}
	}()
	return l
}

// run executes fn on the launcher thread and waits for it.
func (l *launcher) run(fn func()) {
	finished := make(chan struct{})
	l.jobs <- func() { defer close(finished); fn() }
	<-finished
}

func (l *launcher) close() {
	select {
	case <-l.done:
	default:
		close(l.jobs)
		<-l.done
	}
}
