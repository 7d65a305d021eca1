package config

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// usdPattern is a non-negative decimal with at most 6 decimals.
var usdPattern = regexp.MustCompile(`^([0-9]+)(?:\.([0-9]{1,6}))?$`)

// ParseUSD parses a price as the pricing block writes it: a non-negative
// decimal number of US dollars with at most 6 decimals ("2.50", "0.075",
// "10"), into micro-dollars, exactly. Signs, exponents, separators and white
// space are refused, and so are amounts beyond what an int64 of
// micro-dollars holds.
func ParseUSD(s string) (int64, error) {
	m := usdPattern.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf(`want a non-negative decimal number of dollars with at most 6 decimals, such as "2.50"; got %q`, s)
	}
	whole, err := strconv.ParseInt(m[1], 10, 64)
	frac, _ := strconv.ParseInt(m[2]+strings.Repeat("0", 6-len(m[2])), 10, 64)
	if err != nil || whole > (math.MaxInt64-frac)/1_000_000 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return whole*1_000_000 + frac, nil
}

// priceText turns a price from the file, a string or a number, into its
// decimal string. Numbers are written in their shortest decimal form, with
// no exponent and no float noise (2.5 is "2.5", 0.1 is "0.1").
func priceText(v any) (string, error) {
	switch n := v.(type) {
	case string:
		return n, nil
	case int:
		return strconv.Itoa(n), nil
	case int64:
		return strconv.FormatInt(n, 10), nil
	case float64:
		return strconv.FormatFloat(n, 'f', -1, 64), nil
	}
	return "", fmt.Errorf(`expected a price such as "2.50" (a string or a number), got %s`, describe(v))
}

// parseEffective reads a pricing block's effective date.
func parseEffective(v any) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, fmt.Errorf(`expected a date such as "2024-10-01", got %s`, describe(v))
	}
	t, err := time.Parse(EffectiveDateLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf(`expected a date such as "2024-10-01", got %q`, s)
	}
	return t, nil
}

// defaultEffective is when a price without an effective date applies from.
var defaultEffective = time.Unix(0, 0).UTC()
