package settings

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

func parse(t *testing.T, settings string, secrets map[string]string, known ...string) *Values {
	t.Helper()
	v, err := Parse(provider.Config{Settings: []byte(settings), Secrets: secrets}, known...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestGetters(t *testing.T) {
	v := parse(t, `{"s":"x","d":"1m30s","n":12,"ns":"x","m":{"a":"1"},"u":"http://h:1/p/"}`,
		map[string]string{"n2": "34", "s": "from-env"}, "s", "d", "n", "n2", "ns", "m", "u", "absent")
	if got := v.String("s", ""); got != "from-env" {
		t.Errorf("String = %q", got)
	}
	if got := v.String("absent", "def"); got != "def" {
		t.Errorf("default = %q", got)
	}
	if got := v.Duration("d", 0); got != 90*time.Second {
		t.Errorf("Duration = %v", got)
	}
	if got := v.PositiveInt("n", 0); got != 12 {
		t.Errorf("PositiveInt = %d", got)
	}
	if got := v.PositiveInt("n2", 0); got != 34 {
		t.Errorf("PositiveInt from a secret = %d", got)
	}
	if got := v.StringMap("m"); !reflect.DeepEqual(got, map[string]string{"a": "1"}) {
		t.Errorf("StringMap = %v", got)
	}
	if got := v.URL("u", "", ""); got != "http://h:1/p" {
		t.Errorf("URL = %q", got)
	}
	if v.Err() != nil {
		t.Errorf("Err = %v", v.Err())
	}
	if got := v.PositiveInt("ns", 7); got != 7 || v.Err() == nil || !strings.Contains(v.Err().Error(), `setting "ns": expected a positive integer, got string "x"`) {
		t.Errorf("bad int: %d %v", got, v.Err())
	}
}

func TestStringMapForms(t *testing.T) {
	want := map[string]string{"a": "1", "b": "2"}
	for _, settings := range []string{
		`{"m":{"a":"1","b":"2"}}`,
		`{"m":[{"a":"1","b":"2"}]}`,
		`{"m":[{"a":"1"},{"b":"2"}]}`,
		`{"m":[{"a":"1"},{"a":"1","b":"2"}]}`,
		`{"m":"{\"a\":\"1\",\"b\":\"2\"}"}`,
	} {
		v := parse(t, settings, nil, "m")
		if got := v.StringMap("m"); !reflect.DeepEqual(got, want) || v.Err() != nil {
			t.Errorf("%s: %v %v", settings, got, v.Err())
		}
	}
	for settings, problem := range map[string]string{
		`{"m":5}`:                     `setting "m": expected a block of name = "value" pairs, got number 5`,
		`{"m":"not json"}`:            `setting "m": expected a block of name = "value" pairs or a JSON object`,
		`{"m":[1]}`:                   `got a list holding number 1`,
		`{"m":{"a":""}}`:              `setting "m.a": expected a non-empty string, got string ""`,
		`{"m":{"a":{"b":"c"}}}`:       `setting "m.a": expected a non-empty string, got a block`,
		`{"m":[{"a":"1"},{"a":"2"}]}`: `setting "m.a": given twice`,
	} {
		v := parse(t, settings, nil, "m")
		v.StringMap("m")
		if v.Err() == nil || !strings.Contains(v.Err().Error(), problem) {
			t.Errorf("%s: %v, want %q", settings, v.Err(), problem)
		}
	}
}

func TestUnknown(t *testing.T) {
	v := parse(t, `{"api_kye":"x","zzz":1}`, map[string]string{"qqq": "SECRET"}, "api_key", "base_url")
	err := v.Err()
	for _, want := range []string{`"api_kye": unknown setting (did you mean "api_key"?)`, `"qqq": unknown setting (known: api_key, base_url)`, `"zzz": unknown setting`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Err = %v, want %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("a secret value in %q", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{`[1]`, `"x"`, `{`} {
		if _, err := Parse(provider.Config{Settings: []byte(s)}); err == nil {
			t.Errorf("%s: no error", s)
		}
	}
	for _, s := range []string{``, `null`, ` `, `{}`} {
		if _, err := Parse(provider.Config{Settings: []byte(s)}); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "abc", 0}, {"api_kye", "api_key", 2}, {"timeuot", "timeout", 2}, {"", "ab", 2}, {"kitten", "sitting", 3}} {
		if got := distance(tt.a, tt.b); got != tt.d {
			t.Errorf("distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.d)
		}
	}
}
