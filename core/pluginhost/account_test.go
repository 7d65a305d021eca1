package pluginhost

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/loom-runtime/loom/core/config"
)

// fakeUsers is a user database of three users.
var fakeUsers = func() userDB {
	users := []*user.User{
		{Username: "root", Uid: "0", Gid: "0"},
		{Username: "nobody", Uid: "65534", Gid: "65534"},
		{Username: "loom-plugin", Uid: "998", Gid: "997"},
	}
	find := func(match func(*user.User) bool) (*user.User, error) {
		for _, u := range users {
			if match(u) {
				return u, nil
			}
		}
		return nil, errors.New("unknown user")
	}
	return userDB{
		byName: func(n string) (*user.User, error) { return find(func(u *user.User) bool { return u.Username == n }) },
		byID:   func(id string) (*user.User, error) { return find(func(u *user.User) bool { return u.Uid == id }) },
	}
}()

func TestAccounts(t *testing.T) {
	global := func(name, user string) config.Provider {
		return config.Provider{Name: name, User: user, UserKey: "plugin_user", UserOrigin: "loom.hcl"}
	}
	own := func(name, user string) config.Provider {
		return config.Provider{Name: name, User: user, UserKey: "provider." + name + ".user", UserOrigin: "loom.hcl"}
	}
	tests := []struct {
		name      string
		providers []config.Provider
		euid      int
		want      map[string]account
		problems  []config.Problem
	}{
		{
			name:      "no user: Loom's own",
			providers: []config.Provider{{Name: "openai"}},
			euid:      1000,
			want:      map[string]account{},
		},
		{
			name:      "by name and by uid",
			providers: []config.Provider{global("openai", "loom-plugin"), own("azure", "65534"), {Name: "echo"}},
			euid:      0,
			want: map[string]account{
				"openai": {name: "loom-plugin", uid: 998, gid: 997},
				"azure":  {name: "65534", uid: 65534, gid: 65534},
			},
		},
		{
			name:      "not root: one problem per setting",
			providers: []config.Provider{global("openai", "loom-plugin"), global("azure", "loom-plugin"), own("echo", "nobody")},
			euid:      1000,
			problems: []config.Problem{
				{File: "loom.hcl", Key: "plugin_user", Message: `only root can start plugins as user "loom-plugin", and Loom runs as uid 1000: run Loom as root, or leave the setting out to run plugins as Loom's own user`},
				{File: "loom.hcl", Key: "provider.echo.user", Message: `only root can start plugins as user "nobody", and Loom runs as uid 1000: run Loom as root, or leave the setting out to run plugins as Loom's own user`},
			},
		},
		{
			name: "unknown and root users",
			providers: []config.Provider{
				{Name: "openai", User: "lomo-plugin", UserKey: "plugin_user", UserOrigin: "LOOM_PLUGIN_USER (environment)"},
				own("azure", "root"), own("echo", "0"), own("other", "4242"),
			},
			euid: 0,
			problems: []config.Problem{
				{File: "LOOM_PLUGIN_USER (environment)", Key: "plugin_user", Message: "no user \"lomo-plugin\" on this machine: create it (`useradd --system --no-create-home lomo-plugin`) or name another"},
				{File: "loom.hcl", Key: "provider.azure.user", Message: `user "root" is root: name an unprivileged user, so that plugins cannot reach Loom's memory, environment and files`},
				{File: "loom.hcl", Key: "provider.echo.user", Message: `user "0" is root: name an unprivileged user, so that plugins cannot reach Loom's memory, environment and files`},
				{File: "loom.hcl", Key: "provider.other.user", Message: "no user \"4242\" on this machine: create it (`useradd --system --no-create-home 4242`) or name another"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := accounts(tt.providers, tt.euid, fakeUsers)
			if tt.problems != nil {
				var errs *config.Errors
				if !errors.As(err, &errs) {
					t.Fatalf("error %v (%T), want *config.Errors", err, err)
				}
				if !slices.Equal(errs.Problems, tt.problems) {
					t.Errorf("problems:\n got %q\nwant %q", errs.Problems, tt.problems)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			plain := map[string]account{}
			for name, a := range got {
				a.groups = nil // from the real group database: fakeUsers' users are in none
				plain[name] = *a
			}
			if !reflect.DeepEqual(plain, tt.want) {
				t.Errorf("accounts = %v, want %v", fmt.Sprint(plain), fmt.Sprint(tt.want))
			}
		})
	}
}

// TestMayExecute checks the mode-bit check made before a plugin starts as
// another user: every directory above the binary searchable, the binary
// executable, by owner, group or others.
func TestMayExecute(t *testing.T) {
	base, err := os.MkdirTemp("", "loom-mayexec-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "plugins")
	bin := filepath.Join(dir, "loom-provider-x")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	a := &account{name: "loom-plugin", uid: 12345, gid: 12345}
	tests := []struct {
		name              string
		baseMode, binMode os.FileMode
		binGroup          int // chown the binary to this group (root only), or -1
		groups            []uint32
		wantErr           string
	}{
		{"others may", 0o755, 0o755, -1, nil, ""},
		{"search only", 0o711, 0o711, -1, nil, ""},
		{"a directory above is closed", 0o700, 0o755, -1, nil, "cannot search " + base},
		{"the binary is not executable by others", 0o755, 0o750, -1, nil, "cannot execute " + bin},
		{"the binary's group is the user's", 0o755, 0o750, 12345, nil, ""},
		{"the binary's group is one of the user's groups", 0o755, 0o750, 777, []uint32{777}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.binGroup >= 0 {
				if os.Geteuid() != 0 {
					t.Skip("changing a file's group to another needs root")
				}
				if err := os.Chown(bin, -1, tt.binGroup); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.Chown(bin, -1, os.Getegid()) })
			}
			if err := os.Chmod(base, tt.baseMode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(bin, tt.binMode); err != nil {
				t.Fatal(err)
			}
			acct := *a
			acct.groups = tt.groups
			err := acct.mayExecute(bin)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("mayExecute: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("mayExecute: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
