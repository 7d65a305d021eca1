// Package apierror is the one place that writes errors to clients, in the
// OpenAI error format: {"error":{"message","type","code","param"}}.
package apierror

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error types used by OpenAI and therefore understood by its SDKs.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypeNotFound       = "not_found_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
)

// Error is an error meant for a client. Message is shown to the client; Err
// (optional) is the internal cause, logged but never sent.
type Error struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// New returns a client error.
func New(status int, typ, code, message string) *Error {
	return &Error{Status: status, Type: typ, Code: code, Message: message}
}

// Internal wraps an unexpected failure: the client sees a generic 500, the log sees err.
func Internal(err error) *Error {
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: "internal_error",
		Message: "Loom hit an internal error; the request id identifies it in Loom's log.", Err: err}
}

// UnknownURL is the 404 for a path no route serves.
func UnknownURL(r *http.Request) *Error {
	return New(http.StatusNotFound, TypeInvalidRequest, "unknown_url",
		fmt.Sprintf("Unknown request URL: %s %s.", r.Method, r.URL.Path))
}

// MethodNotAllowed is the 405 for a method a route does not serve.
func MethodNotAllowed(r *http.Request) *Error {
	return New(http.StatusMethodNotAllowed, TypeInvalidRequest, "method_not_allowed",
		fmt.Sprintf("Method %s is not allowed on %s.", r.Method, r.URL.Path))
}

// As returns err as an *Error, converting anything else with Internal.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Internal(err)
}

type envelope struct {
	Error body `json:"error"`
}

type body struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Body returns the JSON envelope for e.
func (e *Error) Body() []byte {
	b := body{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		b.Param = &e.Param
	}
	if e.Code != "" {
		b.Code = &e.Code
	}
	out, err := json.Marshal(envelope{Error: b})
	if err != nil { // cannot happen with string fields
		return []byte(`{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}`)
	}
	return out
}

// Write sends err to the client in the OpenAI error format.
func Write(w http.ResponseWriter, err error) *Error {
	e := As(err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	_, _ = w.Write(e.Body())
	return e
}
