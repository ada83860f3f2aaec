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

// TestREADMEUpgradingParagraphsOnce: no change is described twice in
// README's Upgrading list. A fix that rewrites a paragraph of its
// release, picked where the paragraph it rewrote had been picked too,
// left both, the outdated one first ("HFS+ drop default-ignorable
// characters" beside the paragraph that took HFS+ back out), so an
// operator read two answers to one question.
func TestREADMEUpgradingParagraphsOnce(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, upgrading, ok := strings.Cut(string(b), "\n## Upgrading\n")
	if !ok {
		t.Fatal("README has no Upgrading section")
	}
	upgrading, _, _ = strings.Cut(upgrading, "\n## ")
	// Paragraphs of one change begin alike past their release's words
	// and the refusal they name; two changes part well before this.
	const same = 200
	seen := map[string]int{}
	for i, p := range strings.Split(upgrading, "\n\n") {
		if !strings.HasPrefix(p, "**Since ") || len(p) < same {
			continue
		}
		if j, dup := seen[p[:same]]; dup {
			t.Errorf("Upgrading paragraphs %d and %d begin alike, one change described twice:\n%s", j, i, p[:same])
		}
		seen[p[:same]] = i
	}
}
