package validate

import (
	"testing"
	"time"
)

func TestPartitionNames(t *testing.T) {
	for _, m := range []time.Time{
		time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1999, 12, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2100, 10, 1, 0, 0, 0, 0, time.UTC),
	} {
		name := PartitionName(m)
		got, ok := ParsePartitionName(name)
		if !ok || !got.Equal(m) {
			t.Errorf("ParsePartitionName(%q) = %s, %v; want %s", name, got, ok, m)
		}
	}
	if got := PartitionName(time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)); got != "traces_y2025m03" {
		t.Errorf("PartitionName = %q", got)
	}
	for _, bad := range []string{"traces", "traces_y2025m13", "traces_y2025m00", "traces_y2025m3", "traces_y25m03x", "traces_y2025m03_old", "other_y2025m03"} {
		if _, ok := ParsePartitionName(bad); ok {
			t.Errorf("ParsePartitionName(%q) accepted", bad)
		}
	}
}

func TestRetentionCutoff(t *testing.T) {
	mar := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	kolkata := time.FixedZone("IST", 5*3600+1800)
	for before, want := range map[time.Time]time.Time{
		mar:                       mar,
		mar.Add(time.Nanosecond):  mar,
		mar.Add(-time.Nanosecond): mar.AddDate(0, -1, 0),
		mar.AddDate(0, 0, 30):     mar,
		mar.In(kolkata):           mar, // 05:30 on March 1st there: same instant
		time.Date(2025, 3, 1, 2, 0, 0, 0, kolkata): mar.AddDate(0, -1, 0), // Feb 28th, 20:30 UTC
	} {
		if got := RetentionCutoff(before); !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("RetentionCutoff(%s) = %s, want %s", before, got, want)
		}
	}
	if got := MonthLabel(mar); got != "2025-03" {
		t.Errorf("MonthLabel = %q", got)
	}
}

func TestText(t *testing.T) {
	for _, ok := range []string{"", "plain", "ünïcödé 🙂", "\\x00 is fine spelled out"} {
		if err := Text(ok); err != nil {
			t.Errorf("Text(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"a\x00b", "\xff", "ok\xc3"} {
		if err := Text(bad); err == nil {
			t.Errorf("Text(%q) accepted", bad)
		}
	}
}
