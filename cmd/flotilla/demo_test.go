package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// TestDemo: the demo runs a small cluster under load for a few seconds,
// prints its summary, and exits cleanly, removing its directory.
func TestDemo(t *testing.T) {
	cmd := demoCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--partitions", "30", "--producers", "16", "--workload", "2s", "--duration", "4s"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	if !regexp.MustCompile(`errors\s+none`).MatchString(text) {
		t.Fatalf("the demo saw errors:\n%s", text)
	}
	for _, want := range []string{"30 partitions created and led", "SUMMARY", "records/s", "flotilla fetch --endpoints", "stopping"} {
		if !strings.Contains(text, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "records acknowledged       0\n") {
		t.Fatalf("the demo acknowledged nothing:\n%s", text)
	}
}
