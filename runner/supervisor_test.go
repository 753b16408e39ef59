package runner

import "testing"

// TestFirstSharesSpreadRotations: zygotes serving in turn make even shares
// of sandboxes, so their first ones are cut by their place: the rotations
// of two fall half a share apart, not together.
func TestFirstSharesSpreadRotations(t *testing.T) {
	for _, c := range []struct{ share, index, count, want int }{
		{200, 0, 1, 200}, {200, 0, 2, 100}, {200, 1, 2, 200}, {200, 0, 3, 66}, {200, 2, 3, 200}, {1, 0, 4, 1},
	} {
		if got := firstShare(c.share, c.index, c.count); got != c.want {
			t.Errorf("firstShare(%d, %d, %d) = %d, want %d", c.share, c.index, c.count, got, c.want)
		}
	}
}
