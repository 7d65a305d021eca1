package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/loom-runtime/loom/sdk/provider"
)

// fill sets every exported field reachable from v (a pointer) to a
// non-zero value derived from seed, so a round trip that drops a field
// (today's or one added later to package provider) shows in a DeepEqual.
func fill(v any, seed int) {
	fillValue(reflect.ValueOf(v).Elem(), &seed)
}

var failureKindType = reflect.TypeOf(provider.FailureKind(0))

func fillValue(v reflect.Value, seed *int) {
	*seed++
	n := *seed
	switch {
	case v.Type() == failureKindType:
		kinds := []provider.FailureKind{provider.FailureTimeout, provider.FailureUnreachable, provider.FailureProtocol, provider.FailureCanceled}
		v.Set(reflect.ValueOf(kinds[n%len(kinds)]))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d-é", n))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(n) * 1000003)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte(fmt.Sprintf("{\"bytes\":%d}\x00\xff", n)))
			return
		}
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fillValue(s.Index(i), seed)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for range 2 {
			k := reflect.New(v.Type().Key()).Elem()
			fillValue(k, seed)
			e := reflect.New(v.Type().Elem()).Elem()
			fillValue(e, seed)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fillValue(p.Elem(), seed)
		v.Set(p)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillValue(v.Field(i), seed)
			}
		}
	default:
		panic("fill: unhandled kind " + v.Kind().String())
	}
}

// connect connects p's server half and a client half in one process with
// go-plugin's test helper and returns the client half and the server.
func connect(t *testing.T, p provider.Provider) (provider.Provider, *goplugin.GRPCClient, *goplugin.GRPCServer) {
	t.Helper()
	client, server := goplugin.TestPluginGRPCConn(t, false, versionedPlugins(p)[provider.ProtocolVersion])
	t.Cleanup(func() {
		server.Stop()
		_ = client.Close()
	})
	pp, err := Dispense(client)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pp.(*GRPCClient); !ok {
		t.Fatalf("Dispense returned %T, want *GRPCClient", pp)
	}
	return pp, client, server
}

// scripted is a provider whose answers are set by the test and which
// records what it received.
type scripted struct {
	mu  sync.Mutex
	got struct {
		cfg provider.Config
		req *provider.Request
	}
	info    provider.Info
	resp    *provider.Response
	models  []provider.Model
	start   *provider.StreamStart
	events  []provider.Event
	end     *provider.StreamEnd
	err     error
	entered chan struct{} // closed when a call starts, if non-nil

	// stream, when set, replaces the scripted stream.
	stream func(ctx context.Context, out provider.StreamSender) (*provider.StreamEnd, error)
	// block makes unary calls wait for ctx and report when it ended.
	block   bool
	ctxDone chan time.Time
}

func (s *scripted) enter() {
	if s.entered != nil {
		close(s.entered)
	}
}

func (s *scripted) Info(context.Context) (provider.Info, error) { return s.info, s.err }

func (s *scripted) Configure(_ context.Context, cfg provider.Config) error {
	s.mu.Lock()
	s.got.cfg = cfg
	s.mu.Unlock()
	return s.err
}

func (s *scripted) unary(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	s.mu.Lock()
	s.got.req = req
	s.mu.Unlock()
	s.enter()
	if s.block {
		<-ctx.Done()
		if s.ctxDone != nil {
			s.ctxDone <- time.Now()
		}
		return nil, ctx.Err()
	}
	return s.resp, s.err
}

func (s *scripted) ChatCompletions(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	return s.unary(ctx, req)
}

func (s *scripted) Embeddings(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	return s.unary(ctx, req)
}

func (s *scripted) ListModels(context.Context) ([]provider.Model, error) { return s.models, s.err }

func (s *scripted) ChatCompletionsStream(ctx context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error) {
	s.mu.Lock()
	s.got.req = req
	s.mu.Unlock()
	s.enter()
	if s.stream != nil {
		return s.stream(ctx, out)
	}
	if s.err != nil {
		return nil, s.err
	}
	if s.start != nil {
		if err := out.Start(*s.start); err != nil {
			return nil, err
		}
	}
	for _, ev := range s.events {
		if err := out.Send(ev); err != nil {
			return nil, err
		}
	}
	return s.end, nil
}

// sink is a StreamSender that records what it gets.
type sink struct {
	mu     sync.Mutex
	starts []provider.StreamStart
	events []provider.Event
	// onEvent, when set, is called after each event; its error is Send's.
	onEvent func(n int) error
}

func (k *sink) Start(s provider.StreamStart) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.starts = append(k.starts, s)
	return nil
}

func (k *sink) Send(ev provider.Event) error {
	k.mu.Lock()
	k.events = append(k.events, ev)
	n := len(k.events)
	k.mu.Unlock()
	if k.onEvent != nil {
		return k.onEvent(n)
	}
	return nil
}

// show renders v for a failure message, pointers followed.
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}
