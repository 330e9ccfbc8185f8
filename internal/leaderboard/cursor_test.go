package leaderboard

import "testing"

func TestLeaderboardCursorRoundTrip(t *testing.T) {
	for _, c := range []cursor{
		{board: "b", period: AllPeriod, key: Key{A: -MaxScore, B: MaxScore, Seq: 1}},
		{board: "weekly.kills-2", period: "20250309T230000Z", key: Key{A: 0, B: -1, Seq: MaxScore}},
	} {
		got, err := decodeCursor(c.encode())
		if err != nil || got != c {
			t.Fatalf("round trip of %+v: %+v, %v", c, got, err)
		}
	}
}

// The decoder takes whatever a client sends: it must reject garbage with
// an error and never panic; what it accepts must re-encode to itself.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(cursor{board: "b", period: AllPeriod, key: Key{A: -5, B: 3, Seq: 9}}.encode())
	f.Add(cursor{board: "weekly", period: "20250309T230000Z", key: Key{A: MaxScore, Seq: 1}}.encode())
	f.Add("")
	f.Add("AQ")
	f.Add("AQAAAAFiA2FsbA")
	f.Add("////////////////////////////")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeCursor(s)
		if err != nil {
			return
		}
		again, err := decodeCursor(c.encode())
		if err != nil || again != c {
			t.Fatalf("accepted %q as %+v, which does not round-trip: %+v %v", s, c, again, err)
		}
	})
}
