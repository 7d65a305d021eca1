package dashboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/store"
)

const (
	maxAdminBody = 64 << 10
	maxLabelLen  = 200
)

type tenantJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	CreatedAt stamp  `json:"created_at"`
}

func tenantOf(t store.Tenant) tenantJSON {
	return tenantJSON{ID: t.ID, Name: t.Name, Status: string(t.Status), CreatedAt: stamp(t.CreatedAt)}
}

// decodeBody reads a JSON object into v. An empty body is an empty object.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return apierror.New(http.StatusRequestEntityTooLarge, apierror.TypeInvalidRequest, "request_too_large",
			fmt.Sprintf("The request body is larger than %d bytes.", maxAdminBody))
	case err != nil:
		return apierror.New(http.StatusBadRequest, apierror.TypeInvalidRequest, "body_read_failed",
			"Loom could not read the request body: "+err.Error())
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if !json.Valid(body) {
		return apierror.New(http.StatusBadRequest, apierror.TypeInvalidRequest, "invalid_json",
			"The request body is not valid JSON.")
	}
	if b := bytes.TrimSpace(body); b[0] != '{' {
		return apierror.New(http.StatusBadRequest, apierror.TypeInvalidRequest, "invalid_type",
			"The request body must be a JSON object.")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &apierror.Error{Status: http.StatusBadRequest, Type: apierror.TypeInvalidRequest, Code: "invalid_type",
				Param: te.Field, Message: fmt.Sprintf("Invalid type for '%s': expected a %s.", te.Field, te.Type)}
		}
		return apierror.New(http.StatusBadRequest, apierror.TypeInvalidRequest, "invalid_json",
			"The request body is not valid JSON.")
	}
	return nil
}

// createTenant: POST /admin/tenants {"name"}.
func (a *API) createTenant(w http.ResponseWriter, r *http.Request, _ caller) error {
	var in struct {
		Name *string `json:"name"`
	}
	if err := decodeBody(w, r, &in); err != nil {
		return err
	}
	if in.Name == nil {
		return &apierror.Error{Status: http.StatusBadRequest, Type: apierror.TypeInvalidRequest,
			Code: "missing_required_parameter", Param: "name", Message: "Missing required parameter: 'name'."}
	}
	if err := auth.ValidateTenantName(*in.Name); err != nil {
		return invalid("name", "Invalid 'name': %v.", err)
	}
	t, err := a.o.Store.CreateTenant(r.Context(), *in.Name)
	if errors.Is(err, store.ErrConflict) {
		return &apierror.Error{Status: http.StatusConflict, Type: apierror.TypeInvalidRequest, Code: "tenant_exists",
			Param: "name", Message: fmt.Sprintf("A tenant called %q already exists.", *in.Name)}
	}
	if err != nil {
		return apierror.Internal(fmt.Errorf("create tenant: %w", err))
	}
	a.log.Info("admin: tenant created", "tenant", t.Name, "id", t.ID)
	return writeJSON(w, http.StatusCreated, tenantOf(t))
}

// listTenants: GET /admin/tenants.
func (a *API) listTenants(w http.ResponseWriter, r *http.Request, _ caller) error {
	ts, err := a.o.Store.ListTenants(r.Context())
	if err != nil {
		return apierror.Internal(fmt.Errorf("list tenants: %w", err))
	}
	out := struct {
		Data []tenantJSON `json:"data"`
	}{Data: make([]tenantJSON, 0, len(ts))}
	for _, t := range ts {
		out.Data = append(out.Data, tenantOf(t))
	}
	return writeJSON(w, http.StatusOK, out)
}

type createdKeyJSON struct {
	ID        string `json:"id"`
	Prefix    string `json:"prefix"`
	Label     string `json:"label"`
	CreatedAt stamp  `json:"created_at"`
	Key       string `json:"key"`
}

func errTenantNotFound(name string) error {
	return apierror.New(http.StatusNotFound, apierror.TypeInvalidRequest, "tenant_not_found",
		fmt.Sprintf("No tenant is called %q.", name))
}

// createKey: POST /admin/tenants/{name}/keys {"label"}. The key is in this
// answer only; Loom keeps its hash.
func (a *API) createKey(w http.ResponseWriter, r *http.Request, _ caller) error {
	name := mux.Vars(r)["name"]
	var in struct {
		Label string `json:"label"`
	}
	if err := decodeBody(w, r, &in); err != nil {
		return err
	}
	if len(in.Label) > maxLabelLen || !utf8.ValidString(in.Label) {
		return invalid("label", "Invalid 'label': at most %d bytes of UTF-8.", maxLabelLen)
	}
	t, err := a.o.Store.TenantByName(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return errTenantNotFound(name)
	}
	if err != nil {
		return apierror.Internal(fmt.Errorf("tenant by name: %w", err))
	}
	if t.Status == store.TenantDeleted {
		return apierror.New(http.StatusConflict, apierror.TypeInvalidRequest, "tenant_deleted",
			fmt.Sprintf("Tenant %q was deleted; it cannot get new keys.", name))
	}
	k, plain, err := auth.CreateKey(r.Context(), a.o.Store, t.ID, in.Label)
	if errors.Is(err, store.ErrNotFound) {
		return errTenantNotFound(name)
	}
	if err != nil {
		return apierror.Internal(err)
	}
	a.log.Info("admin: API key created", "tenant", t.Name, "key_id", k.ID, "key", k.Prefix)
	return writeJSON(w, http.StatusCreated, createdKeyJSON{ID: k.ID, Prefix: k.Prefix, Label: k.Label,
		CreatedAt: stamp(k.CreatedAt), Key: plain})
}

type revokedKeyJSON struct {
	ID        string `json:"id"`
	Prefix    string `json:"prefix"`
	RevokedAt *stamp `json:"revoked_at"`
}

// revokeKey: DELETE /admin/keys/{id}. Revoking twice keeps the first time.
func (a *API) revokeKey(w http.ResponseWriter, r *http.Request, _ caller) error {
	id := mux.Vars(r)["id"]
	k, err := a.o.Store.RevokeAPIKey(r.Context(), id, a.now())
	if errors.Is(err, store.ErrNotFound) {
		return apierror.New(http.StatusNotFound, apierror.TypeInvalidRequest, "key_not_found",
			"No API key has this id.")
	}
	if err != nil {
		return apierror.Internal(fmt.Errorf("revoke key: %w", err))
	}
	out := revokedKeyJSON{ID: k.ID, Prefix: k.Prefix}
	if k.RevokedAt != nil {
		s := stamp(*k.RevokedAt)
		out.RevokedAt = &s
	}
	a.log.Info("admin: API key revoked", "key_id", k.ID, "key", k.Prefix)
	return writeJSON(w, http.StatusOK, out)
}
