// Command loom is the Loom gateway and its administration CLI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // bad arguments or configuration
)

// env is how commands read the environment (injectable in tests).
type env func(string) (string, bool)

// cli carries what every command needs.
type cli struct {
	stdout, stderr io.Writer
	env            env
	// protection is what protectProcess did at the start: whether the
	// platform has it, and its error.
	protection struct {
		supported bool
		err       error
	}
}

// usageError marks an error caused by how the command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const usage = `Usage: loom <command> [flags]

Commands:
  serve                                 run the gateway
  migrate                               apply database migrations
  tenant create NAME                    create a tenant
  tenant list                           list tenants
  tenant disable NAME                   stop a tenant's keys from working
  tenant enable NAME                    let a disabled tenant's keys work again
  tenant delete NAME --shred            destroy the tenant's data keys: its traces become unreadable
                                        (pending until the next keys rotate-master: see keys status)
  key create --tenant NAME [--label L]  create an API key (printed once, on the last line)
  key list --tenant NAME                list a tenant's keys
  key revoke ID                         revoke a key
  keys rotate --tenant NAME             new data-key version for the tenant's new traces
  keys rotate-master [--rotate-data-keys]
                                        rewrap every data key: old key in LOOM_OLD_MASTER_KEY, new in
                                        LOOM_MASTER_KEY; the data keys stay the same unless
                                        --rotate-data-keys; completes pending shreds
  keys status                           master keys, and shreds still pending
  verify [--tenant NAME]                walk the traces' hash chains and report any break
  retention apply --older-than AGE      remove whole months of traces older than AGE (90d, 12mo, 2y)
  version                               print the version

Every command but version takes --config FILE (default: loom.hcl, or $LOOM_CONFIG).
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookup env) int {
	c := &cli{stdout: stdout, stderr: stderr, env: lookup}
	// First, before any secret is read: every command holds some (the
	// master key at least), and plugins may run as the same user.
	c.protection.supported, c.protection.err = protectProcess()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = c.serve(ctx, rest)
	case "migrate":
		err = c.migrate(ctx, rest)
	case "tenant":
		err = c.tenant(ctx, rest)
	case "key":
		err = c.key(ctx, rest)
	case "keys":
		err = c.keys(ctx, rest)
	case "verify":
		err = c.verify(ctx, rest)
	case "retention":
		err = c.retention(ctx, rest)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "loom %s\n", version)
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
	default:
		err = usagef("unknown command %q", cmd)
	}
	return c.exit(err)
}

func (c *cli) exit(err error) int {
	var ue usageError
	var ce configError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitUsage
	case errors.Is(err, errVerifyFailed):
		return exitError
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "loom: %s\n\n%s", ue.msg, usage)
		return exitUsage
	case errors.As(err, &ce):
		fmt.Fprintf(c.stderr, "loom: invalid configuration:\n%s\n", indent(ce.err.Error()))
		return exitUsage
	default:
		fmt.Fprintf(c.stderr, "loom: %v\n", err)
		return exitError
	}
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

// flags is a flag set that accepts flags before, between and after
// positional arguments (loom tenant create acme --config x.hcl).
type flags struct {
	*flag.FlagSet
	config *string
}

func (c *cli) newFlags(name string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	def := "loom.hcl"
	if v, ok := c.env("LOOM_CONFIG"); ok && v != "" {
		def = v
	}
	return &flags{FlagSet: fs, config: fs.String("config", def, "configuration file")}
}

// parse parses args and returns the positional arguments, requiring exactly n.
func (f *flags) parse(args []string, n int, names ...string) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			return nil, err
		}
		args = f.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != n {
		if n == 0 {
			return nil, usagef("%s takes no arguments, got %q", f.Name(), strings.Join(pos, " "))
		}
		return nil, usagef("%s needs %s", f.Name(), strings.Join(names, " "))
	}
	return pos, nil
}
