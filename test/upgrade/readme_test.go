package upgrade

import (
	"os"
	"strings"
	"testing"
)

// TestREADMENamesPreviousRelease: README's Upgrading names as the
// previous release the one TestUpgradeFromPreviousRelease upgrades from,
// in both places it names it, so that its promise that what that release
// stored works as before is the one the test checks.
func TestREADMENamesPreviousRelease(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, want := range []string{
		"What the previous release, " + previousRelease + ", stored works as before",
		"from " + previousRelease + ", those of this release only",
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README's Upgrading lacks %q: the previous release TestUpgradeFromPreviousRelease runs from is %s", want, previousRelease)
		}
	}
}
