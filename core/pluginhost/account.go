package pluginhost

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/loom-runtime/loom/core/config"
)

// account is the user a plugin process runs as, when it is not Loom's own.
type account struct {
	name     string // as configured
	uid, gid uint32
	groups   []uint32
}

// userDB looks up users; os/user in production.
type userDB struct {
	byName func(string) (*user.User, error)
	byID   func(string) (*user.User, error)
}

var systemUsers = userDB{byName: user.Lookup, byID: user.LookupId}

// accounts resolves the user of every provider that names one, for Loom
// running as euid. Any problem is a configuration problem naming the
// setting that chose the user; all are returned at once (*config.Errors).
func accounts(providers []config.Provider, euid int, db userDB) (map[string]*account, error) {
	out := make(map[string]*account)
	var problems []config.Problem
	for _, p := range providers {
		if p.User == "" {
			continue
		}
		a, msg := resolve(p.User, euid, db)
		if msg != "" {
			problems = append(problems, config.Problem{File: p.UserOrigin, Key: p.UserKey, Message: msg})
			continue
		}
		out[p.Name] = a
	}
	if err := config.NewErrors(problems); err != nil {
		return nil, err
	}
	return out, nil
}

// resolve looks up name (a user name or a uid). It returns a message
// saying what is wrong instead when Loom cannot start processes as that
// user, the user does not exist, or it is root.
func resolve(name string, euid int, db userDB) (*account, string) {
	if !runAsSupported {
		return nil, "plugin users need a Unix system"
	}
	if euid != 0 {
		return nil, fmt.Sprintf("only root can start plugins as user %q, and Loom runs as uid %d: run Loom as root, or leave the setting out to run plugins as Loom's own user", name, euid)
	}
	u, err := db.byName(name)
	if err != nil {
		if _, numeric := strconv.ParseUint(name, 10, 32); numeric == nil {
			u, err = db.byID(name)
		}
	}
	if err != nil {
		return nil, fmt.Sprintf("no user %q on this machine: create it (`useradd --system --no-create-home %s`) or name another", name, name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Sprintf("user %q has uid %q and gid %q; want numbers", name, u.Uid, u.Gid)
	}
	if uid == 0 {
		return nil, fmt.Sprintf("user %q is root: name an unprivileged user, so that plugins cannot reach Loom's memory, environment and files", name)
	}
	a := &account{name: name, uid: uint32(uid), gid: uint32(gid)}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Sprintf("groups of user %q: %v", name, err)
	}
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Sprintf("user %q is in group %q; want a number", name, id)
		}
		a.groups = append(a.groups, uint32(g))
	}
	return a, ""
}

// mayExecute checks, by mode bits, that a can execute the plugin binary
// at path: search every directory above it (also its working directory)
// and execute the file. Access control lists are not read; a missing bit
// they would grant makes a false alarm, which the message says how to fix.
func (a *account) mayExecute(path string) error {
	if err := a.maySearch(filepath.Dir(path)); err != nil {
		return err
	}
	return a.may(path, 1)
}

// maySearch checks that a can search dir and every directory above it.
func (a *account) maySearch(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		if err := a.may(d, 1); err != nil {
			return err
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// may checks that a has the permission bit (4 read, 2 write, 1 execute or
// search) on path, which must be absolute.
func (a *account) may(path string, bit uint32) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	uid, gid, ok := owner(fi)
	if !ok {
		return nil
	}
	mode := uint32(fi.Mode().Perm())
	switch {
	case uid == a.uid:
		mode >>= 6
	case gid == a.gid || slices.Contains(a.groups, gid):
		mode >>= 3
	}
	if mode&bit != 0 {
		return nil
	}
	what := map[uint32]string{4: "read", 2: "write", 1: "execute"}[bit]
	if fi.IsDir() && bit == 1 {
		what = "search"
	}
	return fmt.Errorf("user %q (uid %d) cannot %s %s (mode %v, owner uid %d, group %d): give it access, or run the plugin as another user", a.name, a.uid, what, path, fi.Mode(), uid, gid)
}
