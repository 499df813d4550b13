package simrun

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/simulator"
)

// Commands and reports go through the pipe as they were.
func TestLinesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := newLineWriter(&buf)
	in := command{Op: opSetup, Setup: &setup{Index: 2, First: 10, Count: 5, Kinds: []simulator.Kind{{Name: "tv", Count: 15, Answers: simulator.Answers{Never: 0.5, SlowDelay: time.Second}}}, Rate: 33.5, DropSeqs: []uint64{7}}}
	rep := report{Kind: repTick, Worker: 2, Connected: 5, Nodes: map[string]int{"node-1": 5}, Seen: [][2]uint64{{1<<40 | 3, 2}}, Events: map[int]eventProgress{1: {Affected: 3, Back: 2, LastBack: 99}}}
	if err := w.write(in); err != nil {
		t.Fatal(err)
	}
	if err := w.write(rep); err != nil {
		t.Fatal(err)
	}
	r := newLineReader(&buf)
	var c command
	if err := r.read(&c); err != nil || decodeCommand(&c) != nil {
		t.Fatal(err)
	}
	if c.Setup.Kinds[0].Answers.Never != 0.5 || c.Setup.Kinds[0].Answers.SlowDelay != time.Second || c.Setup.DropSeqs[0] != 7 || c.Setup.Rate != 33.5 {
		t.Fatalf("setup %+v", c.Setup)
	}
	var got report
	if err := r.read(&got); err != nil {
		t.Fatal(err)
	}
	if got.Seen[0][0] != 1<<40|3 || got.Events[1].Back != 2 || got.Nodes["node-1"] != 5 {
		t.Fatalf("report %+v", got)
	}
	if err := r.read(&got); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
}

func TestDecodeCommandRefuses(t *testing.T) {
	for _, line := range []string{`{"op":"setup"}`, `{"op":"explode"}`, `{}`} {
		var c command
		if err := newLineReader(strings.NewReader(line + "\n")).read(&c); err != nil {
			t.Fatal(err)
		}
		if decodeCommand(&c) == nil {
			t.Errorf("%s accepted", line)
		}
	}
	var c command
	if err := newLineReader(strings.NewReader("not json\n")).read(&c); err == nil {
		t.Error("malformed line accepted")
	}
}

func TestHistogramsTravel(t *testing.T) {
	h := newHist()
	for i := range 1000 {
		recordUS(h, time.Duration(i)*time.Millisecond)
	}
	recordUS(h, time.Hour) // clamped, not dropped
	total := newHist()
	if err := mergeHist(total, encodeHist(h)); err != nil {
		t.Fatal(err)
	}
	if total.TotalCount() != 1001 || usToMS(total.ValueAtQuantile(50)) < 499 || usToMS(total.ValueAtQuantile(50)) > 501 {
		t.Fatalf("merged: %d values, p50 %v", total.TotalCount(), total.ValueAtQuantile(50))
	}
	if encodeHist(newHist()) != "" || mergeHist(total, "") != nil {
		t.Fatal("an empty histogram should travel as nothing")
	}
	if mergeHist(total, "garbage") == nil {
		t.Fatal("garbage merged")
	}
}

func TestParsePush(t *testing.T) {
	sent := time.Unix(0, 1700000000123456789)
	p := simulator.Push{MsgID: "1099511627779", Data: payload(1<<40|3, sent, 128)}
	if len(p.Data) != 128 {
		t.Fatalf("payload of %d bytes: %s", len(p.Data), p.Data)
	}
	seq, at, ok := parsePush(p)
	if !ok || seq != 1<<40|3 || at != sent.UnixNano() {
		t.Fatalf("parsePush = %d %d %v", seq, at, ok)
	}
	if _, _, ok := parsePush(simulator.Push{MsgID: "not-ours", Data: p.Data}); ok {
		t.Fatal("a push of another app taken for ours")
	}
	if seq, at, ok := parsePush(simulator.Push{MsgID: "5", Data: []byte(`{}`)}); !ok || seq != 5 || at != 0 {
		t.Fatal("a push without its time")
	}
}

func FuzzParsePush(f *testing.F) {
	f.Add("12", []byte(`{"seq":12,"t":1700000000000000000,"pad":"x"}`))
	f.Add("", []byte(`"t":`))
	f.Add("99999999999999999999999", []byte(`"t":99999999999999999999999999`))
	f.Fuzz(func(t *testing.T, id string, data []byte) {
		_, _, _ = parsePush(simulator.Push{MsgID: id, Data: data})
	})
}

func FuzzCommandLine(f *testing.F) {
	f.Add([]byte(`{"op":"run","t0":1}`))
	f.Add([]byte(`{"op":"setup","setup":{"index":1,"kinds":[{"Name":"x","Count":1}]}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var c command
		if err := newLineReader(bytes.NewReader(append(line, '\n'))).read(&c); err == nil {
			_ = decodeCommand(&c)
		}
	})
}
