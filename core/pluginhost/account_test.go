package pluginhost

import (
	"errors"
	"fmt"
	"os/user"
	"reflect"
	"slices"
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
