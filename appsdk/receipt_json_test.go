package appsdk_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/appsdk"
)

func TestReceiptJSON(t *testing.T) {
	r := appsdk.Receipt{Status: appsdk.StatusAcked, Delivered: 1, Acked: 1, Latency: 1500 * time.Microsecond,
		Acks: []appsdk.Ack{{Conn: "n1.a", Device: "d", Node: "n1", Result: "ok"}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"latency_ms":1.5`) || !strings.Contains(string(b), `"status":"acked"`) || strings.Contains(string(b), "Latency") {
		t.Fatalf("JSON = %s", b)
	}
	var back appsdk.Receipt
	if err := json.Unmarshal(b, &back); err != nil || back.Latency != r.Latency || back.Status != r.Status || back.Acks[0].Conn != "n1.a" {
		t.Fatalf("round trip = %+v, %v", back, err)
	}

	// Printed receipts carry the latency to the microsecond, no more.
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{2841302417 * time.Nanosecond, `"latency_ms":2841.302`},
		{1234567 * time.Nanosecond, `"latency_ms":1.235`},
		{400 * time.Nanosecond, `"latency_ms":0`},
		{0, `"latency_ms":0`},
		{3 * time.Second, `"latency_ms":3000`},
	} {
		b, err := json.Marshal(appsdk.Receipt{Status: appsdk.StatusAcked, Latency: tc.d})
		if err != nil || !strings.Contains(string(b), tc.want) {
			t.Errorf("Latency %v: JSON %s, want %s (%v)", tc.d, b, tc.want, err)
		}
	}
}
