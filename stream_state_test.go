package kwik

import "testing"

// The lifecycle states of a stream's halves, without a session: each transition happens once,
// in order, whatever the order of the calls that ask for it.

func TestRecvState(t *testing.T) {
	t.Run("end then see", func(t *testing.T) { // EOF, or a reset the application then reads
		var st recvState
		if st.ended() {
			t.Fatal("a new half has ended")
		}
		if !st.end() || !st.ended() {
			t.Fatal("end of an open half did not end it")
		}
		if st.end() {
			t.Fatal("end ended a half twice (its loan would be given back twice)")
		}
		if !st.see() || st != recvSeen {
			t.Fatal("see of an ended half did not complete it")
		}
		if st.see() || st.end() || !st.ended() {
			t.Fatal("a seen half moved again (the streamsMap would be told twice)")
		}
	})
	t.Run("see alone", func(t *testing.T) { // no path sets it, but a seen half never takes data
		var st recvState
		if !st.see() || !st.ended() || st.end() {
			t.Fatal("a seen half must count as ended, once")
		}
	})
}

func TestSendCompletion(t *testing.T) {
	for _, tc := range []struct {
		name    string
		settled []bool // what each completeSend call finds: nothing owed?
		fires   int    // the call (0-based) that completes the half, -1 none
		final   sendCompletion
	}{
		{"nothing owed", []bool{true}, 0, sendComplete},
		{"owed, then resolved", []bool{false, false, true}, 2, sendComplete},
		{"owed forever", []bool{false, false}, -1, sendSettling},
		{"complete once", []bool{true, true, false}, 0, sendComplete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c sendCompletion
			if c.wanted() {
				t.Fatal("a new half is wanted complete")
			}
			fired := -1
			for i, settled := range tc.settled {
				if c.complete(settled) {
					if fired >= 0 {
						t.Fatalf("completed twice, at calls %d and %d", fired, i)
					}
					fired = i
				}
				if !c.wanted() {
					t.Fatalf("call %d: not wanted after complete", i)
				}
			}
			if fired != tc.fires || c != tc.final {
				t.Fatalf("completed at call %d in state %d, want %d in state %d", fired, c, tc.fires, tc.final)
			}
		})
	}
}

func TestSendState(t *testing.T) {
	t.Run("close then end", func(t *testing.T) { // Close: the fin, then endSend
		var st sendState
		if st.closed() {
			t.Fatal("a new half is closed")
		}
		if !st.close() || !st.closed() || st != sendClosing {
			t.Fatal("close of an open half did not close it")
		}
		if st.close() {
			t.Fatal("Close closed a half twice (two fins)")
		}
		if !st.end() || st != sendEnded || !st.closed() {
			t.Fatal("end of a closing half did not end it")
		}
		if st.end() || st.close() {
			t.Fatal("an ended half moved again (its real stream would be given back twice)")
		}
	})
	t.Run("end without close", func(t *testing.T) { // CancelWrite: the reset, then endSend
		var st sendState
		if !st.end() || !st.closed() {
			t.Fatal("an ended half must take no more Write")
		}
		if st.close() {
			t.Fatal("Close of an ended half must write no fin")
		}
	})
}
