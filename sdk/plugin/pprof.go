package plugin

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/hashicorp/go-hclog"
)

// PprofAddrEnv names the environment variable that, when set, makes a
// plugin serve Go's profiles (net/http/pprof under /debug/pprof/) on that
// loopback address, e.g. 127.0.0.1:0 for a free port. The address it
// listens on is logged at info level ("pprof listening"). Off by default;
// Loom passes the variable from its own environment to its plugins. For
// profiling on a developer's machine: the endpoint has no authentication,
// so only loopback addresses are accepted.
const PprofAddrEnv = "LOOM_PLUGIN_PPROF_ADDR"

// servePprof starts the profiling listener on addr. Errors are logged:
// profiling never stops a plugin from serving.
func servePprof(addr string, log hclog.Logger) {
	if _, err := startPprof(addr, log); err != nil {
		log.Error("pprof not started", "env", PprofAddrEnv, "error", err)
	}
}

// startPprof serves the profiles on addr until the returned server is
// closed (in a plugin: until the process ends).
func startPprof(addr string, log hclog.Logger) (*http.Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, errors.New("only a loopback address is allowed")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("pprof listening", "addr", ln.Addr().String())
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}
